"""What every lab-scenario test module shares: a fleet that must leave nothing behind, and one checked run."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab import netns
from tlsfleet.coordinator.lab.fleet import LabFleet, ScenarioRun
from tlsfleet.coordinator.lab.scenarios import AgentSpec, Scenario


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def clean_fleet(workdir: Path, **kwargs: Sequence[AgentSpec] | Sequence[Scenario]) -> Iterator[LabFleet]:
    """A started lab fleet; once the caller is done, no agent process, namespace or veth may outlive it."""
    lab = LabFleet(workdir, **kwargs)  # type: ignore[arg-type]
    with lab:
        pids = [agent.pid for agent in lab.agents.values()]
        namespaces = [n.name for n in lab.namespaces.values()]
        yield lab
    assert not [pid for pid in pids if pid_alive(pid)], "agent processes survived the fleet"
    left = set(netns.list_lab_namespaces()) & set(namespaces)
    assert not left, f"namespaces survived the fleet: {left}"


def checked_run(fleet: LabFleet, scenario: Scenario, *, findings_reported: bool = True) -> ScenarioRun:
    """Run a scenario through the real CLI: skipped with the reason when the lab lacks what it needs, and
    failing when the probe broke, the fault is not visible, or the top finding is not the expected one."""
    reason = fleet.missing(scenario)
    if reason:
        pytest.skip(f"{scenario.name}: {reason}")
    run = fleet.run(scenario)
    assert run.probe.report is not None, run.probe.stderr
    assert "Traceback" not in run.probe.stderr, run.probe.stderr
    assert run.symptom_problem is None, f"{scenario.name} ({scenario.story}): {run.symptom_problem}"
    if findings_reported:
        assert run.findings_reported, "the probe report carries no findings"
    assert run.finding_problem is None, f"{scenario.name} ({scenario.story}) on {run.target}: {run.finding_problem}"
    return run
