"""Run every benchmark in sequence, show its output as it comes, then print a summary table.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

Each benchmark runs as its own process with a time limit. Exit status: 0 when every benchmark ran to
the end (missed targets are figures, not failures), 1 when one of them failed or ran out of time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = (
    "bench_startup",
    "bench_agent_rss",
    "bench_cli_latency",
    "bench_local_probe",
    "bench_agent_throughput",
    "bench_diagnosis",
    "bench_store_verdicts",
    "bench_report_run",
    "bench_dialout_swarm",
    "bench_probe_endpoint",
)
TIME_LIMIT_S = 900.0
KILL_GRACE_S = 15.0


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    op: str
    limit: str
    unit: str
    met: bool


@dataclass
class Outcome:
    benchmark: str
    exit_code: int | None = None
    seconds: float = 0.0
    figures: list[tuple[str, str, str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def parse_line(line: str, outcome: Outcome) -> None:
    """Keep figure lines (`name value unit`) and target lines; everything else is for humans."""
    parts = line.split()
    if len(parts) == 7 and parts[0] == "target" and parts[6] in ("met", "missed"):
        outcome.targets.append(Target(parts[1], parts[2], parts[3], parts[4], parts[5], parts[6] == "met"))
    elif len(parts) == 3 and not line.startswith("#") and _is_number(parts[1]):
        outcome.figures.append((parts[0], parts[1], parts[2]))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def run_one(benchmark: str, quick: bool) -> Outcome:
    outcome = Outcome(benchmark)
    command = [sys.executable, str(BENCH_DIR / f"{benchmark}.py"), *(["--quick"] if quick else [])]
    print(f"\n=== {benchmark} ({' '.join(Path(c).name if i < 2 else c for i, c in enumerate(command))})", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=BENCH_DIR.parent)
    timed_out = threading.Event()

    def stop_it() -> None:
        # SIGTERM lets the benchmark stop its own agents and servers; SIGKILL only if it does not.
        timed_out.set()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)

    timer = threading.Timer(TIME_LIMIT_S, stop_it)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            parse_line(line, outcome)
        outcome.exit_code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            stop_it()
    outcome.seconds = time.perf_counter() - started
    if timed_out.is_set():
        print(f"# {benchmark} ran out of its {TIME_LIMIT_S:g} s and was stopped", flush=True)
        outcome.exit_code = outcome.exit_code or -1
    return outcome


def print_summary(outcomes: list[Outcome]) -> None:
    rows = [("benchmark", "metric", "value", "unit", "target", "result")]
    for outcome in outcomes:
        targeted = {t.name: t for t in outcome.targets}
        for name, value, unit in outcome.figures:
            t = targeted.pop(name, None)
            judged = (f"{t.op} {t.limit}", "met" if t.met else "MISSED") if t else ("", "")
            rows.append((outcome.benchmark, name, value, unit, *judged))
        # Targets on a figure printed only beside its target (ratios, for instance).
        for t in targeted.values():
            rows.append((outcome.benchmark, t.name, t.value, t.unit, f"{t.op} {t.limit}", "met" if t.met else "MISSED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("\n=== summary", flush=True)
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print("\n=== targets")
    for outcome in outcomes:
        status = "ok" if outcome.exit_code == 0 else f"FAILED (exit code {outcome.exit_code})"
        print(f"{outcome.benchmark}: {status}, {outcome.seconds:.1f} s")
        for t in outcome.targets:
            print(f"  {t.name} {t.value} {t.unit} (target {t.op} {t.limit}): {'met' if t.met else 'MISSED'}")
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every tlsfleet benchmark and print a summary table.")
    parser.add_argument("--quick", action="store_true", help="short runs of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args()
    outcomes: list[Outcome] = []
    for benchmark in args.only or BENCHMARKS:
        outcomes.append(run_one(benchmark, args.quick))
    print_summary(outcomes)
    return 0 if all(o.exit_code == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
