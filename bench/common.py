"""Shared set-up for the benchmarks: a lab target server process, agents, inventories, figures.

Everything listens on 127.0.0.1 and every process started here is stopped by PID when the `Lab` closes,
also on Ctrl-C or SIGTERM.

Output format, one item per line, so `run_all.py` (or any script) can parse it:

    <metric_name> <value> <unit>                                   a figure
    target <metric_name> <value> <op> <limit> <unit> met|missed    a figure beside its target
    # ...                                                          a line for humans
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem

__all__ = [
    "LOOPBACK",
    "Lab",
    "RawHandshakes",
    "Report",
    "TargetServer",
    "cpu_seconds",
    "install_sigterm_exit",
    "machine_busy_seconds",
    "memory_kib",
    "percentile",
    "quick_argument_parser",
    "raw_handshakes",
    "start_target_server",
    "tlsfleet_executable",
]

LOOPBACK = "127.0.0.1"
SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
AGENT_START_PARALLEL = 4
OTHER_WORK_WARNING_CORES = 0.1
RAW_TIMEOUT_S = 300.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Op = Literal["<=", ">="]


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values; give at least one")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is out of range; accepted: 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far, from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses; the fields after the last ')' are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used so far (every core, not idle or iowait), /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    if fields[0] != "cpu":
        raise RuntimeError("/proc/stat does not start with the aggregate 'cpu' line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in KiB, from /proc/PID/status."""
    wanted = {"VmRSS", "VmHWM"}
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            found[key] = int(rest.split()[0])
    missing = wanted - set(found)
    if missing:
        raise RuntimeError(f"/proc/{pid}/status has no {', '.join(sorted(missing))}")
    return found


def tlsfleet_executable() -> list[str]:
    """The installed `tlsfleet` console script beside our interpreter, as a user runs it."""
    script = Path(sys.executable).parent / "tlsfleet"
    return [str(script)] if script.exists() else tlsfleet_command()


# The yardstick for probes: a raw asyncio loop in a process of its own (so that it uses a core the way an
# agent does), CERT_REQUIRED handshakes with the served chain captured, names taken in turn for SNI and the
# name check. Prints: chains captured, seconds inside the loop, CPU seconds of the process.
RAW_LOOP = """
import asyncio, ssl, sys, time
host, port, cafile, total, in_flight = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
names = sys.argv[6].split(",")
context = ssl.create_default_context(cafile=cafile)
remaining, chains = total, 0

async def one(name):
    global chains
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=name)
    if writer.get_extra_info("ssl_object")._sslobj.get_unverified_chain():
        chains += 1
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass

async def worker():
    global remaining
    while remaining > 0:
        remaining -= 1
        await one(names[remaining % len(names)])

async def main():
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(in_flight, total))))
    return time.perf_counter() - started

elapsed = asyncio.run(main())
print(f"{chains} {elapsed} {time.process_time()}")
"""


@dataclass(frozen=True)
class RawHandshakes:
    chains: int  # handshakes that completed with a chain captured
    elapsed_s: float  # inside the loop
    cpu_s: float  # the process's CPU
    process_s: float  # the whole process, interpreter start-up included


