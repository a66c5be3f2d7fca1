"""The SQLite history's schema, as numbered migrations applied in order when a database is opened.

A migration is never edited once released: a change to the schema is a new (version, SQL) pair at the
end of MIGRATIONS. `schema_version` lists the versions applied; a database whose highest version is
newer than LATEST_VERSION was written by a newer tlsfleet and is refused rather than misread.

Times are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ', which sorts as time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .store import HistoryError

_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    report TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    abandoned INTEGER NOT NULL CHECK (abandoned IN (0, 1)),
    note TEXT NOT NULL
);
CREATE INDEX runs_by_report ON runs (report, started_at);
CREATE INDEX runs_by_start ON runs (started_at);

-- Preset dictionaries for zlib, one per report at a time, made from one of its runs' observations: the
-- JSON structure, agent names and fingerprints every run repeats then cost almost nothing.
CREATE TABLE dictionaries (
    id INTEGER PRIMARY KEY,
    report TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data BLOB NOT NULL  -- zlib-compressed
);
CREATE INDEX dictionaries_by_report ON dictionaries (report, created_at);

-- Each target's raw observation: JSON of recording.observation_to_dict, every certificate replaced by
-- its sha256 (the DER lives once in `certificates`), zlib-compressed with the preset `dictionary`.
CREATE TABLE target_runs (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    report TEXT NOT NULL,
    target TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    dictionary INTEGER REFERENCES dictionaries (id),  -- NULL: compressed without one
    observation BLOB NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX target_runs_by_target ON target_runs (report, target, run_id);
CREATE INDEX target_runs_by_dictionary ON target_runs (dictionary);

CREATE TABLE findings (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    target_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    report TEXT NOT NULL,
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    cause TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    agents TEXT NOT NULL,     -- JSON array, as the diagnosis listed them
    addresses TEXT NOT NULL,  -- JSON array
    summary TEXT NOT NULL,
    detail BLOB NOT NULL      -- zlib-compressed JSON: evidence, fix, reproduce
);
CREATE INDEX findings_by_run ON findings (run_id, key);
CREATE INDEX findings_by_key ON findings (report, key, run_id);

-- last_seen: the start of the latest run that referenced the row; retention drops it with that run.
CREATE TABLE certificates (
    sha256 TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE INDEX certificates_by_last_seen ON certificates (last_seen);

-- A trust store's listed roots, kept once per distinct list: zlib-compressed JSON [[sha256, subject], ...].
CREATE TABLE root_sets (
    digest TEXT PRIMARY KEY,
    roots BLOB NOT NULL,
    last_seen TEXT NOT NULL
);

CREATE TABLE agent_snapshots (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    labels TEXT NOT NULL,  -- JSON [[name, value], ...]
    state TEXT NOT NULL,
    error TEXT NOT NULL,
    version TEXT NOT NULL,
    clock_offset_ms REAL,
    clock_error_ms REAL,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX agent_snapshots_by_name ON agent_snapshots (name, run_id);

CREATE TABLE agent_stores (
    run_id INTEGER NOT NULL,
    agent_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    root_count INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    error TEXT NOT NULL,
    root_set TEXT REFERENCES root_sets (digest),  -- NULL when the agent did not list the roots
    PRIMARY KEY (run_id, agent_position, position),
    FOREIGN KEY (run_id, agent_position) REFERENCES agent_snapshots (run_id, position) ON DELETE CASCADE
);
CREATE INDEX agent_stores_by_root_set ON agent_stores (root_set);

-- Which leaf each agent was served at each address, one row per uninterrupted stretch: "since when".
CREATE TABLE leaf_sightings (
    id INTEGER PRIMARY KEY,
    report TEXT NOT NULL,
    target TEXT NOT NULL,
    agent TEXT NOT NULL,
    address TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE INDEX leaf_sightings_by_place ON leaf_sightings (report, target, agent, address, last_seen);
CREATE INDEX leaf_sightings_by_last_seen ON leaf_sightings (last_seen);

-- Alerts: a finding is announced once, and once more when it resolves.
CREATE TABLE announcements (
    key TEXT PRIMARY KEY,
    announced_at TEXT NOT NULL,
    resolved_at TEXT  -- NULL while the finding stands announced
);
"""

# Finding.prediction: nothing fails because of the finding yet. Findings saved before it are taken as
# failures now, except expiring_soon, which is a prediction by its nature.
_V2 = """
ALTER TABLE findings ADD COLUMN prediction INTEGER NOT NULL DEFAULT 0 CHECK (prediction IN (0, 1));
UPDATE findings SET prediction = 1 WHERE cause = 'expiring_soon';
"""

