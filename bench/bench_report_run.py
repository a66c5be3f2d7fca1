"""One run of a scheduled report of 200 targets across 10 agents on loopback: wall time, coordinator peak
RSS, and how much the history database grows per run.

One lab TLS server (its own process) serves a wildcard certificate for *.bench.test; ten insecure loopback
agents trust the lab root and resolve t0..t199.bench.test to it through their --hosts-file. The report
runs with `tlsfleet report run` (the same pipeline the service uses: probe, diagnose, history, changes,
Markdown/HTML/JSON reports) three times, each a fresh coordinator process measured with wait4().

    .venv/bin/python bench/bench_report_run.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import Lab, Report, install_sigterm_exit, quick_argument_parser, start_target_server, tlsfleet_executable

from tlsfleet.coordinator.lab.agent_process import start_agent, trust_env
from tlsfleet.coordinator.lab.pki import chain_pem, write_pem

AGENTS = 10
TARGETS = 200
RUNS = 3
WALL_TARGET_S = 15.0
RSS_TARGET_MIB = 200.0


def database_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def main() -> None:
    args = quick_argument_parser(__doc__.splitlines()[0]).parse_args()
    install_sigterm_exit()
    report = Report()
    targets = 40 if args.quick else TARGETS
    with Lab(prefix="tlsfleet-bench-report-") as lab:
        leaf = lab.pki.issue_leaf("*.bench.test")
        chain = write_pem(lab.workdir / "wildcard-chain.pem", chain_pem(leaf, lab.pki.intermediate))
        key = write_pem(lab.workdir / "wildcard-key.pem", leaf.key_pem)
        lab.server = start_target_server(chain, key, lab.workdir / "tls-server.log")
        hosts = lab.workdir / "hosts"
        hosts.write_text("".join(f"{lab.server.host} t{i}.bench.test\n" for i in range(targets)))
        env = trust_env(lab.workdir, lab.root_file)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(
                    start_agent, f"bench-{n}", lab.workdir / "agents", env=env, extra_args=["--hosts-file", str(hosts)]
                )
                for n in range(1, AGENTS + 1)
            ]
            lab.agents.extend(f.result() for f in futures)
        (lab.workdir / "inventory.toml").write_text("".join(a.inventory_entry() for a in lab.agents))
        config = lab.workdir / "coordinator.toml"
        names = ", ".join(f'"t{i}.bench.test:{lab.server.port}"' for i in range(targets))
        config.write_text(
            f'[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\n\n'
            f'[storage]\npath = "history.sqlite"\n\n'
            f'[[report]]\nname = "bench"\ntargets = [{names}]\ninterval = "1h"\ndeadline = "120s"\n'
        )
        database = lab.workdir / "history.sqlite"
        report.say(f"{targets} targets x {len(lab.agents)} agents = {targets * len(lab.agents)} probes per run")
        sizes = [0]
        for run in range(1, RUNS + 1):
            started = time.perf_counter()
            process = subprocess.Popen(
                [*tlsfleet_executable(), "report", "run", "bench", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            stdout = process.stdout.read() if process.stdout else b""
            stderr = process.stderr.read() if process.stderr else b""
            _pid, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode not in (0, 1):
                raise SystemExit(f"report run failed ({process.returncode}): {stderr.decode()[-2000:]}")
            report.say(stdout.decode().splitlines()[0])
            sizes.append(database_bytes(database))
            report.figure(f"report_run{run}_wall_s", wall, "s")
            report.figure(f"report_run{run}_coordinator_peak_rss", usage.ru_maxrss / 1024, "MiB")
            report.figure(f"report_run{run}_database_growth", (sizes[-1] - sizes[-2]) / 1024, "KiB")
            if run == RUNS:
                report.target("report_run_wall_s", wall, "<=", WALL_TARGET_S, "s")
                report.target("report_run_coordinator_peak_rss", usage.ru_maxrss / 1024, "<=", RSS_TARGET_MIB, "MiB")
        report.figure("report_database_bytes_after_runs", sizes[-1], "bytes")


if __name__ == "__main__":
    main()
