"""The whole fleet, end to end: real TLS servers, real agent processes, real gRPC, the real CLI.

Two agents differ in one way only: the trust store their OpenSSL uses (SSL_CERT_FILE with and without
the private root). The CLI probes through both and we read its JSON field by field.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet import __version__
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e


@dataclass
class Fleet:
    workdir: Path
    pki: LabPKI
    leaf_der: bytes
    intermediate_der: bytes
    server: TlsServer
    agents: dict[str, AgentProcess]
    inventory: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    pki = LabPKI("Acme Internal")
    leaf = pki.issue_leaf("localhost", "127.0.0.1")
    server = TlsServer(ServedIdentity.of(leaf, pki.intermediate), host="127.0.0.1").start()
    private_root = write_pem(workdir / "acme-root.pem", pki.root_pem())
    public_only = write_pem(workdir / "other-root.pem", LabPKI("Some Public").root_pem())
    agents: dict[str, AgentProcess] = {}
    try:
        agents["trusting"] = start_agent(
            "trusting", workdir, env=trust_env(workdir, private_root), labels=[("env", "lab"), ("store", "private")]
        )
        agents["plain"] = start_agent(
            "plain", workdir, env=trust_env(workdir, public_only), labels=[("env", "lab"), ("store", "public")]
        )
        inventory = workdir / "inventory.toml"
        inventory.write_text("".join(a.inventory_entry() for a in agents.values()))
        yield Fleet(workdir, pki, leaf.der, pki.intermediate.der, server, agents, inventory)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tlsfleet_command(), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def probe_json(fleet: Fleet, *extra: str) -> tuple[int, dict]:
    target = f"localhost:{fleet.server.port}"
    done = run_cli("probe", target, "--inventory", str(fleet.inventory), "--no-local", "--json", *extra)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_agent(report: dict) -> dict[str, dict]:
    return {v["agent"]: v for v in report["vantages"]}


def test_probe_compares_two_trust_stores_field_by_field(fleet: Fleet) -> None:
    code, report = probe_json(fleet)
    assert code == 1, "one vantage fails verification, so the exit code says a problem was seen"
    assert report["exit_code"] == 1
    assert report["target"] == f"localhost:{fleet.server.port}"
    vantages = by_agent(report)
    assert set(vantages) == {"trusting", "plain"}
    expected_chain = [fingerprint(fleet.leaf_der), fingerprint(fleet.intermediate_der)]
    for name, vantage in vantages.items():
        assert vantage["state"] == "ok", vantage["error"]
        assert vantage["agent_version"] == __version__
        assert vantage["labels"]["env"] == "lab"
        assert abs(vantage["clock"]["offset_ms"]) < 1000, f"{name}: same host, so the clocks agree"
        result = vantage["result"]
        assert result["resolution"]["addresses"] == ["127.0.0.1"]
        assert result["resolution"]["failure"] == "none"
        assert result["expected_name"] == "localhost"
        assert result["sni"] == "localhost"
        [address] = result["addresses"]
        assert address["address"] == "127.0.0.1"
        assert address["connect_failure"] == "none"
        assert address["handshake"]["tls_version"] == "TLSv1.3"
        assert address["handshake"]["cipher"]
        # The served chain arrives as DER even where verification failed.
        assert [c["sha256"] for c in address["certificates"]] == expected_chain
        assert address["certificates"][0]["san"] == ["localhost", "127.0.0.1"]
        assert "Acme Internal Intermediate CA" in address["certificates"][0]["issuer"]

    trusting = vantages["trusting"]["result"]["addresses"][0]
    assert trusting["native"]["verdict"] == "ok"
    assert trusting["native"]["verify_code"] == 0
    assert trusting["handshake"]["failure"] == "none"

    plain = vantages["plain"]["result"]["addresses"][0]
    assert plain["native"]["verdict"] == "unknown_issuer"
    assert plain["native"]["verify_code"] == 20
    assert plain["handshake"]["failure"] == "cert_verify"


def test_trust_store_verdicts_follow_each_hosts_store(fleet: Fleet) -> None:
    _code, report = probe_json(fleet)
    vantages = by_agent(report)
    for name, expected in (("trusting", "ok"), ("plain", "unknown_issuer")):
        result = vantages[name]["result"]
        stores = {s["name"]: s for s in result["trust_stores"]}
        assert "ssl_cert_file" in stores, sorted(stores)
        assert stores["ssl_cert_file"]["root_count"] == 1
        verdicts = {s["store"]: s for s in result["addresses"][0]["stores"]}
        judged = verdicts["ssl_cert_file"]
        assert judged["at_agent_time"] == expected
        assert judged["at_reference_time"] == expected
        if expected == "ok":
            root_fp = fingerprint(fleet.pki.root.der)
            assert judged["verified_path"] == [
                fingerprint(fleet.leaf_der),
                fingerprint(fleet.intermediate_der),
                root_fp,
            ]
    # Same content, same identity: both agents name their store by the fingerprint of its roots.
    fps = {
        name: {s["name"]: s["fingerprint"] for s in v["result"]["trust_stores"]}["ssl_cert_file"]
        for name, v in vantages.items()
    }
    assert fps["trusting"] != fps["plain"]


def test_probe_table_highlights_the_differing_verdict(fleet: Fleet) -> None:
    done = run_cli(
        "probe",
        f"localhost:{fleet.server.port}",
        "--inventory",
        str(fleet.inventory),
        "--no-local",
        env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"},
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    plain_line = next(line for line in lines if line.lstrip("│ ").startswith("plain"))
    trusting_line = next(line for line in lines if line.lstrip("│ ").startswith("trusting"))
    assert "unknown_issuer (20) *" in plain_line
    # Two vantages, two verdicts, no majority: both cells are marked as differing.
    assert "ok *" in trusting_line
    assert "2 of 2 vantages answered" in done.stdout


def test_agents_lists_state_version_labels_and_stores(fleet: Fleet) -> None:
    done = run_cli("agents", "--inventory", str(fleet.inventory), "--no-local", "--json")
    assert done.returncode == 0, done.stderr
    agents = {a["agent"]: a for a in json.loads(done.stdout)["agents"]}
    assert set(agents) == {"trusting", "plain"}
    for name, agent in agents.items():
        assert agent["state"] == "ok"
        description = agent["description"]
        assert description["identity"]["name"] == name
        assert description["identity"]["version"] == __version__
        assert dict(map(tuple, description["identity"]["labels"]))["env"] == "lab"
        assert description["facts"]["openssl_version"].startswith("OpenSSL")
        assert any(s["name"] == "ssl_cert_file" for s in description["trust_stores"])
        assert abs(agent["clock"]["offset_ms"]) < 1000


def test_label_selector_picks_one_agent(fleet: Fleet) -> None:
    code, report = probe_json(fleet, "--agents", "store=private", "--fail-on", "critical")
    # Its OpenSSL store has the private root; certifi on the same host does not: a warning, not critical.
    assert code == 0, report["findings"]
    assert {f["cause"] for f in report["findings"]} == {"runtime_store_differs"}
    assert [v["agent"] for v in report["vantages"]] == ["trusting"]


def test_stalled_and_vanished_agents_end_in_explicit_states(fleet: Fleet, tmp_path: Path) -> None:
    stalled = start_agent("stalled", tmp_path, env=trust_env(tmp_path, fleet.workdir / "acme-root.pem"))
    gone = start_agent("gone", tmp_path)
    gone.stop()
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(fleet.inventory.read_text() + stalled.inventory_entry() + gone.inventory_entry())
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        done = run_cli(
            "probe",
            f"localhost:{fleet.server.port}",
            "--inventory",
            str(inventory),
            "--no-local",
            "--json",
            "--timeout",
            "2",
        )
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
        stalled.stop()
    report = json.loads(done.stdout)
    vantages = by_agent(report)
    assert vantages["stalled"]["state"] == "timeout"
    assert vantages["gone"]["state"] == "offline"
    assert vantages["gone"]["error"]
    # The others still arrive.
    assert vantages["trusting"]["state"] == "ok"
    assert vantages["trusting"]["result"]["addresses"][0]["native"]["verdict"] == "ok"
    assert vantages["plain"]["state"] == "ok"
