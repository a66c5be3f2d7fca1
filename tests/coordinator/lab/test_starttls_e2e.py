"""`tlsfleet probe --starttls smtp` and `--via-proxy` end to end: the real CLI, real agent processes over
gRPC, a real SMTP server with STARTTLS, and the lab's intercepting egress proxy as the HTTPS_PROXY of one
agent's host."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.intercepting_proxy import InterceptingProxy, ProxyAuthority
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.starttls_servers import ScriptedServer, SmtpServer, Step
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e

NAME = "mail.e2e.test"


@pytest.fixture
def roots(pki: LabPKI, tmp_path: Path) -> Path:
    return write_pem(tmp_path / "roots.pem", pki.root.cert_pem)


def _probe(tmp_path: Path, agents: list[AgentProcess], *args: str) -> tuple[int, dict]:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text("".join(a.inventory_entry() for a in agents))
    done = subprocess.run(
        [*tlsfleet_command(), "probe", *args, "--inventory", str(inventory), "--no-local", "--json"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def agent(tmp_path: Path, roots: Path) -> Iterator[AgentProcess]:
    started = start_agent("mail-1", tmp_path / "agent", env=trust_env(tmp_path, roots))
    try:
        yield started
    finally:
        started.stop()


def _addresses(report: dict) -> list[dict]:
    return [a for outcome in report["vantages"] for a in (outcome.get("result") or {}).get("addresses", [])]


def test_probe_starttls_smtp_through_a_real_agent(pki: LabPKI, tmp_path: Path, agent: AgentProcess) -> None:
    leaf = pki.issue_leaf(NAME)
    with SmtpServer(ServedIdentity.of(leaf, pki.intermediate)) as smtp:
        target = f"{NAME}:{smtp.port}"
        code, report = _probe(tmp_path, [agent], target, "--address", "127.0.0.1", "--starttls", "smtp")
        plain_code, plain = _probe(tmp_path, [agent], target, "--address", "127.0.0.1")
    assert code == 0, report["findings"]
    (address,) = _addresses(report)
    assert address["connect_failure"] == "none"
    assert address["handshake"]["failure"] == "none" and address["native"]["verdict"] == "ok"
    assert len(address["chain"]) == 2
    # Without --starttls (a port with nothing to infer from), TLS at once meets an SMTP banner.
    (refused,) = _addresses(plain)
    assert plain_code == 1 and refused["handshake"]["failure"] == "not_tls"


def test_probe_starttls_to_a_server_without_it_is_named(tmp_path: Path, agent: AgentProcess) -> None:
    with SmtpServer(None) as smtp:
        code, report = _probe(tmp_path, [agent], f"{NAME}:{smtp.port}", "--address", "127.0.0.1", "--starttls", "smtp")
    (address,) = _addresses(report)
    assert code == 1
    assert address["connect_failure"] == "starttls_unsupported"
    assert address["connect_error"].startswith("the server does not offer STARTTLS")
    # Reached, but no TLS inside the protocol: said so, not "check the firewall".
    (finding,) = [f for f in report["findings"] if f["cause"] == "unreachable"]
    assert "TLS does not start inside its protocol (starttls_unsupported)" in finding["summary"]
    assert "--starttls" in finding["fix"] and "firewall" not in finding["fix"]


def test_probe_starttls_xmpp_pinned_names_the_domain_not_the_address(
    pki: LabPKI, tmp_path: Path, agent: AgentProcess
) -> None:
    """An XMPP server answers a stream `to` it does not serve with host-unknown: `--address` picks where to
    connect, and the stream still names the target's domain."""
    leaf = pki.issue_leaf(NAME)
    streams: list[bytes] = []

    def answer(request: bytes) -> Step | None:
        header = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='1' version='1.0'>"
        if request.startswith(b"<stream:stream"):
            streams.append(request)
            if f"to='{NAME}'".encode() not in request:
                return Step(header + b"<stream:error><host-unknown/></stream:error></stream:stream>", close=True)
            features = b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
            return Step(header + features)
        if request.startswith(b"<starttls"):
            return Step(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", tls=True)
        return None

    with ScriptedServer(b"", answer, identity=ServedIdentity.of(leaf, pki.intermediate)) as xmpp:
        code, report = _probe(tmp_path, [agent], f"{NAME}:{xmpp.port}", "--address", "127.0.0.1", "--starttls", "xmpp")
    (address,) = _addresses(report)
    assert address["connect_failure"] == "none", address["connect_error"]
    assert address["native"]["verdict"] == "ok" and code == 0, report["findings"]
    assert streams and all(f"to='{NAME}'".encode() in stream for stream in streams)


def test_via_proxy_shows_the_egress_proxy_from_the_hosts_that_use_it(pki: LabPKI, tmp_path: Path, roots: Path) -> None:
    authority = ProxyAuthority.create("Corp Egress")
    both = write_pem(tmp_path / "both.pem", pki.root.cert_pem + authority.root_pem())
    leaf = pki.issue_leaf(NAME)
    with (
        TlsServer(ServedIdentity.of(leaf, pki.intermediate)) as server,
        InterceptingProxy(authority, connect=True) as egress,
    ):
        direct = start_agent("direct-1", tmp_path / "direct", env=trust_env(tmp_path / "d", roots))
        proxied_env = trust_env(tmp_path / "p", both)
        proxied_env.update(HTTPS_PROXY=f"http://probe:secret@{egress.host}:{egress.port}", NO_PROXY="localhost")
        proxied = start_agent("egress-1", tmp_path / "egress", env=proxied_env)
        try:
            code, report = _probe(
                tmp_path, [direct, proxied], f"{NAME}:{server.port}", "--address", "127.0.0.1", "--via-proxy"
            )
        finally:
            direct.stop()
            proxied.stop()
        assert list(egress.connects) == [f"127.0.0.1:{server.port}"]
    rows = {o["agent"]: o["result"]["addresses"][0] for o in report["vantages"]}
    assert rows["direct-1"]["address"] == "127.0.0.1"
    assert rows["egress-1"]["address"] == egress.host  # what that agent connected to: its proxy
    assert rows["direct-1"]["chain"][0] != rows["egress-1"]["chain"][0]
    causes = [f["cause"] for f in report["findings"]]
    assert "tls_interception" in causes, report["findings"]
    assert code == 1


def test_the_commands_to_reproduce_speak_starttls_as_the_probe_did(pki: LabPKI, tmp_path: Path) -> None:
    """A finding's `openssl s_client` commands, pasted on the host, take the same road as the agent: without
    `-starttls smtp` they would meet the SMTP banner and save no chain."""
    elsewhere = write_pem(tmp_path / "elsewhere.pem", LabPKI("Elsewhere").root.cert_pem)
    agent = start_agent("mail-2", tmp_path / "agent-2", env=trust_env(tmp_path, elsewhere))
    try:
        with SmtpServer(ServedIdentity.of(pki.issue_leaf(NAME), pki.intermediate)) as smtp:
            code, report = _probe(
                tmp_path, [agent], f"{NAME}:{smtp.port}", "--address", "127.0.0.1", "--starttls", "smtp"
            )
            commands = [c for f in report["findings"] for c in f["reproduce"] if "openssl s_client" in c]
            saving = next(c for c in commands if "> chain.pem" in c)
            done = subprocess.run(["bash", "-c", saving], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    finally:
        agent.stop()
    assert code == 1 and commands, report["findings"]
    assert all(f"-connect 127.0.0.1:{smtp.port} -starttls smtp" in c for c in commands), commands
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "chain.pem").read_text().count("BEGIN CERTIFICATE") == 2, "the served chain, saved"
