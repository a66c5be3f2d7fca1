"""Real processes for the dial-out tests: a coordinator service with its agent-link listener, agents that
only dial out, each logging JSON lines to a file the tests read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlsfleet.coordinator.lab.agent_process import agent_command, tlsfleet_command

WAIT_S = 30.0


@dataclass
class LoggedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    read_from: int = 0  # log lines before this one belong to an earlier phase
    history: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": "unparsed", "line": raw})
        return lines

    def wait_for(self, event: str, *, since: int = 0, timeout: float = WAIT_S, **fields: object) -> dict:
        """The first `event` logged at or after line `since` whose fields match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.events()[since:]:
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(json.dumps(e) for e in self.events()[-15:])
        raise AssertionError(f"{self.name}: no {event} {fields or ''} within {timeout:g} s; log ends:\n{tail}")

    def stop(self) -> None:
        """SIGCONT (it may be stopped), SIGTERM, then SIGKILL: by PID, and only ours."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on, from its sockets' inodes and /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def start_logged(
    name: str, command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> LoggedProcess:
    log = log_path.open("ab")
    process_env = dict(os.environ if env is None else env)
    process_env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=process_env
        )
    finally:
        log.close()
    return LoggedProcess(name, process, log_path)


def start_coordinator(config: Path, log_path: Path) -> LoggedProcess:
    return start_logged("coordinator", [*tlsfleet_command(), "coordinator", "serve", "--config", str(config)], log_path)


def start_dialout_agent(
    name: str,
    link: str,
    pki_dir: Path,
    workdir: Path,
    *,
    labels: Sequence[tuple[str, str]] = (),
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> LoggedProcess:
    """An agent with no listener at all: it only dials `link`."""
    command = [*prefix, *agent_command(), "serve", "--name", name, "--connect", link, "--pki-dir", str(pki_dir)]
    for key, value in labels:
        command += ["--label", f"{key}={value}"]
    return start_logged(name, command, workdir / f"{name}.log", env)


def cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tlsfleet_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ if env is None else env),
    )


def make_pki(directory: Path, *agents: str) -> Path:
    for command in (
        ["pki", "init", "--dir", str(directory)],
        ["pki", "issue", "coordinator", "coordinator", "--dir", str(directory)],
        *(["pki", "issue", "agent", name, "--dir", str(directory)] for name in agents),
    ):
        done = cli(*command)
        assert done.returncode == 0, done.stderr
    return directory
