"""`tlsfleet demo` (what `make demo` runs): tells every scenario's story and leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tlsfleet.coordinator.cli.demo import DEMO_SCENARIOS
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command

pytestmark = pytest.mark.e2e  # `tlsfleet demo` starts the whole lab


def _workdir(output: str) -> Path:
    match = re.search(r"A throwaway lab in (\S+?):", output)
    assert match, output[:500]
    return Path(match.group(1))


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_demo_tells_each_story_and_cleans_up() -> None:
    done = subprocess.run(
        [*tlsfleet_command(), "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for number, name in enumerate(DEMO_SCENARIOS, start=1):
        assert f"{number}/{len(DEMO_SCENARIOS)} {name}" in out
    for cause in (
        "private_ca_not_trusted",
        "runtime_store_differs",
        "incomplete_chain",
        "sni_difference",
        "dns_difference",
        "inconsistent_backends",
        "protocol_mismatch",
    ):
        assert cause in out, cause
    healthy = out[out.rfind(f"{len(DEMO_SCENARIOS)}/{len(DEMO_SCENARIOS)} ") :]
    assert "No findings" in healthy, f"the healthy scenario ends the story with a clean bill:\n{healthy}"
    assert "Traceback" not in out + done.stderr
    workdir = _workdir(out)
    assert not workdir.exists()
    assert _processes_mentioning(str(workdir)) == []


def test_ctrl_c_stops_everything_it_started() -> None:
    process = subprocess.Popen(
        [*tlsfleet_command(), "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As a terminal's shell starts it: a process started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            seen += line
            if "1/" in line or not line:
                break
        # Ctrl-C reaches the whole foreground process group, as a terminal sends it.
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = seen + rest
    assert process.returncode == 130, output[-2000:]
    assert "Traceback" not in output
    workdir = _workdir(output)
    assert not workdir.exists()
    assert _processes_mentioning(str(workdir)) == []
