"""Real `tlsfleet agent serve` processes on loopback, each with its own environment.

An agent announces its port in its first JSON log line (`agent_listening`); we read that, keep the rest
of its log in a file, and stop it by PID with SIGTERM (SIGKILL if it does not go).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class AgentStartError(RuntimeError):
    """The agent process exited or stayed silent instead of listening."""


@dataclass
class AgentProcess:
    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    labels: tuple[tuple[str, str], ...] = ()
    insecure: bool = True
    events: list[dict] = field(default_factory=list)
    drain: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def inventory_entry(self) -> str:
        labels = ", ".join(f'{k} = "{v}"' for k, v in self.labels)
        lines = ["[[agent]]", f'name = "{self.name}"', f'address = "{self.address}"', f"labels = {{ {labels} }}"]
        if self.insecure:
            lines.append("insecure = true")
        return "\n".join(lines) + "\n"

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        if self.drain is not None:
            self.drain.join(STOP_TIMEOUT_S)
        return self.process.returncode

    def log_lines(self) -> list[dict]:
        """Every JSON log line the agent wrote: the one we read to learn its port first, then the others
        (those written before it, such as start-up warnings, included) in their order."""
        lines = list(self.events)
        if self.log_path.exists():
            for raw in self.log_path.read_text(errors="replace").splitlines():
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    lines.append({"event": "unparsed", "line": raw})
        return lines


def tlsfleet_command() -> list[str]:
    """Run the `tlsfleet` CLI with the interpreter that runs us, so tests use the same installation."""
    return [sys.executable, "-m", "tlsfleet.coordinator.cli"]


def agent_command() -> list[str]:
    """Run the agent's own entry point (`tlsfleet-agent`), which loads no coordinator module."""
    return [sys.executable, "-m", "tlsfleet.agent"]


def start_agent(
    name: str,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    labels: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    insecure: bool = True,
    wrapper: Sequence[str] = (),
) -> AgentProcess:
    """Start one agent listening on `host` (any free port) and wait until it says so."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    listen = f"[{host}]:0" if ":" in host else f"{host}:0"
    command = [*wrapper, *agent_command(), "serve", "--name", name, "--listen", listen]
    for key, value in labels:
        command += ["--label", f"{key}={value}"]
    if insecure:
        command.append("--insecure")
    command += list(extra_args)
    process_env = dict(os.environ if env is None else env)
    process_env.setdefault("PYTHONUNBUFFERED", "1")
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=process_env
    )
    try:
        event, before = _wait_for_listening(process, name)
    except BaseException:
        process.kill()
        process.wait()
        raise
    # What it logged before listening (start-up warnings) is kept in the log file too.
    with log_path.open("a") as kept:
        kept.write("".join(f"{line}\n" for line in before))
    # From here on the agent's log goes to a file so the pipe never fills and blocks it.
    drain = _drain_to_file(process, log_path)
    return AgentProcess(
        name=name,
        process=process,
        host=host,
        port=int(event["port"]),
        log_path=log_path,
        labels=tuple(labels),
        insecure=insecure,
        events=[event],
        drain=drain,
    )


def _wait_for_listening(process: subprocess.Popen[bytes], name: str) -> tuple[dict, list[str]]:
    """The `agent_listening` event, and the lines logged before it."""
    assert process.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: list[str] = []
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.1)
        if ready:
            chunk = os.read(process.stderr.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                seen.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "agent_listening":
                    return event, seen[:-1]
        elif process.poll() is not None:
            break
    tail = "\n".join(seen[-10:])
    raise AgentStartError(f"agent {name} did not start listening (exit code {process.poll()}):\n{tail}")


def _drain_to_file(process: subprocess.Popen[bytes], log_path: Path) -> threading.Thread:
    def copy() -> None:
        assert process.stderr is not None
        with process.stderr, log_path.open("ab") as out:
            for line in process.stderr:
                out.write(line)
                out.flush()

    thread = threading.Thread(target=copy, name=f"agent-log-{process.pid}", daemon=True)
    thread.start()
    return thread


def trust_env(workdir: Path, cafile: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose OpenSSL default trust store is exactly `cafile`: the one way two lab agents differ."""
    empty_dir = workdir / "empty-cert-dir"
    empty_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _OTHER_BUNDLE_VARIABLES}
    env.update(SSL_CERT_FILE=str(cafile), SSL_CERT_DIR=str(empty_dir))
    return env


# Bundles other runtimes would use; the lab leaves them unset so a test controls every store an agent sees.
_OTHER_BUNDLE_VARIABLES = frozenset({"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"})
