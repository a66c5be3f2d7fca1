"""The judgement scenarios end to end: real servers and proxies, real agent processes (one with its clock
three days ahead), the real CLI (once with its own clock 40 days ahead), and the top finding each must give."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.coordinator.lab.lab_runs import checked_run, clean_fleet
from tlsfleet.coordinator.lab.fleet import LabFleet
from tlsfleet.coordinator.lab.scenarios import Scenario, scenario_address
from tlsfleet.coordinator.lab.scenarios_judgement import (
    JUDGEMENT_AGENTS,
    JUDGEMENT_SCENARIOS,
    judgement_scenario,
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    yield from clean_fleet(
        tmp_path_factory.mktemp("judgement-fleet"), agents=JUDGEMENT_AGENTS, scenarios=JUDGEMENT_SCENARIOS
    )


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.name) for s in JUDGEMENT_SCENARIOS])
def test_judgement_top_finding(fleet: LabFleet, scenario: Scenario) -> None:
    run = checked_run(fleet, scenario, findings_reported=False)
    assert "Traceback" not in run.probe.stderr, run.probe.stderr
    assert run.symptom_problem is None, f"{scenario.name} ({scenario.story}): {run.symptom_problem}"
    assert run.finding_problem is None, f"{scenario.name} ({scenario.story}) on {run.target}: {run.finding_problem}"
    findings = run.probe.findings() or []
    if scenario.expect.cause is None:
        assert run.probe.exit_code == 0, run.probe.stderr
    else:
        assert run.probe.exit_code in (1, 3), f"a finding was made, yet exit code {run.probe.exit_code}"
    # Bounded output: a handful of findings whatever the chain length or the number of certificates.
    assert len(findings) <= 8, [f["cause"] for f in findings]
    causes = [f["cause"] for f in findings]
    if scenario.name.startswith("dns-steered"):
        assert "dns_difference" in causes, "the DNS difference is said beside the interception"
    if scenario.name == "coordinator-clock-ahead":
        assert not {"expired", "not_yet_valid"} & set(causes), findings
    if scenario.name == "malformed-key-usage":
        assert "hostname_mismatch" not in causes, findings


def test_catalogue_is_consistent() -> None:
    names = [s.name for s in JUDGEMENT_SCENARIOS]
    assert len(set(names)) == len(names)
    agents = {a.name for a in JUDGEMENT_AGENTS}
    for scenario in JUDGEMENT_SCENARIOS:
        assert set(scenario.agents) <= agents, scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.story.endswith((".", ":")), scenario.name
        assert "root" not in scenario.requires({a.name: a for a in JUDGEMENT_AGENTS}), scenario.name
    index = names.index("ip-target") + 1
    assert judgement_scenario("ip-target").host == scenario_address(index, 1)
    assert "libfaketime" in judgement_scenario("coordinator-clock-ahead").requires(
        {a.name: a for a in JUDGEMENT_AGENTS}
    )
    with pytest.raises(KeyError, match="ip-target"):
        judgement_scenario("no-such-scenario")
