"""What the tests that hold findings against real servers (nginx, HAProxy) share: the name probed, curl as a
client, a server process on a free loopback port stopped by its PID, the findings for one address, and the
`lab` fixture of openssl_lab."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pytest

from tests.agent.probe.openssl_lab import Lab, Truth, probe, s_client
from tests.agent.probe.openssl_lab import lab as lab  # the fixture, by its name
from tests.outcomes import observe, outcome, request
from tlsfleet.agent.model import AddressResult
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding

NAME = "api.example.test"
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed here")
START_TIMEOUT_S = 5.0


def installed(program: str) -> str | None:
    """The program on PATH, or in /usr/sbin where Debian puts servers (not on every PATH)."""
    return shutil.which(program) or (f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`argv` started and waited for until it accepts on 127.0.0.1:`port`; stopped by its PID with
    `stop_signal` (then killed). `log_path` is where it writes what the tests read back."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        capture: bool = False,
    ) -> None:
        self.port = port
        self._log_path = log_path
        self._stop_signal = stop_signal
        self._output: IO[bytes] | None = log_path.open("wb") if capture else None
        out = self._output if self._output is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close()
                raise AssertionError(f"{argv[0]} exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise AssertionError(f"{argv[0]} did not listen: {self.log()}")

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self._stop_signal)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._close()

    def _close(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None


def curl(port: int, cafile: Path, name: str = NAME) -> subprocess.CompletedProcess[str]:
    """curl's HTTP status for https://NAME:PORT/ on 127.0.0.1, trusting `cafile` alone."""
    assert CURL is not None
    return subprocess.run(
        [
            *(CURL, "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"),
            *("--cacert", str(cafile), "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )


def clients_see(
    lab: Lab, server: ServerProcess, name: str = NAME
) -> tuple[Truth, subprocess.CompletedProcess[str], AddressResult]:
    """What `openssl s_client`, curl and tlsfleet's probe each get from `server` for `name`; the server is
    stopped afterwards (its log stays readable)."""
    try:
        return s_client(server.port, name, lab.root), curl(server.port, lab.root, name), probe(lab, server.port, name)
    finally:
        server.stop()


def findings_for(result: AddressResult, port: int, name: str = NAME, *, send_sni: bool = True) -> list[Finding]:
    """What diagnosis finds when this machine alone saw `result` for NAME:PORT."""
    req = request(name, port, send_sni=send_sni)
    return list(diagnose(observe(outcome("local", [result], req=req), req=req)))


def of(found: list[Finding], cause: Cause) -> list[Finding]:
    return [f for f in found if f.cause is cause]
