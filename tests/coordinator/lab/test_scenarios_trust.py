"""The trust, chain-shape and policy scenarios end to end: real servers, real agents, the real CLI.

Quiet scenarios must produce nothing at warning or above and exit 0; the others name their top finding.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.coordinator.lab.lab_runs import checked_run, clean_fleet
from tlsfleet.coordinator.diagnosis.model import Cause, Severity
from tlsfleet.coordinator.lab.fleet import LabFleet
from tlsfleet.coordinator.lab.scenarios import SCENARIOS, Scenario
from tlsfleet.coordinator.lab.scenarios_trust import TRUST_AGENTS, TRUST_LAB_AGENTS, TRUST_SCENARIOS

SPECS = {a.name: a for a in TRUST_LAB_AGENTS}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    yield from clean_fleet(tmp_path_factory.mktemp("trust-lab"), agents=TRUST_LAB_AGENTS, scenarios=TRUST_SCENARIOS)


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.name) for s in TRUST_SCENARIOS])
def test_trust_scenario_top_finding(fleet: LabFleet, scenario: Scenario) -> None:
    run = checked_run(fleet, scenario)
    assert "Traceback" not in run.probe.stderr, run.probe.stderr
    assert run.symptom_problem is None, f"{scenario.name} ({scenario.story}): {run.symptom_problem}"
    assert run.findings_reported, "the probe report carries no findings"
    assert run.finding_problem is None, f"{scenario.name} ({scenario.story}) on {run.target}: {run.finding_problem}"
    if scenario.expect.cause is None or scenario.expect.severity is Severity.INFO:
        assert run.probe.exit_code == 0, (run.probe.exit_code, run.probe.findings())
    else:
        assert run.probe.exit_code in (1, 3), f"a finding was made, yet exit code {run.probe.exit_code}"
    if scenario.name == "runtimes-idle":
        # Quiet, not blind: the idle stores were judged and are noted once for the host.
        notes = [f for f in run.probe.findings() or [] if f["cause"] == Cause.RUNTIME_STORE_DIFFERS.value]
        assert [(f["severity"], f["agents"]) for f in notes] == [("info", ["runtimes-idle"])], notes


def test_trust_catalogue_is_well_formed() -> None:
    names = [s.name for s in TRUST_SCENARIOS]
    assert len(set(names)) == len(names)
    assert not set(names) & {s.name for s in SCENARIOS}, "names are unique across both catalogues"
    assert {a.name for a in TRUST_AGENTS} <= set(SPECS)
    for scenario in TRUST_SCENARIOS:
        assert set(scenario.agents) <= set(SPECS), scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.story.endswith((".", ":")), scenario.name
        scenario.requires(SPECS)  # every agent it names is known
    quiet = {s.name for s in TRUST_SCENARIOS if s.expect.cause is None}
    assert {"runtimes-idle", "rsa4096-chain", "p384-chain", "leaf-from-root-trusted"} <= quiet
    assert {s.expect.cause for s in TRUST_SCENARIOS} >= {
        Cause.RUNTIME_STORE_DIFFERS,
        Cause.PRIVATE_CA_NOT_TRUSTED,
        Cause.INCOMPLETE_CHAIN,
        Cause.POLICY_INVALID_CHAIN,
        Cause.UNRELATED_CERTIFICATE,
    }