def raw_handshakes(port: int, cafile: str, names: Sequence[str], total: int, in_flight: int) -> RawHandshakes:
    """`total` raw handshakes against 127.0.0.1:`port`, `in_flight` at once, SNI from `names` in turn."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RAW_LOOP, LOOPBACK, str(port), cafile, str(total), str(in_flight), ",".join(names)],
        capture_output=True,
        text=True,
        timeout=RAW_TIMEOUT_S,
        check=True,
    )
    process_s = time.perf_counter() - started
    chains, elapsed, cpu = done.stdout.split()
    return RawHandshakes(int(chains), float(elapsed), float(cpu), process_s)


def quick_argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short run: fewer repetitions, same figures")
    return parser


def runs_parser(description: str, default: int, quick: int, what: str) -> argparse.ArgumentParser:
    """`quick_argument_parser` with `--runs N` (1-1000) of `what`; read it with `chosen_runs`."""
    parser = quick_argument_parser(description)
    parser.add_argument("--runs", type=int, help=f"{what} (default {default}, {quick} with --quick)")
    parser.set_defaults(default_runs=default, quick_runs=quick)
    return parser


def chosen_runs(parser: argparse.ArgumentParser) -> int:
    """The runs asked for on the command line of a `runs_parser`; a value out of range ends the program."""
    args = parser.parse_args()
    runs = args.runs or (args.quick_runs if args.quick else args.default_runs)
    if not 1 <= runs <= 1000:
        parser.error(f"--runs {runs} is out of range; accepted: 1-1000")
    return int(runs)


@dataclass(frozen=True)
class TimedRun:
    done: subprocess.CompletedProcess[str] | None  # None: killed at the timeout
    wall_ms: float
    cpu_ms: float  # the child's user and system time


def timed_run(command: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> TimedRun:
    """One fresh process, timed, its CPU taken from RUSAGE_CHILDREN."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done: subprocess.CompletedProcess[str] | None = subprocess.run(
            list(command), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        done = None
    wall_ms = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return TimedRun(done, wall_ms, cpu * 1000)


def install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop what the benchmark started."""

    def leave(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, leave)


class Report:
    """Prints figures and targets in the parseable form described in this module's docstring."""

    def __init__(self) -> None:
        # Other work on the machine skews every figure; say how busy it was when we began.
        self.say(f"load average before this benchmark (1, 5, 15 min): {' '.join(_loadavg())}; {os.cpu_count()} cores")

    @staticmethod
    def say(text: str) -> None:
        for line in text.splitlines() or [""]:
            print(f"# {line}", flush=True)

    def other_work(self, prefix: str, other_cpu_s: float, elapsed_s: float) -> None:
        """Report CPU that processes outside the benchmark used while it ran: a figure is only as good as that."""
        cores = max(other_cpu_s, 0.0) / elapsed_s
        self.figure(f"{prefix}_other_processes_cores", cores, "cores")
        if cores > OTHER_WORK_WARNING_CORES:
            self.say(
                f"WARNING: other processes used {cores:.2f} cores during this run; the figures are skewed, "
                "run again on a quiet machine"
            )

    @staticmethod
    def figure(name: str, value: float, unit: str) -> None:
        if any(c.isspace() for c in name + unit):
            raise ValueError(f"metric name and unit must not contain spaces: {name!r} {unit!r}")
        print(f"{name} {_number(value)} {unit}", flush=True)

    def target(self, name: str, value: float, op: Op, limit: float, unit: str) -> bool:
        met = value <= limit if op == "<=" else value >= limit
        verdict = "met" if met else "missed"
        print(f"target {name} {_number(value)} {op} {_number(limit)} {unit} {verdict}", flush=True)
        return met


def _loadavg() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return ["unknown"]


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


