"""An agent whose clock is days behind still serves mutual TLS with a fleet PKI issued now: the fleet's
certificates are backdated, and a certificate its own clock puts outside its validity is a warning in its
log, not a refusal to start."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command
from tlsfleet.coordinator.lab.faketime import available, faketime_env
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e

BEHIND = "-3d"
THREE_DAYS_MS = 3 * 86400 * 1000


@dataclass
class SkewedFleet:
    pki_dir: Path
    inventory: Path
    server: TlsServer
    agents: dict[str, AgentProcess]
    old_start: datetime  # when the certificate of `old-cert` starts


@pytest.fixture(scope="module")
def skewed_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkewedFleet]:
    reason = available()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("skewed-pki")
    pki_dir = workdir / "pki"
    init_fleet_ca(pki_dir)  # issued now, as `tlsfleet pki init` does
    issue(pki_dir, "coordinator", "coordinator")
    issue(pki_dir, "agent", "behind")
    # As a fleet certificate issued with only a day's backdating (as tlsfleet did before): three days
    # behind, the agent's own clock says it is not valid yet.
    old_start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    issue(pki_dir, "agent", "old-cert", not_before=old_start, not_after=old_start + timedelta(days=90))
    lab = LabPKI("Skewed")
    server = TlsServer(ServedIdentity.of(lab.issue_leaf("localhost"), lab.intermediate)).start()
    agents: dict[str, AgentProcess] = {}
    try:
        for name in ("behind", "old-cert"):
            agents[name] = start_agent(
                name,
                workdir,
                env=faketime_env(offset=BEHIND),
                insecure=False,
                extra_args=["--pki-dir", str(pki_dir)],
            )
        inventory = workdir / "inventory.toml"
        inventory.write_text(
            f'[coordinator]\npki_dir = "{pki_dir}"\n\n' + "\n".join(a.inventory_entry() for a in agents.values())
        )
        yield SkewedFleet(pki_dir, inventory, server, agents, old_start)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


def cli(*args: str) -> dict:
    done = subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_agents_days_behind_start_over_mutual_tls(skewed_fleet: SkewedFleet) -> None:
    for agent in skewed_fleet.agents.values():
        assert agent.events[0]["event"] == "agent_listening" and agent.events[0]["mtls"] is True


def test_they_answer_describe_with_their_offset(skewed_fleet: SkewedFleet) -> None:
    listed = cli("agents", "--inventory", str(skewed_fleet.inventory), "--no-local", "--json")["agents"]
    by_name = {a["agent"]: a for a in listed}
    for name in ("behind", "old-cert"):
        assert by_name[name]["state"] == "ok", by_name[name]["error"]
        assert abs(by_name[name]["clock"]["offset_ms"] + THREE_DAYS_MS) < 60_000


def test_they_answer_probes(skewed_fleet: SkewedFleet) -> None:
    report = cli(
        "probe",
        f"localhost:{skewed_fleet.server.port}",
        "--inventory",
        str(skewed_fleet.inventory),
        "--no-local",
        "--json",
        "--timeout",
        "10",
    )
    states = {v["agent"]: (v["state"], v["error"]) for v in report["vantages"]}
    assert states == {"behind": ("ok", ""), "old-cert": ("ok", "")}


def test_a_certificate_the_clock_puts_outside_its_validity_is_a_warning(skewed_fleet: SkewedFleet) -> None:
    old = skewed_fleet.agents["old-cert"]
    [warning] = [e for e in old.log_lines() if e.get("event") == "credential_outside_validity"]
    assert warning["level"] == "warning"
    assert warning["certificate"] == str(skewed_fleet.pki_dir / "agents" / "old-cert.pem")
    assert (warning["kind"], warning["state"]) == ("certificate", "not_yet_valid")
    assert datetime.fromisoformat(warning["not_before"]) == skewed_fleet.old_start
    assert datetime.fromisoformat(warning["not_after"]) == skewed_fleet.old_start + timedelta(days=90)
    host_time = datetime.fromisoformat(warning["host_time"])
    assert abs((datetime.now(UTC) - timedelta(days=3) - host_time).total_seconds()) < 300
    assert "is the clock behind?" in warning["message"] and "serving anyway" in warning["message"]
    # Thirty days of backdating cover three days behind: the agent with a fresh certificate has nothing to say.
    behind = skewed_fleet.agents["behind"]
    assert not [e for e in behind.log_lines() if e.get("event") == "credential_outside_validity"]
