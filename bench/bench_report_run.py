"""One run of a scheduled report of 200 targets across 10 agents on loopback: wall time, coordinator peak
RSS, and how much the history grows per run, with the history in SQLite and then in PostgreSQL. Growth is
the SQLite file plus its WAL after a checkpoint has moved the WAL's pages into the file, or the sum of the
PostgreSQL tables' pg_total_relation_size (indexes and TOAST included, WAL not); each run also prints
which tables grew and by how much.

One lab TLS server (its own process) serves a wildcard certificate for *.bench.test; ten insecure loopback
agents trust the lab root and resolve t0..t199.bench.test to it through their --hosts-file. The report
runs with `tlsfleet report run` (the same pipeline the service uses: probe, diagnose, history, changes,
Markdown/HTML/JSON reports) three times per backend, each a fresh coordinator process measured with wait4().
Before each run, the yardstick: the same number of raw handshakes (one per target and agent, CERT_REQUIRED,
chain captured, SNI t0..t199 in turn, 200 in flight as the coordinator's default bound) by a fresh process
of its own against the same server, its whole process timed as the report's is; the run is given as a
multiple of it. At the end, the probing alone at its floor: the same handshakes behind ten bare grpc.aio
servers (`grpc_floor.py`), unary calls and then streams, beside a raw loop measured just before.
PostgreSQL is a throwaway lab server (fsync off, as the tests run it); without its binaries or psycopg
that half is skipped with the reason.

    .venv/bin/python bench/bench_report_run.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    Lab,
    RawHandshakes,
    Report,
    install_sigterm_exit,
    quick_argument_parser,
    raw_handshakes,
    start_target_server,
    tlsfleet_executable,
)
from grpc_floor import floor_servers, measure_floor

from tlsfleet.coordinator.lab.agent_process import start_agent, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity

AGENTS = 10
TARGETS = 200
RUNS = 3
WALL_TARGET_S = 15.0
RSS_TARGET_MIB = 150.0
RAW_RATIO_TARGET = 2.0  # the run against as many raw handshakes of the same targets, in the same run
IN_FLIGHT = 200  # the coordinator's default max_probes_in_flight, for the raw loop too


# What a size function returns: the history's bytes in all, and per table (its indexes and TOAST included).
Sizes = tuple[int, dict[str, int]]


def sqlite_sizes(path: Path) -> Sizes:
    """The file plus its WAL after a checkpoint has moved the WAL's pages into the file, and each table's
    pages (dbstat) with its indexes'."""
    if not path.exists():
        return 0, {}
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = dict(connection.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        pages = connection.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        connection.close()
    per_table: dict[str, int] = {}
    for name, size in pages:
        table = tables.get(name, name)
        per_table[table] = per_table.get(table, 0) + int(size)
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()), per_table


