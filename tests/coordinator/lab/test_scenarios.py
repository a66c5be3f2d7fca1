"""Every lab scenario end to end: real faulty servers, the standard fleet of real agents, the real CLI.

One fleet serves the whole module. Each scenario starts its own servers, runs `tlsfleet probe --json`
from its agents, checks that the fault is visible in what the vantages report, and that the top
finding names the expected cause and exactly the expected agents.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordinator.lab.lab_runs import checked_run, clean_fleet
from tlsfleet.coordinator.diagnosis.model import Cause
from tlsfleet.coordinator.lab.aia_server import MAX_CONNECTIONS, AiaServer
from tlsfleet.coordinator.lab.fleet import LabFleet, check_findings
from tlsfleet.coordinator.lab.scenarios import SCENARIOS, STANDARD_AGENTS, Expect, Scenario, scenario_named
from tlsfleet.coordinator.lab.scenarios_handshake import HANDSHAKE_SCENARIOS
from tlsfleet.coordinator.lab.scenarios_trust import TRUST_SCENARIOS


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    yield from clean_fleet(tmp_path_factory.mktemp("lab-fleet"))


def _marked(scenario: Scenario) -> object:
    """The scenario as a parameter, marked `root` when one of its agents lives in a network namespace."""
    return pytest.param(scenario, id=scenario.name, marks=[pytest.mark.root] if "root" in scenario.requires() else [])


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [_marked(s) for s in SCENARIOS])
def test_scenario_top_finding(fleet: LabFleet, scenario: Scenario) -> None:
    run = checked_run(fleet, scenario)
    assert "Traceback" not in run.probe.stderr, run.probe.stderr
    assert run.symptom_problem is None, f"{scenario.name} ({scenario.story}): {run.symptom_problem}"
    assert run.findings_reported, "the probe report carries no findings"
    assert run.finding_problem is None, f"{scenario.name} ({scenario.story}) on {run.target}: {run.finding_problem}"
    expected_exit = 0 if scenario.expect.cause is None else None
    if expected_exit is not None:
        assert run.probe.exit_code == expected_exit, run.probe.stderr
    else:
        assert run.probe.exit_code in (1, 3), f"a finding was made, yet exit code {run.probe.exit_code}"


@pytest.mark.e2e
def test_tls12_only_agent_speaks_tls12_where_the_server_allows_it(fleet: LabFleet) -> None:
    reason = fleet.missing(scenario_named("healthy"))
    if reason or "tls12-only" not in fleet.agents:
        pytest.skip(reason or f"tls12-only: {fleet.unavailable.get('tls12-only')}")
    with fleet.deploy(scenario_named("healthy")) as deployment:
        probe = fleet.probe(deployment, agents=["trusting", "tls12-only"])
    vantages = probe.vantages()
    versions = {name: v["result"]["addresses"][0]["handshake"]["tls_version"] for name, v in vantages.items()}
    # OPENSSL_CONF's system_default caps Python's default context; the coordinator asked for no bound.
    assert versions == {"trusting": "TLSv1.3", "tls12-only": "TLSv1.2"}


def test_catalogue_covers_every_cause_and_a_healthy_case() -> None:
    # Handshake failures have their own catalogue (its own fleet, openssl s_server): it counts as coverage.
    # ... and so do the trust, chain-shape and policy scenarios (scenarios_trust, run by test_scenarios_trust).
    covered = {s.expect.cause for s in (*SCENARIOS, *HANDSHAKE_SCENARIOS, *TRUST_SCENARIOS)}
    assert None in covered, "a healthy scenario is part of the catalogue"
    assert set(Cause) <= covered, f"causes without a scenario: {sorted(set(Cause) - covered)}"
    names = [s.name for s in SCENARIOS]
    assert len(set(names)) == len(names)
    agents = {a.name for a in STANDARD_AGENTS}
    for scenario in SCENARIOS:
        assert set(scenario.agents) <= agents, scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.story.endswith((".", ":")), scenario.name


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="healthy"):
        scenario_named("no-such-scenario")


def test_check_findings_reads_the_top_finding_only() -> None:
    expired = {"cause": "expired", "severity": "critical", "agents": ["b", "a"], "summary": "s"}
    info = {"cause": "vantage_unavailable", "severity": "info", "agents": ["c"], "summary": "s"}
    assert check_findings(Expect(Cause.EXPIRED, ("a", "b")), [expired, info]) is None
    assert "got: expired" in (check_findings(Expect(Cause.CLOCK_SKEW, ("a",)), [expired]) or "")
    assert check_findings(Expect(Cause.EXPIRED, ("a",)), [expired]) is not None, "the agents must match exactly"
    assert check_findings(Expect(None), [info]) is None, "info findings do not spoil a healthy case"
    assert check_findings(Expect(None), [expired]) is not None
    assert check_findings(Expect(Cause.EXPIRED, ("a", "b")), []) == "expected expired naming a, b, got no finding"


def test_aia_server_serves_known_paths_and_refuses_the_rest(tmp_path: Path) -> None:
    before = threading.active_count()
    with AiaServer({"/ca.der": b"\x30\x03abc"}) as server:
        with urllib.request.urlopen(server.url("/ca.der"), timeout=5) as answer:
            assert answer.read() == b"\x30\x03abc"
            assert answer.headers["Content-Type"] == "application/pkix-cert"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url("/other.der"), timeout=5)
        assert missing.value.code == 404
        post = urllib.request.Request(server.url("/ca.der"), data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=5)
        assert refused.value.code == 405
        added = server.add("/later.der", b"\x30\x00")
        with urllib.request.urlopen(added, timeout=5) as answer:
            assert answer.read() == b"\x30\x00"
        assert server.requests_served == 4
    assert threading.active_count() == before, "the server thread and its handlers ended"
    with pytest.raises(ValueError, match="absolute URL path"):
        AiaServer({"ca.der": b""})


def test_aia_server_bounds_connections_held_open() -> None:
    with AiaServer({"/ca.der": b"\x30\x00"}) as server:
        idle = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(MAX_CONNECTIONS)]
        try:
            # Every slot is held by a silent client: one more is closed at once, not queued behind them.
            extra = socket.create_connection((server.host, server.port), timeout=5)
            with extra:
                extra.settimeout(5)
                with contextlib.suppress(ConnectionResetError):  # closed unanswered, abruptly: as good
                    assert extra.recv(1) == b""
        finally:
            for conn in idle:
                conn.close()
        # Slots come back once the silent clients leave (each handler sees their close).
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(server.url("/ca.der"), timeout=5) as answer:
                    assert answer.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