@dataclass
class TargetServer:
    """The lab TLS server running as its own process (`python -m tlsfleet.coordinator.lab.tls_server`)."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(SERVER_STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_target_server(chain_file: Path, key_file: Path, log_file: Path) -> TargetServer:
    """Start the lab TLS server on a free loopback port and wait for its `LISTENING host port` line."""
    command = [
        sys.executable,
        "-m",
        "tlsfleet.coordinator.lab.tls_server",
        "--cert-chain",
        str(chain_file),
        "--key",
        str(key_file),
        "--listen",
        f"{LOOPBACK}:0",
    ]
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    try:
        host, port = _read_listening(process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return TargetServer(process=process, host=host, port=port)


def _read_listening(process: subprocess.Popen[bytes]) -> tuple[str, int]:
    assert process.stdout is not None
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "LISTENING":
                    return parts[1], int(parts[2])
        elif process.poll() is not None:
            break
    raise RuntimeError(
        f"the lab TLS server did not print LISTENING within {SERVER_START_TIMEOUT_S:g} s "
        f"(exit code {process.poll()}); its output: {buffer.decode(errors='replace')!r}"
    )


class Lab:
    """A temporary directory with a lab PKI, one target server process and any number of agents.

    The server serves a leaf for `localhost` and 127.0.0.1 (leaf + intermediate); agents started with
    `trusting=True` have the lab root as their OpenSSL default store, so their native verdict is `ok`.
    `close()` stops every process by PID and removes the directory.
    """

    def __init__(self, prefix: str = "tlsfleet-bench-") -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.pki = LabPKI("Bench")
        leaf = self.pki.issue_leaf("localhost", LOOPBACK)
        self.chain_file = write_pem(self.workdir / "chain.pem", chain_pem(leaf, self.pki.intermediate))
        self.key_file = write_pem(self.workdir / "key.pem", leaf.key_pem)
        self.root_file = write_pem(self.workdir / "root.pem", self.pki.root_pem())
        self.server: TargetServer | None = None
        self.agents: list[AgentProcess] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start_server(self) -> TargetServer:
        if self.server is not None:
            raise RuntimeError("this lab already runs a target server")
        self.server = start_target_server(self.chain_file, self.key_file, self.workdir / "tls-server.log")
        return self.server

    def start_agents(
        self,
        count: int,
        *,
        trusting: bool = True,
        prefix: str = "bench",
        extra_args: Sequence[str] = (),
        insecure: bool = True,
    ) -> list[AgentProcess]:
        """Start `count` loopback agents (insecure unless told: then `extra_args` names their fleet PKI), a few at
        a time; all of them or none are left running."""
        if count < 1:
            raise ValueError(f"agent count {count} is not accepted; at least 1")
        first = len(self.agents)
        names = [f"{prefix}-{first + i + 1}" for i in range(count)]
        env = trust_env(self.workdir, self.root_file) if trusting else None
        agent_dir = self.workdir / "agents"
        started: list[AgentProcess] = []
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=AGENT_START_PARALLEL) as pool:
            futures = [
                pool.submit(
                    start_agent,
                    name,
                    agent_dir,
                    env=env,
                    labels=[("role", "bench")],
                    extra_args=extra_args,
                    insecure=insecure,
                )
                for name in names
            ]
            for future in futures:
                try:
                    started.append(future.result())
                except BaseException as error:
                    errors.append(error)
        if errors:
            for agent in started:
                agent.stop()
            raise errors[0]
        self.agents.extend(started)
        return started

    def write_inventory(self, agents: Sequence[AgentProcess], name: str) -> Path:
        path = self.workdir / f"{name}.toml"
        path.write_text("\n".join(a.inventory_entry() for a in agents))
        return path

    def pids(self) -> Iterator[int]:
        if self.server is not None:
            yield self.server.pid
        for agent in self.agents:
            yield agent.pid

    def close(self) -> None:
        problems: list[str] = []
        for agent in self.agents:
            try:
                agent.stop()
            except Exception as error:  # keep stopping the others
                problems.append(f"agent {agent.name} (pid {agent.pid}): {error}")
        self.agents.clear()
        if self.server is not None:
            try:
                self.server.stop()
            except Exception as error:
                problems.append(f"target server (pid {self.server.pid}): {error}")
            self.server = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if problems:
            print("# cleanup problems: " + "; ".join(problems), file=sys.stderr, flush=True)


def wait_for_event(log_path: Path, event: str, process: subprocess.Popen[bytes], timeout: float) -> dict:
    """The first JSON log line of `event` that a coordinator writes to `log_path`; RuntimeError if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in log_path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("event") == event:
                return line
        if process.poll() is not None:
            raise RuntimeError(f"the coordinator exited ({process.returncode}): {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"no {event} from the coordinator within {timeout:g} s")


def make_fleet_pki(directory: Path, names: Sequence[str]) -> None:
    """A fleet CA in `directory`, the certificate of coordinator `coordinator` and one per agent name."""
    from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue

    init_fleet_ca(directory)
    issue(directory, "coordinator", "coordinator")
    for name in names:
        issue(directory, "agent", name)


def start_service(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`tlsfleet coordinator serve --config CONFIG`, its JSON log lines appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tlsfleet.coordinator.cli", "coordinator", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
