"""A history as tlsfleet wrote it before observations were split (SQLite schema 1-3, PostgreSQL 1-2): the
released migrations up to that version, and runs saved the way that version saved them, each target's
whole observation (timings included) compressed in its target_runs row."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tlsfleet.agent.model import TrustStore
from tlsfleet.coordinator.diagnosis.model import Finding
from tlsfleet.coordinator.service.history import key_of, migrations, postgres_migrations
from tlsfleet.coordinator.service.history.rows import (
    canonical,
    compress,
    make_dictionary,
    observation_document,
    served_leaves,
    zip_json,
)
from tlsfleet.coordinator.service.report_model import AgentSnapshot, ReportRun

SQLITE_BEFORE_SPLIT = 3
POSTGRES_BEFORE_SPLIT = 2


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_sqlite(path: str, runs: list[ReportRun], *, version: int = SQLITE_BEFORE_SPLIT) -> list[int]:
    """A new SQLite history at schema `version` holding `runs`; their ids."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA page_size = 16384")
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN")
        connection.execute(migrations._VERSION_TABLE)
        for number, sql in migrations.MIGRATIONS:
            if number <= version:
                for statement in migrations.statements(sql):
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO schema_version VALUES (?, ?)", (number, _sqlite_time(datetime.now(UTC)))
                )
        ids = [_save(connection, "?", run, _sqlite_time, version >= 2) for run in runs]
        connection.execute("COMMIT")
        return ids
    finally:
        connection.close()


def write_postgres(url: str, runs: list[ReportRun], *, version: int = POSTGRES_BEFORE_SPLIT) -> list[int]:
    """The same in the (empty) PostgreSQL schema `url` names."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection, connection.transaction():
        connection.execute(postgres_migrations._VERSION_TABLE)
        for number, sql in postgres_migrations.MIGRATIONS:
            if number <= version:
                connection.execute(sql.encode("utf-8"))
                connection.execute("INSERT INTO schema_version VALUES (%s, now())", (number,))
        return [_save(connection, "%s", run, lambda t: t, True) for run in runs]


def as_kept(run: ReportRun, run_id: int) -> ReportRun:
    """`run` as that layout reads it back: its trust stores' runtime, found_by and declared were not kept."""
    agents = tuple(
        replace(a, stores=tuple(replace(s, runtime="", found_by="", declared=False) for s in a.stores))
        for a in run.agents
    )
    return replace(run, agents=agents, run_id=run_id)


def _save(db: Any, mark: str, run: ReportRun, time: Any, prediction: bool) -> int:
    def execute(sql: str, params: tuple[Any, ...]) -> Any:
        return db.execute(sql.replace("?", mark), params)

    started = time(run.started_at)
    certificates: dict[str, bytes] = {}
    documents = [canonical(observation_document(t, certificates)) for t in run.targets]
    dictionary = make_dictionary(documents[:4])
    dictionary_id = execute(
        "INSERT INTO dictionaries (report, created_at, data) VALUES (?, ?, ?) RETURNING id",
        (run.report, started, zlib.compress(dictionary, 9)),
    ).fetchone()[0]
    run_id = execute(
        "INSERT INTO runs (report, started_at, finished_at, abandoned, note) VALUES (?, ?, ?, ?, ?) RETURNING id",
        (run.report, started, time(run.finished_at), run.abandoned, run.note),
    ).fetchone()[0]
    for sha, der in certificates.items():
        execute(
            "INSERT INTO certificates (sha256, der, last_seen) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            (sha, der, started),
        )
    for position, (target, document) in enumerate(zip(run.targets, documents, strict=True)):
        execute(
            "INSERT INTO target_runs (run_id, position, report, target, duration_ms, dictionary, observation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                position,
                run.report,
                target.target,
                target.duration_ms,
                dictionary_id,
                compress(document, dictionary),
            ),
        )
        for index, finding in enumerate(target.findings):
            row = finding_row(run.report, position, target.target, index, finding)
            columns = (
                "target_position, position, report, target, key, cause, severity, agents, addresses, summary, detail"
            )
            if prediction:
                columns += ", prediction"
            else:
                row = row[:-1]
            execute(f"INSERT INTO findings (run_id, {columns}) VALUES (?{', ?' * len(row)})", (run_id, *row))
    root_sets: dict[str, bytes] = {}
    stores = [store_row(a, p, s, root_sets) for a, agent in enumerate(run.agents) for p, s in enumerate(agent.stores)]
    for digest, blob in root_sets.items():
        execute(
            "INSERT INTO root_sets (digest, roots, last_seen) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING",
            (digest, blob, started),
        )
    for position, agent in enumerate(run.agents):
        execute(
            "INSERT INTO agent_snapshots (run_id, position, name, address, labels, state, error, version, "
            "clock_offset_ms, clock_error_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, *agent_row(position, agent)),
        )
    for row in stores:
        execute(
            "INSERT INTO agent_stores (run_id, agent_position, position, name, kind, path, root_count, fingerprint, "
            "error, root_set) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, *row),
        )
    for (target, agent, address), sha in served_leaves(run).items():
        latest = execute(
            "SELECT id, sha256 FROM leaf_sightings WHERE report = ? AND target = ? AND agent = ? AND address = ? "
            "ORDER BY last_seen DESC, id DESC LIMIT 1",
            (run.report, target, agent, address),
        ).fetchone()
        if latest is not None and latest[1] == sha:
            execute("UPDATE leaf_sightings SET last_seen = ? WHERE id = ?", (started, latest[0]))
        else:
            execute(
                "INSERT INTO leaf_sightings (report, target, agent, address, sha256, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.report, target, agent, address, sha, started, started),
            )
    return int(run_id)


# The rows as that version made them.


def finding_row(report: str, target_position: int, target: str, position: int, f: Finding) -> tuple[Any, ...]:
    detail = {
        "evidence": [[e.field, [list(pair) for pair in e.values]] for e in f.evidence],
        "fix": f.fix,
        "reproduce": list(f.reproduce),
    }
    return (
        target_position,
        position,
        report,
        target,
        key_of(report, target, f),
        f.cause.value,
        str(f.severity),
        json.dumps(list(f.agents)),
        json.dumps(list(f.addresses)),
        f.summary,
        zip_json(detail),
        f.prediction,  # a bool: SQLite keeps it as 1 or 0, PostgreSQL as boolean
    )


def agent_row(position: int, a: AgentSnapshot) -> tuple[Any, ...]:
    return (
        position,
        a.name,
        a.address,
        json.dumps([list(pair) for pair in a.labels]),
        a.state.value,
        a.error,
        a.version,
        a.clock_offset_ms,
        a.clock_error_ms,
    )


def store_row(agent_position: int, position: int, s: TrustStore, root_sets: dict[str, bytes]) -> tuple[Any, ...]:
    digest = None
    if s.roots:
        listed = [[r.sha256, r.subject] for r in s.roots]
        digest = hashlib.sha256(json.dumps(listed, separators=(",", ":")).encode("utf-8")).hexdigest()
        root_sets[digest] = zip_json(listed)
    return (agent_position, position, s.name, s.kind, s.path, s.root_count, s.fingerprint, s.error, digest)