@contextlib.contextmanager
def postgres_history(pki: LabPKI) -> Iterator[tuple[str, Callable[[], Sizes]]]:
    """A throwaway PostgreSQL server's URL, and what its tables (indexes and TOAST included) take."""
    import psycopg

    from tlsfleet.coordinator.lab.postgres_server import PostgresCluster

    cluster = PostgresCluster(ServedIdentity.of(pki.issue_leaf("localhost")))
    try:
        cluster.start(ssl=False)
        url = f"postgresql://postgres@{cluster.host}:{cluster.port}/postgres"

        def size() -> Sizes:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
                rows = connection.execute(
                    "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                ).fetchall()
            per_table = {str(name): int(size) for name, size in rows}
            return sum(per_table.values()), per_table

        yield url, size
    finally:
        cluster.remove()


def run_report(
    report: Report, config: Path, backend: str, size: Callable[[], Sizes], raw: Callable[[], RawHandshakes]
) -> dict[str, float]:
    """RUNS runs of the report, each a fresh coordinator after the raw handshakes of the same probes; the last
    run's figures."""
    prefix = "report_run" if backend == "sqlite" else f"report_run_{backend}_"
    total, tables = size()
    sizes = [total]
    last: dict[str, float] = {}
    for run in range(1, RUNS + 1):
        yardstick = raw()
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
            raise SystemExit(f"report run on {backend} failed ({process.returncode}): {stderr.decode()[-2000:]}")
        report.say(f"{backend}: {stdout.decode().splitlines()[0]}")
        before = tables
        total, tables = size()
        sizes.append(total)
        peak = usage.ru_maxrss / 1024
        growth = (sizes[-1] - sizes[-2]) / 1024
        grown = sorted(((n, b - before.get(n, 0)) for n, b in tables.items()), key=lambda item: -item[1])
        report.say(f"{backend}: grown: {', '.join(f'{n} +{b / 1024:.0f} KiB' for n, b in grown if b > 0) or 'nothing'}")
        report.figure(f"{prefix}{run}_wall_s", wall, "s")
        report.say(
            f"{backend}: the same probes as raw handshakes just before: {yardstick.chains} in "
            f"{yardstick.process_s:.2f} s "
            f"(process; {yardstick.elapsed_s:.2f} s in the loop, {yardstick.cpu_s:.2f} s CPU); the run took "
            f"{wall / yardstick.process_s:.2f}x"
        )
        report.figure(f"{prefix}{run}_raw_handshakes_s", yardstick.process_s, "s")
        report.figure(f"{prefix}{run}_coordinator_peak_rss", peak, "MiB")
        report.figure(f"{prefix}{run}_database_growth", growth, "KiB")
        if run == RUNS and backend == "sqlite":
            report.target("report_run_wall_s", wall, "<=", WALL_TARGET_S, "s")
            report.target("report_run_vs_raw_handshakes", wall / yardstick.process_s, "<=", RAW_RATIO_TARGET, "x")
            report.target("report_run_coordinator_peak_rss", peak, "<=", RSS_TARGET_MIB, "MiB")
        last = {"wall": wall, "peak": peak, "growth": growth, "bytes": sizes[-1]}
    report.figure(f"report_{'' if backend == 'sqlite' else backend + '_'}database_bytes_after_runs", sizes[-1], "bytes")
    return last


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
        names = ", ".join(f'"t{i}.bench.test:{lab.server.port}"' for i in range(targets))

        def configure(storage: str) -> Path:
            config = lab.workdir / "coordinator.toml"
            config.write_text(
                f'[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\n\n{storage}\n'
                f'[[report]]\nname = "bench"\ntargets = [{names}]\ninterval = "1h"\ndeadline = "120s"\n'
            )
            return config

        report.say(f"{targets} targets x {len(lab.agents)} agents = {targets * len(lab.agents)} probes per run")
        database = lab.workdir / "history.sqlite"
        server_names = [f"t{i}.bench.test" for i in range(targets)]

        def raw() -> RawHandshakes:
            assert lab.server is not None
            total = targets * len(lab.agents)
            return raw_handshakes(lab.server.port, str(lab.root_file), server_names, total, IN_FLIGHT)

        figures = {
            "sqlite": run_report(
                report, configure('[storage]\npath = "history.sqlite"\n'), "sqlite", lambda: sqlite_sizes(database), raw
            )
        }
        try:
            import psycopg  # noqa: F401

            from tlsfleet.coordinator.lab.postgres_server import PostgresUnavailable
        except ImportError as error:
            report.say(f"postgresql: skipped, psycopg is not installed ({error})")
        else:
            try:
                with postgres_history(lab.pki) as (url, size):
                    storage = f'[storage]\nurl = "{url}"\n'
                    figures["postgresql"] = run_report(report, configure(storage), "postgresql", size, raw)
            except PostgresUnavailable as error:
                report.say(f"postgresql: skipped ({error})")
        report.say(f"run {RUNS} of each, side by side:")
        report.say(f"{'backend':<12}{'wall':>10}{'peak RSS':>12}{'growth':>12}{'history':>12}")
        for backend, f in figures.items():
            report.say(
                f"{backend:<12}{f['wall']:>9.2f}s{f['peak']:>8.1f} MiB{f['growth']:>8.0f} KiB"
                f"{f['bytes'] / 2**20:>8.1f} MiB"
            )
        assert lab.server is not None
        floor_beside_raw(report, str(lab.root_file), lab.server.port, server_names, targets * len(lab.agents))


def floor_beside_raw(report: Report, cafile: str, port: int, names: list[str], total: int) -> None:
    """The probing alone at its floor: as many handshakes behind bare gRPC servers, one per agent, beside the
    raw loop, in-loop times both (no process start-up); the run's start-up and its history and reports come
    on top of this in a report run."""
    yardstick = raw_handshakes(port, cafile, names, total, IN_FLIGHT)
    with floor_servers(cafile, port, AGENTS) as servers:
        runs = asyncio.run(measure_floor(servers.addresses, names, total, IN_FLIGHT, IN_FLIGHT, {}))
    for mode, run in runs.items():
        if run.answered != total:
            raise RuntimeError(f"the gRPC floor answered {run.answered} of {total} handshakes ({mode})")
        seconds = run.elapsed_s
        report.say(
            f"the floor, {total} handshakes behind {AGENTS} bare grpc.aio servers ({mode}), {IN_FLIGHT} in "
            f"flight: {seconds:.2f} s, {seconds / yardstick.elapsed_s:.2f}x the raw loop's {yardstick.elapsed_s:.2f} s"
        )
        report.figure(f"report_floor_{mode}_s", seconds, "s")
        report.figure(f"report_floor_{mode}_vs_raw_loop", seconds / yardstick.elapsed_s, "x")


if __name__ == "__main__":
    main()
