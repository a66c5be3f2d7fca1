"""Start-up cost of the CLI: `tlsfleet --help` in a fresh process, with the bare interpreter beside it.

Also timed, for the reader of the CLI latency figures: importing what `tlsfleet probe` needs before it
sends a byte (gRPC, protobuf, cryptography, the fan-out, the JSON output), and the heaviest of those
imports from one `python -X importtime` run. "Cold" means a fresh process; the file cache stays warm.

    .venv/bin/python bench/bench_startup.py [--quick] [--runs N]
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence

from common import Report, chosen_runs, install_sigterm_exit, percentile, runs_parser, tlsfleet_executable

RUNS = 20
QUICK_RUNS = 5
RUN_TIMEOUT_S = 30.0
TARGET_MS = 250.0
TOP_IMPORTS = 8
# What `tlsfleet probe --json` imports before its first RPC.
PROBE_PATH_MODULES = (
    "tlsfleet.coordinator.cli.probe_argv",
    "tlsfleet.coordinator.cli.probe_command",
    "tlsfleet.coordinator.fleet.choose",
    "tlsfleet.coordinator.fleet.fanout",
    "tlsfleet.coordinator.fleet.grpc_vantage",
    "tlsfleet.coordinator.fleet.local_vantage",
    "tlsfleet.coordinator.json_output",
)


def time_runs(command: Sequence[str], runs: int) -> list[float]:
    """Wall milliseconds of `runs` fresh processes running `command`; a failing run stops the benchmark."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT_S, check=False)
        samples.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}: {done.stderr.decode(errors='replace')[-400:]}"
            )
    return samples


def heaviest_imports(modules: Sequence[str]) -> list[tuple[float, str]]:
    """(ms, top-level package) by the self time of all its modules, from one `-X importtime` run."""
    code = "; ".join(f"import {m}" for m in modules)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"; self times add up without overlap.
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        root = parts[2].strip().split(".")[0]
        if root in sys.stdlib_module_names or root.startswith("_"):
            root = "(standard library)"
        costs[root] = costs.get(root, 0.0) + int(parts[0]) / 1000
    return sorted(((ms, name) for name, ms in costs.items()), reverse=True)[:TOP_IMPORTS]


def summarize(report: Report, key: str, label: str, samples: list[float]) -> float:
    low, median, p95 = min(samples), percentile(samples, 50), percentile(samples, 95)
    report.say(f"{label}: min {low:.1f} ms, median {median:.1f} ms, p95 {p95:.1f} ms ({len(samples)} runs)")
    report.figure(f"{key}_min", low, "ms")
    report.figure(f"{key}_median", median, "ms")
    report.figure(f"{key}_p95", p95, "ms")
    return median


def main() -> int:
    runs = chosen_runs(runs_parser(__doc__.splitlines()[0], RUNS, QUICK_RUNS, "fresh processes per command"))
    install_sigterm_exit()
    report = Report()
    cli = tlsfleet_executable()
    time_runs([*cli, "--help"], 1)  # the first run after an install compiles bytecode
    summarize(
        report,
        "startup_python_bare",
        "bare interpreter (python -c pass)",
        time_runs([sys.executable, "-c", "pass"], runs),
    )
    help_median = summarize(report, "startup_cli_help", f"{' '.join(cli)} --help", time_runs([*cli, "--help"], runs))
    probe_imports = "; ".join(f"import {m}" for m in PROBE_PATH_MODULES)
    summarize(
        report,
        "startup_probe_imports",
        "importing the probe path (python -c 'import ...probe_command, grpc_vantage, ...')",
        time_runs([sys.executable, "-c", probe_imports], runs),
    )
    report.say("where the probe-path import time goes (one -X importtime run, self time summed per package):")
    for cost_ms, module in heaviest_imports(PROBE_PATH_MODULES):
        report.say(f"  {cost_ms:7.1f} ms  {module}")
    report.target("startup_cli_help_median", help_median, "<=", TARGET_MS, "ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
