"""`tlsfleet agents` with a real agent started with `--label`: the labels it reports are merged with the
inventory's for selection and display (the inventory wins, the difference shown), and a name that
matches nothing is refused with the close names."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command

pytestmark = pytest.mark.e2e


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    work = tmp_path_factory.mktemp("agents-labels")
    agent = start_agent("edge-1", work, labels=[("env", "staging"), ("team", "edge")])
    try:
        inventory = work / "inventory.toml"
        inventory.write_text(
            f'[[agent]]\nname = "edge-1"\naddress = "{agent.address}"\ninsecure = true\nlabels = {{ env = "prod" }}\n\n'
            # Listed but not running: its inventory labels are all that is known of it.
            f'[[agent]]\nname = "edge-2"\naddress = "127.0.0.1:{_unused_port()}"\ninsecure = true\n'
            'labels = { env = "staging" }\n'
        )
        yield agent, inventory
    finally:
        agent.stop()


def _agents(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [*tlsfleet_command(), "agents", "--inventory", str(inventory), "--no-local", "--timeout", "5", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_label_only_the_agent_reports_selects_it_and_the_inventory_wins_a_conflict(fleet) -> None:
    _, inventory = fleet
    done = _agents(inventory, "--agents", "team=edge", "--json")
    report = json.loads(done.stdout)
    agents = {a["agent"]: a for a in report["agents"]}
    agent = agents["edge-1"]
    assert agent["state"] == "ok"
    assert agent["labels"] == {"env": "prod", "team": "edge"}
    assert agent["label_conflicts"] == {"env": {"inventory": "prod", "agent": "staging"}}
    # edge-2 does not answer and its inventory labels say nothing of team: it may match, so it is listed,
    # and the exit code says some agent did not answer.
    assert agents["edge-2"]["state"] == "offline"
    assert done.returncode == report["exit_code"] == 3, done.stderr


def test_an_agent_the_inventory_rules_out_is_not_asked(fleet) -> None:
    _, inventory = fleet
    done = _agents(inventory, "--agents", "env=prod,team=edge", "--json")
    assert done.returncode == 0, done.stderr
    assert [a["agent"] for a in json.loads(done.stdout)["agents"]] == ["edge-1"]


def test_the_table_shows_what_the_agent_says_beside_the_inventorys_value(fleet) -> None:
    _, inventory = fleet
    done = _agents(inventory, "--agents", "edge-1")
    assert done.returncode == 0, done.stderr
    assert "env=prod (agent says env=staging)" in done.stdout
    assert "team=edge" in done.stdout


def test_the_agents_own_value_does_not_override_the_inventory_in_selection(fleet) -> None:
    _, inventory = fleet
    done = _agents(inventory, "--agents", "env=staging", "--json")
    # edge-1 says staging but the inventory says prod; edge-2 is listed as staging and does not answer.
    assert done.returncode == 3, done.stderr
    assert [(a["agent"], a["state"]) for a in json.loads(done.stdout)["agents"]] == [("edge-2", "offline")]


def test_a_name_that_matches_nothing_is_refused_with_the_close_names(fleet) -> None:
    _, inventory = fleet
    done = _agents(inventory, "--agents", "edge-1,edeg-2")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: selector term 'edeg-2' matches no vantage in inventory ")
    assert "close names: edge-2" in line
    assert done.stdout == ""


def test_a_label_nobody_has_is_refused_saying_so(fleet) -> None:
    _, inventory = fleet
    done = _agents(inventory, "--agents", "env=qa")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "no vantage matches 'env=qa'" in line and "labels the agents report included" in line
