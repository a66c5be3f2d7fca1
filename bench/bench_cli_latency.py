"""Probe latency through the real CLI, one fresh `tlsfleet probe` process per probe, 1 agent vs 10 agents.

Ten insecure loopback agents and one lab TLS server (its own process) run for the whole benchmark. Two
inventories name the first agent only and all ten; runs alternate between them so drift hits both alike.
Per run we keep the wall time of the CLI process, the slowest vantage's `duration_ms` from its JSON (the
fan-out as seen inside the process) and the CLI process's own CPU time. Wall minus fan-out is what the
process spends starting, importing, building channels and printing.

    .venv/bin/python bench/bench_cli_latency.py [--quick] [--runs N]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    LOOPBACK,
    Lab,
    Report,
    chosen_runs,
    cpu_seconds,
    install_sigterm_exit,
    machine_busy_seconds,
    percentile,
    runs_parser,
    timed_run,
    tlsfleet_executable,
)

AGENTS = 10
RUNS = 30
QUICK_RUNS = 8
WARMUP_RUNS = 2
CLI_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 10.0
RATIO_TARGET = 1.3
MAX_FAILURES_SHOWN = 3
COUNTED_EXIT_CODES = (0, 1)  # verified, or verified with findings; see _problem


@dataclass
class Series:
    """Samples for one fleet size."""

    label: str
    wall_ms: list[float] = field(default_factory=list)
    fanout_ms: list[float] = field(default_factory=list)
    cli_cpu_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_cli_once(target: str, inventory: Path, expected_vantages: int, series: Series) -> None:
    command = [
        *tlsfleet_executable(),
        "probe",
        target,
        "--address",
        LOOPBACK,
        "--inventory",
        str(inventory),
        "--no-local",
        "--json",
        "--timeout",
        str(PROBE_TIMEOUT_S),
    ]
    run = timed_run(command, CLI_TIMEOUT_S)
    if run.done is None:
        series.failures.append(f"the CLI did not finish within {CLI_TIMEOUT_S:g} s and was killed")
        return
    problem = _problem(run.done, expected_vantages)
    if problem:
        series.failures.append(problem)
        return
    vantages = json.loads(run.done.stdout)["vantages"]
    series.wall_ms.append(run.wall_ms)
    series.fanout_ms.append(max(v["duration_ms"] for v in vantages))
    series.cli_cpu_ms.append(run.cpu_ms)


def _problem(done: subprocess.CompletedProcess[str], expected_vantages: int) -> str:
    """Why a run does not count ('' when it does).

    A sample is a probe every vantage answered and whose handshake completed. The exit code may still be
    1: findings about the target (the lab root is absent from certifi and Java stores) are content, not
    latency, so only usage and internal errors (2, 70, ...) disqualify a run by their code."""
    if done.returncode not in COUNTED_EXIT_CODES:
        return f"exit code {done.returncode}: {done.stderr.strip()[-300:]}"
    try:
        vantages = json.loads(done.stdout)["vantages"]
    except (ValueError, KeyError) as error:
        return f"exit code {done.returncode}, unreadable JSON: {error}"
    if len(vantages) != expected_vantages:
        return f"{len(vantages)} vantages answered, {expected_vantages} expected"
    bad = [f"{v['agent']}: {v['state']} {v['error']}" for v in vantages if v["state"] != "ok"]
    for vantage in vantages:
        for address in (vantage.get("result") or {}).get("addresses", []):
            failure = address["handshake"]["failure"]
            if address["connect_failure"] != "none" or failure != "none":
                bad.append(f"{vantage['agent']}@{address['address']}: {address['connect_failure']}/{failure}")
    return "; ".join(bad)


def our_cpu_seconds(lab: Lab) -> float:
    """CPU used so far by this process, the CLI processes it reaped, the agents and the target server."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return reaped + sum(cpu_seconds(pid) for pid in lab.pids())


