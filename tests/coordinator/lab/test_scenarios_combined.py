"""The combined-fault scenarios end to end: real servers and proxies, real agent processes (skewed by
libfaketime, some in network namespaces), the real CLI. Each cause must be named on its own agents, a
server-side fault once for the whole fleet, and a healthy fleet with harmless differences must stay quiet."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.coordinator.lab.lab_runs import checked_run, clean_fleet
from tlsfleet.coordinator.diagnosis.model import Cause
from tlsfleet.coordinator.lab.fleet import LabFleet
from tlsfleet.coordinator.lab.scenarios import SCENARIOS, Scenario
from tlsfleet.coordinator.lab.scenarios_combined import COMBINED_AGENTS, COMBINED_LAB_AGENTS, COMBINED_SCENARIOS

SPECS = {a.name: a for a in COMBINED_LAB_AGENTS}
# Causes that say a host's environment differs; a server-side fault must not be told as one of these.
ENVIRONMENT = {
    Cause.PRIVATE_CA_NOT_TRUSTED.value,
    Cause.RUNTIME_STORE_DIFFERS.value,
    Cause.CLOCK_SKEW.value,
    Cause.DNS_DIFFERENCE.value,
    Cause.TLS_INTERCEPTION.value,
    Cause.SNI_DIFFERENCE.value,
    Cause.PROTOCOL_MISMATCH.value,
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    yield from clean_fleet(
        tmp_path_factory.mktemp("combined-fleet"), agents=COMBINED_LAB_AGENTS, scenarios=COMBINED_SCENARIOS
    )


def _marked(scenario: Scenario) -> object:
    root = "root" in scenario.requires(SPECS)
    return pytest.param(scenario, id=scenario.name, marks=[pytest.mark.root] if root else [])


def _by_cause(findings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        out.setdefault(f["cause"], []).append(f)
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [_marked(s) for s in COMBINED_SCENARIOS])
def test_combined_scenario_top_finding(fleet: LabFleet, scenario: Scenario) -> None:
    run = checked_run(fleet, scenario)
    findings = run.probe.findings() or []
    if scenario.expect.cause is None:
        assert run.probe.exit_code == 0, (run.probe.exit_code, findings)
    elif scenario.expect.cause is Cause.VANTAGE_UNAVAILABLE:
        assert run.probe.exit_code == 3, (run.probe.exit_code, findings)
        assert [(f["cause"], f["severity"]) for f in findings] == [("vantage_unavailable", "info")], findings
    else:
        assert run.probe.exit_code == 1, (run.probe.exit_code, findings)
    by_cause = _by_cause(findings)
    loud = [f for f in findings if f["severity"] != "info"]
    if scenario.name == "skew-and-missing-root":
        assert [f["agents"] for f in by_cause["clock_skew"]] == [["skew-behind"]], findings
        assert [f["agents"] for f in by_cause["private_ca_not_trusted"]] == [["no-private-root"]], findings
    if scenario.name == "skewed-host-lacks-root":
        (skew,) = by_cause["clock_skew"]
        assert (skew["agents"], skew["severity"]) == (["skewed-no-root"], "critical"), skew
        assert "no verdict here flips" not in skew["summary"], skew["summary"]
        assert "not valid until" in skew["summary"], skew["summary"]
    if scenario.name.endswith("-mixed-fleet"):
        # One server finding for everyone; the hosts' own differences only on the hosts that have them.
        server = findings[0]
        assert server["cause"] not in ENVIRONMENT, server
        assert len(by_cause[server["cause"]]) == 1, findings
        for f in loud[1:]:
            assert f["cause"] in ENVIRONMENT, f
            assert not {"trusting", "trusting-2"} & set(f["agents"]), f
    if scenario.name == "backend-expired-mixed-fleet":
        # no-private-root fails on both backends for its own reason: the good backend is not painted failing.
        assert "unknown_issuer" not in findings[0]["summary"], findings[0]["summary"]
    if scenario.name == "stale-pin-beside-missing-root":
        # The pinned host fails because of its answer, although a host of the good set lacks the root.
        assert findings[0]["severity"] == "critical", findings[0]
        assert "stale-pin fails because of the answer it gets" in findings[0]["summary"], findings[0]["summary"]
        assert [f["agents"] for f in by_cause["private_ca_not_trusted"]] == [["no-private-root"]], findings
    if scenario.name == "expired-behind-proxy":
        assert [f["agents"] for f in by_cause["tls_interception"]] == [["behind-proxy"]], findings
        # The proxy's re-signed chain is not the server's: the expiry is told with its date and its renewal.
        (expired,) = by_cause["expired"]
        assert "notAfter" in expired["summary"] and "no rule explains" not in expired["summary"], expired
        assert "behind-proxy gets a chain re-signed by another issuer" in expired["summary"], expired["summary"]
    if scenario.name == "expired-mixed-fleet":
        # The hosts that fail on the expiry found the path to the root all the same.
        (private,) = by_cause["private_ca_not_trusted"]
        assert private["summary"].endswith("; the other 3 vantages trust it."), private["summary"]
    if scenario.name == "backend-stale":
        # One backend serves the stale certificate: told by address, not as what every vantage is served.
        (soon,) = by_cause["expiring_soon"]
        assert "vantages that got a chain are served it" not in soon["summary"], soon["summary"]
    if scenario.name == "aia-leaf-only-beside-missing-root":
        # The host without the root is told, in the one finding, that serving the intermediate is not enough.
        assert [f["cause"] for f in loud] == ["incomplete_chain"], findings
        assert "private_ca_not_trusted" not in by_cause, findings
    if scenario.name == "proxy-beside-missing-root":
        assert [f["agents"] for f in by_cause["tls_interception"]] == [["behind-proxy"]], findings
        assert [f["agents"] for f in by_cause["private_ca_not_trusted"]] == [["no-private-root"]], findings
    if scenario.name == "two-missing-root-one-skewed":
        assert sorted(f["agents"][0] for f in by_cause["clock_skew"]) == ["skew-behind", "skewed-no-root"], findings
        assert {f["severity"] for f in by_cause["clock_skew"]} == {"critical"}, findings
    if scenario.name == "proxy-on-skewed-host":
        # The host trusts the proxy's CA; its clock is why the proxy's fresh leaf fails there.
        (proxy,) = by_cause["tls_interception"]
        assert (proxy["agents"], proxy["severity"]) == (["proxy-skewed"], "warning"), proxy
        assert "add its root CA" not in proxy["fix"], proxy["fix"]
    if scenario.name == "pinned-host-lacks-root-valid":
        # The old backend's certificate is valid: the missing root is why, not the answer the host gets.
        (dns,) = by_cause["dns_difference"]
        assert dns["severity"] == "warning" and "because of the answer" not in dns["summary"], dns
    if scenario.name == "pinned-host-lacks-root-expired":
        assert "fails verification (expired, unknown_issuer)" in findings[0]["summary"], findings[0]["summary"]
        assert [f["agents"] for f in by_cause["private_ca_not_trusted"]] == [["pinned-no-root"]], findings
    if scenario.name == "proxy-on-host-without-root":
        # The proxy hides what the server sends: the missing private root is not a conclusion to draw there.
        assert [f["cause"] for f in loud] == ["tls_interception"], findings


@pytest.mark.e2e
@pytest.mark.slow
def test_a_stalled_agent_is_a_timeout_said_at_info_and_exit_3(fleet: LabFleet) -> None:
    scenario = next(s for s in COMBINED_SCENARIOS if s.name == "healthy-one-offline")
    reason = fleet.missing(scenario)
    if reason:
        pytest.skip(reason)
    pid = fleet.agents["trusting-2"].pid
    with fleet.deploy(scenario) as deployment:
        os.kill(pid, signal.SIGSTOP)  # alive and listening, never answering
        try:
            probe = fleet.probe(deployment, "--timeout", "3", agents=["trusting", "trusting-2"])
        finally:
            os.kill(pid, signal.SIGCONT)
    assert probe.report is not None, probe.stderr
    states = {v["agent"]: v["state"] for v in probe.report["vantages"]}
    assert states == {"trusting": "ok", "trusting-2": "timeout"}, states
    findings = probe.findings() or []
    assert [(f["cause"], f["severity"], f["agents"]) for f in findings] == [
        ("vantage_unavailable", "info", ["trusting-2"])
    ], findings
    assert "timeout" in findings[0]["summary"]
    assert probe.exit_code == 3, probe.exit_code


def test_combined_catalogue_is_well_formed() -> None:
    names = [s.name for s in COMBINED_SCENARIOS]
    assert len(set(names)) == len(names)
    assert not set(names) & {s.name for s in SCENARIOS}, "names are unique across the catalogues"
    assert {a.name for a in COMBINED_AGENTS} <= set(SPECS)
    for scenario in COMBINED_SCENARIOS:
        assert set(scenario.agents) <= set(SPECS), scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.story.endswith((".", ":")), scenario.name
        scenario.requires(SPECS)
    assert None in {s.expect.cause for s in COMBINED_SCENARIOS}, "a quiet case guards against noise"
