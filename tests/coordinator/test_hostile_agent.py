"""A broken or hostile agent against the real CLI: fake agents (real gRPC servers on 127.0.0.1) answer with
crafted replies; each bad reply is that agent's error, named with what was wrong, the other agents' results
still count, and no string an agent sends drives the terminal or the reports."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tlsfleet.coordinator.lab.agent_process import tlsfleet_command
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc, probe_pb2

pytestmark = pytest.mark.e2e

ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e"
OK = probe_pb2.Verdict.Value("VERDICT_OK")
Mutation = Callable[[probe_pb2.ProbeResult], None]


def _chain() -> list[bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hostile Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "target.test")]))
        .issuer_name(ca_name)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("target.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return [c.public_bytes(serialization.Encoding.DER) for c in (leaf, ca)]


CHAIN = _chain()


def _reply(name: str, request: probe_pb2.ProbeRequest) -> probe_pb2.ProbeResult:
    """What an honest agent answers: one address, the chain, verified natively and by its one store."""
    r = probe_pb2.ProbeResult(
        agent=probe_pb2.AgentRef(name=name, version="1.0"),
        target=request.target,
        expected_name=request.target.host,
        request_id=request.request_id,
        reference_time_ns=request.options.reference_time_ns,
        agent_received_ns=time.time_ns(),
        agent_replied_ns=time.time_ns(),
    )
    r.resolution.addresses.append("127.0.0.1")
    a = r.addresses.add(address="127.0.0.1", connect_ms=1.0)
    a.handshake.tls_version = "TLSv1.3"
    a.handshake.duration_ms = 2.0
    a.chain.extend(CHAIN)
    a.native.verdict = OK
    a.native.hostname_checked = True
    r.trust_stores.add(name="system", kind="file", path="/etc/ssl/certs/ca-certificates.crt", root_count=1)
    a.stores.add(store="system", at_agent_time=OK, at_reference_time=OK)
    return r


class _FakeAgent(agent_pb2_grpc.AgentServicer):
    def __init__(self, name: str, mutate: Mutation | None, describe: Callable[[agent_pb2.AgentDescription], None]):
        self.name, self.mutate, self.describe = name, mutate, describe

    def Probe(self, request: probe_pb2.ProbeRequest, context: grpc.ServicerContext) -> probe_pb2.ProbeResult:
        reply = _reply(self.name, request)
        if self.mutate is not None:
            self.mutate(reply)
        return reply

    def Describe(self, request: agent_pb2.DescribeRequest, context: grpc.ServicerContext) -> agent_pb2.AgentDescription:
        d = agent_pb2.AgentDescription(agent=probe_pb2.AgentRef(name=self.name, version="1.0"))
        d.agent_time_ns = time.time_ns()
        self.describe(d)
        return d


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """fleet(mutate, describe=...) starts agents "good" (honest) and "evil" (its reply passed through mutate)
    and returns their inventory."""
    servers: list[grpc.Server] = []

    def start(mutate: Mutation | None, describe: Callable[[agent_pb2.AgentDescription], None] = lambda d: None):
        entries = []
        for name, how in (("good", None), ("evil", mutate)):
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.max_send_message_length", 64 << 20)]
            )
            fake = _FakeAgent(name, how, describe if name == "evil" else lambda d: None)
            agent_pb2_grpc.add_AgentServicer_to_server(fake, server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            servers.append(server)
            entries.append(f'[[agent]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
        inventory = tmp_path / "inventory.toml"
        inventory.write_text("\n".join(entries))
        return inventory

    yield start
    for server in servers:
        server.stop(grace=None)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "250"}
    env.pop("TLSFLEET_INVENTORY", None)
    return subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, env=env)


def _probe_json(tmp_path: Path, inventory: Path, *args: str) -> dict:
    done = _cli(tmp_path, "probe", "target.test:443", "--no-local", "-i", str(inventory), "--json", *args)
    assert "Traceback" not in done.stderr, done.stderr
    # Strict JSON: NaN and Infinity are not numbers any JSON reader takes.
    return json.loads(done.stdout, parse_constant=lambda c: pytest.fail(f"{c} in --json"))


def _set_address(field: str, value: object) -> Mutation:
    def mutate(r: probe_pb2.ProbeResult) -> None:
        setattr(r.addresses[0], field, value)

    return mutate


def _more_addresses(r: probe_pb2.ProbeResult) -> None:
    for i in range(10_000):
        r.resolution.addresses.append(f"10.0.{i // 256}.{i % 256}")
        r.addresses.add().CopyFrom(r.addresses[0])


def _duplicate_store(r: probe_pb2.ProbeResult) -> None:
    r.addresses[0].stores.add(store="system", at_agent_time=probe_pb2.Verdict.Value("VERDICT_EXPIRED"))


def _many_views(r: probe_pb2.ProbeResult) -> None:
    for _ in range(10_000):
        r.addresses[0].views.add(client=probe_pb2.Client.Value("CLIENT_PYTHON"), verdict=OK)


def _many_same_as(r: probe_pb2.ProbeResult) -> None:
    r.addresses[0].stores[0].same_as.extend(f"store-{i}" for i in range(100_000))


def _many_stores(r: probe_pb2.ProbeResult) -> None:
    for i in range(10_000):
        r.addresses[0].stores.add(store=f"store-{i}", at_agent_time=OK, at_reference_time=OK)


def _chain_of_megabytes(r: probe_pb2.ProbeResult) -> None:
    r.addresses[0].chain.extend([CHAIN[1]] * (2 * 1024 * 1024 // len(CHAIN[1])))


def _path_of_garbage(r: probe_pb2.ProbeResult) -> None:
    r.addresses[0].stores[0].verified_path.extend(["ff" * 32, "not-a-fingerprint"])


def _nan_duration(r: probe_pb2.ProbeResult) -> None:
    r.addresses[0].handshake.duration_ms = float("nan")


def _negative_duration(r: probe_pb2.ProbeResult) -> None:
    r.resolution.duration_ms = -1e308


def _megabyte_cipher(r: probe_pb2.ProbeResult) -> None:
    r.addresses[0].handshake.cipher = "A" * (1 << 20)


def _other_target(r: probe_pb2.ProbeResult) -> None:
    r.target.host = "elsewhere.test"


def _other_request(r: probe_pb2.ProbeResult) -> None:
    r.request_id = "not-the-one-asked"


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (_other_target, "it answers for elsewhere.test:443, but target.test:443 was asked"),
        (_other_request, "it answers request 'not-the-one-asked', but request"),
        (_more_addresses, "resolution.addresses has 10001 entries; at most 64 are accepted"),
        (_duplicate_store, "addresses[0].stores[1] judges store 'system' a second time"),
        (_many_views, "addresses[0].views has 10000 entries; at most 16 are accepted"),
        (_many_same_as, "addresses[0].stores[0].same_as has 100000 entries; at most 256 are accepted"),
        (_many_stores, "addresses[0].stores has 10001 entries; at most 256 are accepted"),
        (_chain_of_megabytes, "addresses[0].chain is "),
        (_path_of_garbage, "verified_path holds 'not-a-fingerprint', not a SHA-256 fingerprint"),
        (_nan_duration, "addresses[0].handshake.duration_ms is nan; accepted: a finite number"),
        (_negative_duration, "resolution.duration_ms is -1e+308; accepted: 0 to 86400000 ms"),
        (_megabyte_cipher, "addresses[0].handshake.cipher is 1048576 characters long; at most 16384 are accepted"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[:40],
)
def test_a_bad_reply_is_that_agents_error_and_the_others_still_count(fleet, tmp_path: Path, mutate, said) -> None:
    report = _probe_json(tmp_path, fleet(mutate))
    vantages = {v["agent"]: v for v in report["vantages"]}
    assert vantages["good"]["state"] == "ok"
    assert vantages["good"]["result"]["addresses"][0]["native"]["verdict"] == "ok"
    evil = vantages["evil"]
    assert evil["state"] == "error"
    assert evil["result"] is None
    assert evil["error"].startswith("agent evil's reply is refused: "), evil["error"]
    assert said in evil["error"], evil["error"]
    assert len(evil["error"]) < 400


def test_more_addresses_than_asked_are_refused(fleet, tmp_path: Path) -> None:
    def three(r: probe_pb2.ProbeResult) -> None:
        for i in range(2):
            r.resolution.addresses.append(f"10.0.0.{i}")
            r.addresses.add().CopyFrom(r.addresses[0])

    report = _probe_json(tmp_path, fleet(three), "--max-addresses", "2")
    evil = {v["agent"]: v for v in report["vantages"]}["evil"]
    assert "addresses has 3 entries, but at most 2 were asked for" in evil["error"]


def _escaping(r: probe_pb2.ProbeResult) -> None:
    a = r.addresses[0]
    a.address = f"127.0.0.1{ESCAPES}"
    a.handshake.tls_version = ESCAPES
    a.native.verdict = probe_pb2.Verdict.Value("VERDICT_UNKNOWN_ISSUER")
    a.native.verify_code = 20
    a.stores[0].store = ESCAPES
    a.stores[0].at_agent_time = a.stores[0].at_reference_time = probe_pb2.Verdict.Value("VERDICT_UNKNOWN_ISSUER")
    a.stores[0].detail = ESCAPES
    r.trust_stores[0].name = ESCAPES


def _escaping_description(d: agent_pb2.AgentDescription) -> None:
    d.agent.version = ESCAPES
    d.facts.hostname = ESCAPES
    d.probe_policy.append("[bold red]allow[/] " + ESCAPES)
    d.trust_stores.add(name=ESCAPES, error=ESCAPES)


def _no_controls(text: str) -> None:
    for c in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert c not in text, (c, text[:2000])


def test_an_agents_escape_sequences_are_shown_escaped_in_the_table_and_the_recording(fleet, tmp_path: Path) -> None:
    inventory = fleet(_escaping, _escaping_description)
    saved = tmp_path / "case.json"
    done = _cli(tmp_path, "probe", "target.test:443", "--no-local", "-i", str(inventory), "--save", str(saved))
    assert done.returncode == 1, done.stderr
    _no_controls(done.stdout + done.stderr)
    assert "\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202e" in done.stdout
    # The recording keeps what the agent sent; what reads it shows it escaped.
    assert json.loads(saved.read_text())["outcomes"][1]["result"]["addresses"][0]["handshake"]["tlsVersion"] == ESCAPES
    again = _cli(tmp_path, "diagnose", str(saved))
    assert again.returncode == 1, again.stderr
    _no_controls(again.stdout + again.stderr)
    assert "\\x1b[2J" in again.stdout
    listed = _cli(tmp_path, "agents", "--no-local", "-i", str(inventory))
    assert listed.returncode == 0, listed.stderr
    _no_controls(listed.stdout + listed.stderr)
    assert "\\x1b[2J" in listed.stdout
    assert "[bold red]allow[/]" in listed.stdout  # rich markup from an agent is shown as sent, not applied
    chains = _cli(tmp_path, "chain", "target.test:443", "--no-local", "-i", str(inventory))
    assert chains.returncode == 0, chains.stderr
    _no_controls(chains.stdout + chains.stderr)
    assert "evil@127.0.0.1\\x1b[2J" in chains.stdout


def test_escape_sequences_in_a_report_run_and_report_show(fleet, tmp_path: Path) -> None:
    probes: list[None] = []

    def honest_then_escaping(r: probe_pb2.ProbeResult) -> None:
        probes.append(None)
        if len(probes) > 1:  # the second run differs from the first: its changes are told too
            _escaping(r)

    inventory = fleet(honest_then_escaping, _escaping_description)
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'[coordinator]\ninventory = "{inventory}"\nreports_dir = "reports"\n\n[storage]\npath = "history.sqlite"\n\n'
        '[[report]]\nname = "edge"\ntargets = ["target.test:443"]\ninterval = "1h"\n'
        'formats = ["markdown", "html", "json"]\n'
    )
    first = _cli(tmp_path, "report", "run", "edge", "--config", str(config))
    assert first.returncode == 0, first.stderr
    done = _cli(tmp_path, "report", "run", "edge", "--config", str(config))
    assert done.returncode == 1, done.stderr
    assert "changed: " in done.stdout
    _no_controls(done.stdout + done.stderr)
    for suffix in ("md", "html", "json"):
        written = (tmp_path / "reports" / "edge" / f"latest.{suffix}").read_text()
        _no_controls(written)
        assert ("x1b" in written and "x9b31m" in written) or "\\u009b31m" in written
    for form in ("markdown", "json"):
        shown = _cli(tmp_path, "report", "show", "latest", "--config", str(config), "--format", form)
        assert shown.returncode == 0, shown.stderr
        _no_controls(shown.stdout)
        assert "x1b" in shown.stdout or "\\u001b" in shown.stdout


def test_an_oversized_description_is_that_agents_error(fleet, tmp_path: Path) -> None:
    def huge(d: agent_pb2.AgentDescription) -> None:
        d.facts.hostname = "h" * (1 << 20)

    done = _cli(tmp_path, "agents", "--no-local", "-i", str(fleet(None, huge)), "--json")
    assert "Traceback" not in done.stderr
    agents = {a["agent"]: a for a in json.loads(done.stdout)["agents"]}
    assert agents["good"]["state"] == "ok"
    assert agents["evil"]["state"] == "error"
    assert "facts.hostname is 1048576 characters long; at most 16384 are accepted" in agents["evil"]["error"]


def _unknown_numbers(r: probe_pb2.ProbeResult) -> None:
    a = r.addresses[0]
    a.native.verdict = 9999
    a.native.verify_code = 2**31 - 1
    a.handshake.failure = 12345
    a.stores[0].at_agent_time = -5
    a.views.add(client=777, verdict=888, failure=999)  # a client this coordinator does not know
    r.resolution.truncated_from = 2**32 - 1


def test_enum_numbers_unknown_here_are_read_as_other_not_refused(fleet, tmp_path: Path) -> None:
    """An agent newer than the coordinator may send verdicts, failures and clients it does not know yet."""
    inventory = fleet(_unknown_numbers)
    report = _probe_json(tmp_path, inventory)
    evil = {v["agent"]: v for v in report["vantages"]}["evil"]
    assert evil["state"] == "ok", evil["error"]
    address = evil["result"]["addresses"][0]
    assert (address["native"]["verdict"], address["handshake"]["failure"]) == ("other", "internal")
    assert address["views"] == []
    table = _cli(tmp_path, "probe", "target.test:443", "--no-local", "-i", str(inventory))
    assert table.returncode == 1, table.stderr
    assert "internal" in table.stdout and "Traceback" not in table.stderr


def _distinct_chain(count: int) -> list[bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    chain = []
    for i in range(count):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Intermediate {i}")])
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Intermediate {i + 1}")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(i + 1)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        chain.append(certificate.public_bytes(serialization.Encoding.DER))
    return chain


def test_a_chain_of_thousands_of_certificates_is_told_in_bounded_lines(fleet, tmp_path: Path) -> None:
    """As many certificates as fit in the 1 MiB a chain may have: diagnosed, each line of a finding cut for the
    terminal, --json keeping everything."""
    served = _distinct_chain(2500)

    def long_chain(r: probe_pb2.ProbeResult) -> None:
        del r.addresses[0].chain[1:]
        r.addresses[0].chain.extend(served)

    inventory = fleet(long_chain)
    table = _cli(tmp_path, "probe", "target.test:443", "--no-local", "-i", str(inventory), "--notes")
    assert table.returncode in (0, 1), table.stderr
    assert "more characters in --json" in table.stdout
    assert len(table.stdout) < 100_000, len(table.stdout)
    report = _probe_json(tmp_path, inventory)
    evil = {v["agent"]: v for v in report["vantages"]}["evil"]
    assert len(evil["result"]["addresses"][0]["chain"]) == 2501
    assert any("Intermediate 2499" in f["summary"] for f in report["findings"])


def _address_of_words(r: probe_pb2.ProbeResult) -> None:
    r.resolution.addresses[0] = r.addresses[0].address = "proxy.internal"  # a name where an address goes


def _garbage_leaves(r: probe_pb2.ProbeResult) -> None:
    second = r.addresses.add()
    second.CopyFrom(r.addresses[0])
    second.address = "127.0.0.2"
    r.resolution.addresses.append("127.0.0.2")
    for index, a in enumerate(r.addresses):
        a.chain[:] = [b"\x30\x03no certificate " + bytes([index])]


@pytest.mark.parametrize("mutate", [_address_of_words, _garbage_leaves], ids=["address-of-words", "garbage-leaves"])
def test_replies_the_diagnosis_once_tripped_on_are_diagnosed(fleet, tmp_path: Path, mutate) -> None:
    """Each of these once ended `tlsfleet probe` in an internal error (exit 70): a host name where the rules
    expected an address (as through a proxy), addresses serving bytes that are no certificate."""
    inventory = fleet(mutate)
    for args in ((), ("--json",)):
        done = _cli(tmp_path, "probe", "target.test:443", "--no-local", "-i", str(inventory), *args)
        assert done.returncode in (0, 1), (done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    report = _probe_json(tmp_path, inventory)
    assert {v["agent"]: v["state"] for v in report["vantages"]} == {"good": "ok", "evil": "ok"}