def report_series(report: Report, series: Series, key: str) -> None:
    runs = len(series.wall_ms)
    if not runs:
        report.say(f"{series.label}: no successful run")
        say_failures(report, series)
        return
    wall50, wall95 = percentile(series.wall_ms, 50), percentile(series.wall_ms, 95)
    fan50, fan95 = percentile(series.fanout_ms, 50), percentile(series.fanout_ms, 95)
    startup50 = percentile([w - f for w, f in zip(series.wall_ms, series.fanout_ms, strict=True)], 50)
    cpu50 = percentile(series.cli_cpu_ms, 50)
    report.say(
        f"{series.label}: CLI wall p50 {wall50:.1f} ms, p95 {wall95:.1f} ms; inside the process (slowest "
        f"vantage) p50 {fan50:.1f} ms, p95 {fan95:.1f} ms; outside the fan-out p50 {startup50:.1f} ms; "
        f"CLI CPU p50 {cpu50:.1f} ms ({runs} runs, {len(series.failures)} failed)"
    )
    report.figure(f"cli_{key}_wall_p50", wall50, "ms")
    report.figure(f"cli_{key}_wall_p95", wall95, "ms")
    report.figure(f"cli_{key}_inprocess_p50", fan50, "ms")
    report.figure(f"cli_{key}_inprocess_p95", fan95, "ms")
    report.figure(f"cli_{key}_outside_fanout_p50", startup50, "ms")
    report.figure(f"cli_{key}_cli_cpu_p50", cpu50, "ms")
    report.figure(f"cli_{key}_failed_runs", len(series.failures), "runs")
    say_failures(report, series)


def say_failures(report: Report, series: Series) -> None:
    for failure, count in Counter(series.failures).most_common(MAX_FAILURES_SHOWN):
        report.say(f"  {count} failed run(s): {failure}")


def main() -> int:
    runs = chosen_runs(runs_parser(__doc__.splitlines()[0], RUNS, QUICK_RUNS, "runs per fleet size"))
    install_sigterm_exit()
    report = Report()
    with Lab() as lab:
        server = lab.start_server()
        agents = lab.start_agents(AGENTS)
        one = lab.write_inventory(agents[:1], "one-agent")
        ten = lab.write_inventory(agents, "ten-agents")
        target = f"localhost:{server.port}"
        report.say(
            f"probe latency through `tlsfleet probe {target} --address {LOOPBACK} --no-local --json`, "
            f"a fresh process per probe, {runs} runs per fleet size, target server pid {server.pid}"
        )
        warmup = Series("warm-up")
        for _ in range(WARMUP_RUNS):
            run_cli_once(target, one, 1, warmup)
            run_cli_once(target, ten, AGENTS, warmup)
        if not warmup.wall_ms:
            report.say("every warm-up run failed, so the CLI cannot probe here; nothing to measure")
            say_failures(report, warmup)
            return 1
        single, fleet = Series("1 agent"), Series(f"{AGENTS} agents")
        ours_before, machine_before, started = our_cpu_seconds(lab), machine_busy_seconds(), time.perf_counter()
        for _ in range(runs):
            run_cli_once(target, one, 1, single)
            run_cli_once(target, ten, AGENTS, fleet)
        elapsed = time.perf_counter() - started
        other = (machine_busy_seconds() - machine_before) - (our_cpu_seconds(lab) - ours_before)
    report.other_work("cli", other, elapsed)
    report_series(report, single, "1agent")
    report_series(report, fleet, f"{AGENTS}agents")
    if not (single.wall_ms and fleet.wall_ms):
        report.say("no ratio: one of the fleet sizes had no successful run")
        return 1
    for stat in (50, 95):
        ratio = percentile(fleet.wall_ms, stat) / percentile(single.wall_ms, stat)
        report.target(f"cli_{AGENTS}agents_vs_1agent_wall_p{stat}_ratio", ratio, "<=", RATIO_TARGET, "x")
    inside = percentile(fleet.fanout_ms, 50) / percentile(single.fanout_ms, 50)
    report.figure(f"cli_{AGENTS}agents_vs_1agent_inprocess_p50_ratio", inside, "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