# The outbox: each alert waits here for each of its webhooks until delivered or given up, so a run only
# writes rows and the service's delivery worker posts them. Leases keep two coordinators off one row.
_V3 = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    webhook TEXT NOT NULL,
    payload TEXT NOT NULL,  -- the alert as JSON
    created_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until TEXT,
    done_at TEXT,  -- delivered or given up; NULL while pending
    delivered INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
    last_status INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (key, webhook, kind)
);
CREATE INDEX outbox_due ON outbox (done_at, webhook, next_attempt_at);
"""

# What an unchanged fleet repeats run after run is kept once (rows.py, observation_parts.py). A shared part
# is a target's observation without its timings, with its findings, or a run's agents without their clock
# estimates. A run keeps its targets' parts and all their timings in one `run_parts` row; which part each
# target had is also kept by stretches of runs in `target_sightings`, for "since when". Runs written before
# keep their target_runs, findings, agent_snapshots and agent_stores rows, and read as they were
# (runs.agents_part NULL).
_V4 = """
CREATE TABLE shared_parts (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,  -- sha256 of the JSON, before compression
    dictionary INTEGER REFERENCES dictionaries (id),  -- NULL: compressed without one
    data BLOB NOT NULL,  -- zlib-compressed JSON, certificates by sha256, timings left out
    last_seen TEXT NOT NULL  -- moved on at most once a day (rows.LAST_SEEN_STEP)
);
CREATE INDEX shared_parts_by_last_seen ON shared_parts (last_seen);

-- The findings of each target's part, by key: for "since when" and for announcements.
CREATE TABLE part_findings (
    key TEXT NOT NULL,
    part INTEGER NOT NULL REFERENCES shared_parts (id) ON DELETE CASCADE,
    report TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (key, part)
) WITHOUT ROWID;
CREATE INDEX part_findings_by_part ON part_findings (part);

-- Which part each target had, one row per uninterrupted stretch of the runs that probed it.
CREATE TABLE target_sightings (
    id INTEGER PRIMARY KEY,
    report TEXT NOT NULL,
    target TEXT NOT NULL,
    part INTEGER NOT NULL REFERENCES shared_parts (id),
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL  -- moved on at most once a day
);
CREATE INDEX target_sightings_by_target ON target_sightings (report, target, first_seen);
CREATE INDEX target_sightings_by_part ON target_sightings (part);

ALTER TABLE runs ADD COLUMN agents_part INTEGER REFERENCES shared_parts (id);
-- The run's targets and findings of each severity; NULL: count its target_runs and findings rows.
ALTER TABLE runs ADD COLUMN targets INTEGER;
ALTER TABLE runs ADD COLUMN critical INTEGER;
ALTER TABLE runs ADD COLUMN warning INTEGER;
ALTER TABLE runs ADD COLUMN info INTEGER;
CREATE INDEX runs_by_agents_part ON runs (agents_part) WHERE agents_part IS NOT NULL;

CREATE TABLE run_parts (
    run_id INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    parts BLOB NOT NULL,  -- each target's part id, in order (observation_parts.pack_ids)
    timings BLOB NOT NULL  -- zlib-compressed, observation_parts.VolatileWriter
);
"""

# Leases of report slots: coordinators sharing the history run each slot once (history/leases.py).
_V5 = """
CREATE TABLE report_leases (
    report TEXT NOT NULL,
    slot TEXT NOT NULL,  -- the slot's scheduled start
    owner TEXT NOT NULL,  -- the coordinator holding it: host:pid:suffix
    claimed_at TEXT NOT NULL,
    renewed_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    done_at TEXT,  -- finished, or recorded as interrupted; NULL while held
    run_id INTEGER,  -- the run saved for the slot (the interrupted run's record when interrupted)
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    PRIMARY KEY (report, slot)
);
CREATE INDEX report_leases_open ON report_leases (expires_at) WHERE done_at IS NULL;
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5))
LATEST_VERSION = MIGRATIONS[-1][0]

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"


def statements(sql: str) -> Iterator[str]:
    """Split a script into complete statements (sqlite3's own test, so semicolons in strings, comments
    and trigger bodies do not cut a statement short)."""
    pieces = sql.split(";")
    pending = ""
    for piece in pieces[:-1]:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _without_comments(pending).strip() != ";":
                yield pending.strip()
            pending = ""
    pending += pieces[-1]
    if _without_comments(pending).strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def schema_version(connection: sqlite3.Connection) -> int:
    """The highest version applied; 0 for a database without the table."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    return int(connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(connection: sqlite3.Connection, path: Path) -> int:
    """Bring the database to LATEST_VERSION in one write transaction (so two processes opening a new
    file at once do not both create it). Returns the version. The connection must be in autocommit
    mode (isolation_level=None)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "schema_version" not in tables:
            raise HistoryError(
                f"{path} is an SQLite database but not a tlsfleet history (it has tables "
                f"{', '.join(sorted(tables)[:5])}); point [storage] path at another file"
            )
        current = schema_version(connection)
        if current > LATEST_VERSION:
            raise HistoryError(
                f"history database {path} has schema version {current}, newer than this tlsfleet knows "
                f"({LATEST_VERSION}); run the tlsfleet that wrote it, or point [storage] path at another file"
            )
        connection.execute(_VERSION_TABLE)
        applied_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements(sql):
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, applied_at))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return LATEST_VERSION
