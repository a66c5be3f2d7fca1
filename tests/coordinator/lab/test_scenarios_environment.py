"""Environment differences across vantages end to end: real servers (IPv4 and IPv6), real agents with their
own hosts files, trust files, proxies and clocks, the real CLI; and, for every address each agent probed, the
real client run in that agent's environment as the yardstick of its verdict: `openssl s_client` (curl through
the host's proxy, a client with a deadline where packets are dropped, getent in the agent's namespace).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.coordinator.lab.lab_runs import pid_alive
from tlsfleet.coordinator.lab import netns
from tlsfleet.coordinator.lab.fleet import ProbeRun, check_findings
from tlsfleet.coordinator.lab.ground_truth import s_client
from tlsfleet.coordinator.lab.scenarios import SCENARIOS, Scenario
from tlsfleet.coordinator.lab.scenarios_environment import (
    ENVIRONMENT_AGENTS,
    ENVIRONMENT_LAB_AGENTS,
    ENVIRONMENT_SCENARIOS,
    IPV6_LOOPBACK,
    EnvironmentFleet,
    EnvironmentScenario,
)

SPECS = {a.name: a for a in ENVIRONMENT_LAB_AGENTS}
# OpenSSL's verify code for each native verdict these scenarios produce.
_CODES = {"ok": 0, "expired": 10, "unknown_issuer": 20}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentFleet]:
    """The fleet; once done, no agent process or namespace may outlive it (as `lab_runs.clean_fleet` checks)."""
    with EnvironmentFleet(tmp_path_factory.mktemp("environment-lab")) as lab:
        pids = [agent.pid for agent in lab.agents.values()]
        namespaces = [n.name for n in lab.namespaces.values()]
        yield lab
    assert not [pid for pid in pids if pid_alive(pid)], "agent processes survived the fleet"
    assert not set(netns.list_lab_namespaces()) & set(namespaces), "namespaces survived the fleet"


def _marked(scenario: Scenario) -> object:
    marks = [pytest.mark.root] if {"root", "mount-view"} & scenario.requires(SPECS) else []
    return pytest.param(scenario, id=scenario.name, marks=marks)


def _ipv6_missing() -> str | None:
    try:
        with socket.create_server((IPV6_LOOPBACK, 0), family=socket.AF_INET6):
            return None
    except OSError as error:
        return f"no IPv6 loopback here ({error.strerror or error})"


def _rows(probe: ProbeRun, agent: str) -> list[dict[str, Any]]:
    return list((probe.vantages()[agent].get("result") or {}).get("addresses") or [])


def _against_s_client(fleet: EnvironmentFleet, scenario: Scenario, probe: ProbeRun, port: int) -> list[str]:
    """Where an agent's native verdict differs from `openssl s_client` run with that agent's environment, at
    the address it probed."""
    differences = []
    for agent in scenario.agents:
        env = fleet.host_environment(agent)
        resolution = (probe.vantages()[agent].get("result") or {}).get("resolution") or {}
        if resolution.get("failure") not in (None, "none") and agent in fleet.namespaces:
            # The host's own resolver, in its namespace: getent exits 2 when the name has no address.
            done = subprocess.run(
                [*fleet.namespaces[agent].exec_prefix, "getent", "hosts", scenario.host],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if done.returncode == 0:
                differences.append(f"{agent}: agent {resolution}, getent {done.stdout!r}")
        for row in _rows(probe, agent):
            if row["connect_failure"] == "connect_timeout":
                # s_client would wait out the kernel's SYN retries; a client with a deadline, as the agent's:
                try:
                    socket.create_connection((row["address"], port), timeout=2).close()
                    differences.append(f"{agent}@{row['address']}: agent connect_timeout, a client connected")
                except TimeoutError:
                    pass
                continue
            truth = s_client(row["address"], port, servername=scenario.host, env=env, linger=0.1)
            if row["connect_failure"] != "none":
                if truth.connected or "CONNECTION ESTABLISHED" in truth.output:
                    differences.append(f"{agent}@{row['address']}: agent {row['connect_failure']}, s_client connected")
                continue
            verdict = row["native"]["verdict"]
            if truth.verify_code != _CODES.get(verdict, -1) or truth.connected != (verdict == "ok"):
                differences.append(
                    f"{agent}@{row['address']}: agent {verdict}, s_client {truth.outcome}: {truth.output[-300:]}"
                )
    return differences


def _against_curl(fleet: EnvironmentFleet, scenario: Scenario, probe: ProbeRun, port: int) -> list[str]:
    """Where an agent probing through its host's proxy (--via-proxy) differs from curl run with that agent's
    environment (HTTPS_PROXY, NO_PROXY; the agent's OpenSSL store as curl's CA file, since curl reads its own
    built-in path, not SSL_CERT_FILE): curl connects exactly where the agent verifies, and is refused by the
    proxy with the status the agent reports."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: no yardstick for probes through a proxy")
    differences = []
    for agent in scenario.agents:
        env = fleet.host_environment(agent)
        for row in _rows(probe, agent):
            direct = row["connect_failure"] != "proxy_refused"
            command = ["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "--cacert", env["SSL_CERT_FILE"]]
            if direct:
                command += ["--resolve", f"{scenario.host}:{port}:{row['address']}"]
            done = subprocess.run(
                [*command, f"https://{scenario.host}:{port}/"], env=env, capture_output=True, text=True, timeout=30
            )
            if direct and (done.returncode == 0) != (row["native"]["verdict"] == "ok"):
                differences.append(f"{agent}: agent {row['native']['verdict']}, curl {done.stderr.strip()}")
            if not direct:
                status = re.search(r"'HTTP/1.1 (\d{3})", row["connect_error"])
                if done.returncode == 0 or not status or f"response {status.group(1)}" not in done.stderr:
                    differences.append(f"{agent}: agent {row['connect_error']}, curl {done.stderr.strip()}")
    return differences


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [_marked(s) for s in ENVIRONMENT_SCENARIOS])
def test_environment_scenario_matches_the_real_client_and_names_its_cause(
    fleet: EnvironmentFleet, scenario: Scenario
) -> None:
    reason = fleet.missing(scenario) or (
        _ipv6_missing() if isinstance(scenario, EnvironmentScenario) and scenario.ipv6 else None
    )
    if reason:
        pytest.skip(f"{scenario.name}: {reason}")
    with fleet.deploy(scenario) as deployment:
        probe = fleet.probe(deployment)
        assert probe.report is not None, probe.stderr
        assert "Traceback" not in probe.stderr, probe.stderr
        assert scenario.symptom(probe.vantages()) is None, scenario.symptom(probe.vantages())
        # The yardstick, while the servers still run: each agent's verdicts against its host's real client.
        if "--via-proxy" in scenario.probe_args:
            assert not _against_curl(fleet, scenario, probe, deployment.port)
        else:
            assert not _against_s_client(fleet, scenario, probe, deployment.port)
    findings = probe.findings() or []
    problem = check_findings(scenario.expect, findings)
    assert problem is None, f"{scenario.name} ({scenario.story}): {problem}"
    if scenario.expect.cause is None:
        assert probe.exit_code == 0, (probe.exit_code, findings)
        return
    assert probe.exit_code in (1, 3), f"a finding was made, yet exit code {probe.exit_code}"
    top = findings[0]
    if scenario.name == "dual-stack-stale-v6":
        assert not [f for f in findings if f["cause"] == "dns_difference"], "no resolver is wrong"
        assert "v4-only resolves the name to its IPv4 address only" in top["summary"], top["summary"]
        assert "127.88" not in top["fix"], "the IPv4 backend is current: the fix names ::1 alone"
    if scenario.name == "three-backends-two-faults":
        backends = ", ".join(sorted({r["address"] for r in _rows(probe, "trusting") if r["native"]["verdict"] != "ok"}))
        assert f"on {backends}," in top["fix"], top["fix"]
    if scenario.name == "pin-to-decommissioned":
        assert "the answer stale-pin gets is stale or wrong" in top["summary"], top["summary"]
    if scenario.name == "proxy-refuses-connect":
        assert "answers 403" in top["summary"] and "answers 407" in top["summary"], top["summary"]
        assert all(f"-connect {scenario.host}:" in c and " -proxy " in c for c in top["reproduce"]), top["reproduce"]
    if scenario.name == "unreachable-three-ways":
        loud = [(f["cause"], f["agents"]) for f in findings if f["severity"] != "info"]
        assert loud == [("unreachable", ["stale-pin", "pinned-dropped"]), ("unreachable", ["internal-dns"])], loud
    if scenario.name == "intermediate-in-one-store":
        assert "cached-intermediate verifies it only thanks to that" in top["summary"], top["summary"]
    if scenario.name == "cert-file-absent":
        assert "ca-bundle.crt, which holds no root (" in top["summary"], top["summary"]
        assert "ca-bundle.crt" not in top["fix"], "nothing can be added to a file that is not there"
    if scenario.name == "cert-file-overrides-system-store":
        assert "update-ca-certificates" not in top["fix"], "the root is installed there already"


def test_environment_catalogue_is_well_formed() -> None:
    names = [s.name for s in ENVIRONMENT_SCENARIOS]
    assert len(set(names)) == len(names)
    assert not set(names) & {s.name for s in SCENARIOS}, "names are unique across the catalogues"
    assert {a.name for a in ENVIRONMENT_AGENTS} <= set(SPECS)
    for scenario in ENVIRONMENT_SCENARIOS:
        assert set(scenario.agents) <= set(SPECS), scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.story.endswith((".", ":")), scenario.name
        scenario.requires(SPECS)
