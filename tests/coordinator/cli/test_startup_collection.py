"""A short command starts with the cyclic collector held off and resumes it, start-up frozen, when its work
begins; a long-running one keeps CPython's defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlsfleet.agent.startup_collection import RESUMED_THRESHOLD

pytestmark = pytest.mark.e2e  # each test is a CLI or interpreter subprocess

# At exit: whether collection runs, its youngest generation's threshold, and how many collections the command
# made (not the interpreter's own start).
COMMAND_WITH_GC_STATE = """
import atexit, gc, sys
def collections():
    return sum(s["collections"] for s in gc.get_stats())
before = collections()
atexit.register(lambda: print("gc:", gc.isenabled(), gc.get_threshold()[0], collections() - before, file=sys.stderr))
sys.argv = ["tlsfleet", *sys.argv[1:]]
from tlsfleet.coordinator.cli.launch import main
main()
"""


def _gc_at_exit(args: list[str], tmp_path: Path) -> tuple[bool, int, int]:
    env = {k: v for k, v in os.environ.items() if k != "TLSFLEET_COORDINATOR"} | {"XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_WITH_GC_STATE, *args], capture_output=True, text=True, timeout=60, env=env
    )
    [line] = [line for line in done.stderr.splitlines() if line.startswith("gc: ")]
    enabled, threshold, collections = line.removeprefix("gc: ").split()
    return enabled == "True", int(threshold), int(collections)


def test_a_probe_collects_again_once_its_work_begins(tmp_path: Path) -> None:
    # Loopback port 9 (discard) is closed here: the probe runs to its end with a connect failure.
    args = ["probe", "127.0.0.1:9", "--agents", "local", "--json", "--timeout", "5"]
    enabled, threshold, collections = _gc_at_exit(args, tmp_path)
    assert enabled and threshold == RESUMED_THRESHOLD
    # CPython's default threshold (700) collects about 80 times while the imports run.
    assert collections < 20


def test_a_command_without_an_event_loop_never_collects_cycles(tmp_path: Path) -> None:
    enabled, _, collections = _gc_at_exit(["pki", "--help"], tmp_path)
    assert not enabled
    assert collections <= 1  # at most one, while the entry point itself is imported; CPython's default: some 45


SERVER_START = """
import gc
from tlsfleet.agent import startup_collection
startup_collection.pause()
made_at_start = [{"n": n} for n in range(1000)]
paused = gc.isenabled()
startup_collection.serving()
print(paused, gc.isenabled(), gc.get_freeze_count() >= 1000, gc.get_threshold()[0])
"""


def test_a_server_freezes_its_start_up_and_collects_with_the_usual_thresholds() -> None:
    done = subprocess.run([sys.executable, "-c", SERVER_START], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True", "True", "700"], done.stderr
