"""libfaketime for lab agents: a moved wall clock, real monotonic clocks, and agents that still answer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.faketime import FaketimeError, available, faketime_env, library_path, offset_seconds
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

TWO_DAYS_MS = 2 * 86400 * 1000
Skewed = tuple[Path, TlsServer, dict[str, AgentProcess]]


def needs_faketime() -> None:
    reason = available()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("+2d", 172800.0), ("-2d", -172800.0), ("+36h", 129600.0), ("-90m", -5400.0), ("+15", 15.0), ("+1y", 31536000.0)],
)
def test_offsets_parse(text: str, seconds: float) -> None:
    assert offset_seconds(text) == seconds


@pytest.mark.parametrize("text", ["2d", "+2w", "@2026-01-01 00:00:00", "", "+-1d", "+d"])
def test_offsets_that_libfaketime_would_misread_are_refused(text: str) -> None:
    with pytest.raises(FaketimeError, match="accepted"):
        offset_seconds(text)
    with pytest.raises(FaketimeError):
        faketime_env({}, text)


def test_environment_preloads_the_library_and_keeps_monotonic_clocks_real() -> None:
    needs_faketime()
    env = faketime_env({"LD_PRELOAD": "/lib/other.so", "KEEP": "me"}, "-2d")
    assert env["KEEP"] == "me"
    assert env["LD_PRELOAD"] == f"{library_path()}:/lib/other.so"
    assert env["FAKETIME"] == "-2d"
    assert env["DONT_FAKE_MONOTONIC"] == "1"
    assert env["NO_FAKE_STAT"] == "1"


def test_child_wall_clock_moves_and_monotonic_does_not() -> None:
    needs_faketime()
    code = "import time; print(time.time(), time.monotonic())"
    before = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], env=faketime_env(offset="+2d"), capture_output=True, text=True, timeout=20
    )
    after = time.monotonic()
    assert done.returncode == 0, done.stderr
    wall, mono = map(float, done.stdout.split())
    assert abs(wall - time.time() - 172800) < 30
    assert before - 1 <= mono <= after + 1, "CLOCK_MONOTONIC is the machine's, untouched"


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Skewed]:
    needs_faketime()
    workdir = tmp_path_factory.mktemp("faketime")
    pki = LabPKI("Skew Lab")
    # Issued an hour ago, valid for 90 days: two days behind it is not yet valid, two days ahead it is fine.
    leaf = pki.issue_leaf("localhost", not_before=datetime.now(UTC) - timedelta(hours=1))
    server = TlsServer(ServedIdentity.of(leaf, pki.intermediate)).start()
    root = write_pem(workdir / "root.pem", pki.root_pem())
    agents: dict[str, AgentProcess] = {}
    try:
        for name, offset in (("ahead", "+2d"), ("behind", "-2d")):
            env = faketime_env(trust_env(workdir, root), offset)
            agents[name] = start_agent(name, workdir, env=env)
        yield workdir, server, agents
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


def _cli(*args: str) -> dict:
    done = subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


@pytest.mark.e2e
def test_skewed_agents_answer_probes_and_show_their_offset(skewed: Skewed) -> None:
    workdir, server, agents = skewed
    inventory = workdir / "inventory.toml"
    inventory.write_text("".join(a.inventory_entry() for a in agents.values()))
    report = _cli("probe", f"localhost:{server.port}", "--inventory", str(inventory), "--no-local", "--json")
    vantages = {v["agent"]: v for v in report["vantages"]}
    for name, sign in (("ahead", 1), ("behind", -1)):
        vantage = vantages[name]
        assert vantage["state"] == "ok", vantage["error"]
        assert abs(vantage["clock"]["offset_ms"] - sign * TWO_DAYS_MS) < 60_000, vantage["clock"]
    ahead = vantages["ahead"]["result"]["addresses"][0]
    behind = vantages["behind"]["result"]["addresses"][0]
    assert ahead["native"]["verdict"] == "ok"
    assert behind["native"]["verdict"] == "not_yet_valid"
    # At the coordinator's reference time the very same chain is fine: the host's clock is the fault.
    verdicts = {s["store"]: s for s in behind["stores"]}
    assert verdicts["ssl_cert_file"]["at_agent_time"] == "not_yet_valid"
    assert verdicts["ssl_cert_file"]["at_reference_time"] == "ok"


@pytest.mark.e2e
def test_agents_command_sees_the_same_offsets(skewed: Skewed) -> None:
    workdir, _server, agents = skewed
    inventory = workdir / "inventory-agents.toml"
    inventory.write_text("".join(a.inventory_entry() for a in agents.values()))
    listed = {a["agent"]: a for a in _cli("agents", "--inventory", str(inventory), "--no-local", "--json")["agents"]}
    assert abs(listed["ahead"]["clock"]["offset_ms"] - TWO_DAYS_MS) < 60_000
    assert abs(listed["behind"]["clock"]["offset_ms"] + TWO_DAYS_MS) < 60_000
