"""A run soon after the coordinator starts waits for the agents of its report's previous run to dial back,
instead of probing from whichever had reconnected (or failing for want of any)."""

from __future__ import annotations

import asyncio
import time
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.coordinator.service.dialout_fleet import LoggedProcess, make_pki, start_coordinator, start_dialout_agent
from tests.coordinator.service.history.test_sqlite_store import make_run, snapshot
from tlsfleet.coordinator.lab.agent_process import trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.service.config import ConfigError, parse_config
from tlsfleet.coordinator.service.dial_in_wait import awaited_agents, wait_for_agents
from tlsfleet.coordinator.service.history.sqlite_store import SqliteHistory

AGENT_LATE_S = 2.0


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Dial-in wait")


def test_the_agents_waited_for_answered_the_previous_run_and_only_a_stream_reaches_them(pki: LabPKI) -> None:
    previous = replace(
        make_run(pki, datetime.now(UTC)),
        agents=(
            snapshot("edge-1", ()),
            snapshot("edge-2", (), labels=(("env", "staging"),)),
            snapshot("edge-3", (), state=VantageState.OFFLINE),  # the previous run did not hear from it either
            snapshot("web-1", ()),  # the inventory's: dialled at its address when it holds no stream
            snapshot("local", (), address="local"),
        ),
    )
    assert awaited_agents(previous, None, {"web-1"}) == {"edge-1", "edge-2"}
    assert awaited_agents(previous, "env=staging", {"web-1"}) == {"edge-2"}
    assert awaited_agents(None, None, ()) == frozenset()


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
def test_the_wait_ends_when_every_agent_is_back_or_at_the_deadline() -> None:
    async def go() -> tuple[tuple[str, ...], float, tuple[str, ...], float]:
        back: set[str] = set()
        asyncio.get_running_loop().call_later(0.1, back.add, "edge-1")
        started = time.monotonic()
        arrived = await wait_for_agents(["edge-1"], back.__contains__, started + 5)
        arrived_after = time.monotonic() - started
        started = time.monotonic()
        missing = await wait_for_agents(["edge-1", "edge-2"], back.__contains__, started + 0.3)
        return arrived, arrived_after, missing, time.monotonic() - started

    arrived, arrived_after, missing, gave_up_after = asyncio.run(go())
    assert arrived == () and 0.08 <= arrived_after < 1.5
    assert missing == ("edge-2",) and 0.28 <= gave_up_after < 1.5


@pytest.mark.parametrize("value", ['"-1s"', '"11m"', '"soon"'])
def test_wait_at_start_out_of_range_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    text = f'[agent_link]\nlisten = "127.0.0.1:0"\nwait_at_start = {value}\n'
    with pytest.raises(ConfigError, match="wait_at_start"):
        parse_config(tomllib.loads(text), tmp_path / "coordinator.toml")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_run_at_start_waits_for_the_agent_of_the_previous_run_to_dial_back(tmp_path: Path, pki: LabPKI) -> None:
    bundle = write_pem(tmp_path / "lab-root.pem", pki.root_pem())
    make_pki(tmp_path / "pki", "edge-1")
    (tmp_path / "inventory.toml").write_text('[coordinator]\npki_dir = "pki"\n')
    server = TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate), host="127.0.0.1").start()
    started: list[LoggedProcess] = []
    try:
        config = tmp_path / "coordinator.toml"
        config.write_text(
            '[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\n\n'
            '[storage]\npath = "history.sqlite"\n\n'
            '[agent_link]\nlisten = "127.0.0.1:0"\nallow = ["edge-*"]\nheartbeat_interval = "0.5s"\n'
            'wait_at_start = "20s"\n\n'
            f'[[report]]\nname = "edge"\ntargets = ["localhost:{server.port}"]\ninterval = "1h"\njitter = "0s"\n'
        )
        # The run before this coordinator's restart, which edge-1 answered over its stream.
        with SqliteHistory(tmp_path / "history.sqlite") as history:
            earlier = make_run(pki, datetime.now(UTC) - timedelta(hours=3), report="edge")
            history.save_run(replace(earlier, agents=(snapshot("edge-1", ()),)))
        coordinator = start_coordinator(config, tmp_path / "coordinator.log")
        started.append(coordinator)
        link = f"127.0.0.1:{coordinator.wait_for('agent_link_listening')['port']}"
        time.sleep(AGENT_LATE_S)  # the agent still in its backoff
        env = trust_env(tmp_path, bundle)
        started.append(start_dialout_agent("edge-1", link, tmp_path / "pki", tmp_path, env=env))
        waited = coordinator.wait_for("run_waited_for_agents", report="edge")
        done = coordinator.wait_for("report_run_done", report="edge")
        assert waited["agents"] == 1 and waited["waited_s"] >= AGENT_LATE_S - 0.5
        with SqliteHistory(tmp_path / "history.sqlite") as history:
            run = history.get_run(done["run_id"])
        assert run is not None
        assert {a.name: a.state for a in run.agents} == {"edge-1": VantageState.OK}
    finally:
        for process in reversed(started):
            process.stop()
        server.stop()
