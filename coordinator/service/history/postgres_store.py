"""The history in a PostgreSQL database, for a team whose coordinators share one history.

The same rows as the SQLite history (what repeats from run to run kept once, rows.py), the same answers
from every method.
One connection serves every thread, behind a lock (callers on asyncio use `asyncio.to_thread`); a
connection the server dropped is replaced at the next call. Reads see one snapshot (REPEATABLE READ);
writes commit whole or not at all. Every call has a deadline: connect_timeout and statement_timeout.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from ..config import redact_url
from ..report_model import ReportRun
from .leases import LeaseSql, SlotLeases
from .observation_parts import SlotPlans, pack_ids
from .postgres_migrations import LOCK_TIMEOUT_MS, migrate
from .rows import (
    DICTIONARY_MAX_AGE,
    KEYED_TABLES,
    LAST_SEEN_STEP,
    MAX_LIST_LIMIT,
    OUTBOX_COLUMNS,
    OUTBOX_ERROR_CHARS,
    EncodedRun,
    SqlRunRows,
    check_claim,
    decode_run,
    encode_run,
    first_seen_certificate,
    first_seen_finding,
    make_dictionary,
    outbox_row,
    parts_of,
    prune_rows,
    run_summaries,
    run_to_compare_id,
)
from .store import HistoryError, OutboxRow, Queued, RunSummary

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_STATEMENT_TIMEOUT_S", "PostgresHistory"]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_STATEMENT_TIMEOUT_S = 60.0
# What the server and a DBA's pg_stat_activity call this client.
APPLICATION_NAME = "tlsfleet-coordinator"
_AUTH_FAILED = ("28P01", "28000")  # invalid_password, invalid_authorization_specification


class PostgresHistory(SlotLeases):
    """`HistoryStore` on a PostgreSQL database named by a libpq URL (postgresql://user@host:port/db);
    the schema is created or brought up to date when the store opens."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        self._where = f"history database {redact_url(url)}"
        self._plans = SlotPlans()  # of the runs saved here: a comparison steps over the targets alike
        if not 0 < connect_timeout_s <= 600 or not 0 < statement_timeout_s <= 3600:
            raise HistoryError("connect timeout must be 0-600 s and statement timeout 0-3600 s, both above 0")
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as error:
            raise HistoryError(
                f"{self._where}: the URL is not accepted ({error}); postgresql://USER@HOST:PORT/DB"
            ) from None
        # The URL's own settings win; these are the defaults that give every call a deadline.
        self._params: dict[str, Any] = {
            "connect_timeout": max(1, math.ceil(connect_timeout_s)),
            "application_name": APPLICATION_NAME,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            **given,
        }
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = int(statement_timeout_s * 1000)
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        connection = self._connect()
        try:
            with self._guard("create or update its schema"):
                migrate(connection, self._where)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    # --- writing --------------------------------------------------------------------------------------

    def save_run(self, run: ReportRun) -> int:
        if run.run_id is not None:
            raise HistoryError(f"run {run.run_id} of report {run.report!r} is already saved; a run is saved once")
        if not run.report:
            raise HistoryError("a run needs its report's name; got an empty name")
        started = _aware(run.started_at, "started_at")
        finished = _aware(run.finished_at, "finished_at")
        stale = started - LAST_SEEN_STEP
        encoded = encode_run(run, lambda sample: self._dictionary(run.report, sample), self._plans)
        with self._write("save a run") as db:
            # Coordinators sharing the history save one run of a report at a time, as SQLite's single
            # writer does: each run's leaf sightings extend the stretches the run before it left.
            db.execute("SELECT pg_advisory_xact_lock(hashtext('tlsfleet save_run'), hashtext(%s))", (run.report,))
            cursor = db.cursor()
            # Shared rows in one order: two coordinators saving at once then wait for each other, never deadlock.
            # Each is inserted when new and its last_seen moved on only when stale (LAST_SEEN_STEP): an update
            # writes a new row version in PostgreSQL, and an unchanged fleet should write none.
            cursor.executemany(
                "INSERT INTO certificates (sha256, der, last_seen) VALUES (%s, %s, %s) ON CONFLICT (sha256) "
                "DO UPDATE SET last_seen = excluded.last_seen WHERE certificates.last_seen < %s",
                [(sha, encoded.certificates[sha], started, stale) for sha in sorted(encoded.certificates)],
            )
            cursor.executemany(
                "INSERT INTO root_sets (digest, roots, last_seen) VALUES (%s, %s, %s) ON CONFLICT (digest) "
                "DO UPDATE SET last_seen = excluded.last_seen WHERE root_sets.last_seen < %s",
                [(digest, encoded.root_sets[digest], started, stale) for digest in sorted(encoded.root_sets)],
            )
            parts = _part_ids(db, run.report, encoded, started, stale)
            head = (run.report, started, finished, run.abandoned, run.note, parts[encoded.agents_part])
            row = db.execute(
                "INSERT INTO runs (report, started_at, finished_at, abandoned, note, agents_part, targets, critical, "
                "warning, info) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (*head, len(encoded.targets), *encoded.counts),
            ).fetchone()
            assert row is not None
            run_id = int(row[0])
            db.execute(
                "INSERT INTO run_parts (run_id, parts, timings) VALUES (%s, %s, %s)",
                (run_id, pack_ids(parts[digest] for _target, digest in encoded.targets), encoded.timings),
            )
            _record_targets(db, run.report, {t: parts[d] for t, d in encoded.targets}, started, stale)
            _record_leaves(db, run.report, encoded.leaves, started, stale)
        return run_id

    def _dictionary(self, report: str, documents: list[bytes]) -> tuple[int | None, bytes]:
        """The report's current preset dictionary, made from `documents` when it has none (or only an old one)."""
        now = datetime.now(UTC)
        with self._write("save a run") as db:
            row = db.execute(
                "SELECT id, data FROM dictionaries WHERE report = %s AND created_at >= %s "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                (report, now - DICTIONARY_MAX_AGE),
            ).fetchone()
            if row is not None:
                return int(row[0]), zlib.decompress(row[1])
            data = make_dictionary(documents)
            made = db.execute(
                "INSERT INTO dictionaries (report, created_at, data) VALUES (%s, %s, %s) RETURNING id",
                (report, now, zlib.compress(data, 9)),
            ).fetchone()
            assert made is not None
            return int(made[0]), data

    def mark_announced(self, key: str, at: datetime, resolved: bool = False) -> None:
        when = _aware(at, "announcement time")
        with self._write("record an announcement") as db:
            _announce(db, key, when, resolved)

    def enqueue(self, items: Sequence[Queued], at: datetime) -> int:
        when = _aware(at, "enqueue time")
        added = 0
        with self._write("queue alerts") as db:
            for item in items:
                for webhook in item.webhooks:
                    added += db.execute(
                        "INSERT INTO outbox (key, kind, webhook, payload, created_at, next_attempt_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key, webhook, kind) DO UPDATE SET "
                        "payload = excluded.payload, created_at = excluded.created_at, "
                        "next_attempt_at = excluded.next_attempt_at, attempts = 0, lease_owner = NULL, "
                        "lease_until = NULL, done_at = NULL, delivered = FALSE, last_status = NULL, last_error = '' "
                        "WHERE outbox.done_at IS NOT NULL",
                        (item.key, item.kind, webhook, item.payload, when, when),
                    ).rowcount
                _announce(db, item.key, when, item.resolved)
        return added

    def claim_outbox(self, owner: str, now: datetime, lease_until: datetime, per_webhook: int) -> list[OutboxRow]:
        check_claim(per_webhook)
        at, until = _aware(now, "claim time"), _aware(lease_until, "lease end")
        with self._write("claim outbox rows") as db:
            # Claims take turns across coordinators: the second sees the first's leases once it commits.
            db.execute("SELECT pg_advisory_xact_lock(hashtext('tlsfleet outbox claim'))")
            rows = db.execute(
                f"""
                WITH due AS (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook ORDER BY id) AS n FROM outbox
                    WHERE done_at IS NULL AND next_attempt_at <= %(at)s
                    AND (lease_until IS NULL OR lease_until < %(at)s)
                )
                UPDATE outbox SET lease_owner = %(owner)s, lease_until = %(until)s
                WHERE id IN (SELECT id FROM due WHERE n <= %(per_webhook)s)
                RETURNING {OUTBOX_COLUMNS}
                """,
                {"at": at, "until": until, "owner": owner, "per_webhook": per_webhook},
            ).fetchall()
        return sorted((outbox_row(r, _utc) for r in rows), key=lambda r: r.row_id)

    def outbox_delivered(self, row_id: int, at: datetime, status: int) -> None:
        with self._write("record a delivery") as db:
            db.execute(
                "UPDATE outbox SET done_at = %s, delivered = TRUE, attempts = attempts + 1, last_status = %s, "
                "last_error = '', lease_owner = NULL, lease_until = NULL WHERE id = %s",
                (_aware(at, "delivery time"), status, row_id),
            )

    def outbox_failed(
        self, row_id: int, at: datetime, status: int | None, error: str, next_attempt_at: datetime | None
    ) -> None:
        when = _aware(at, "attempt time")
        later = None if next_attempt_at is None else _aware(next_attempt_at, "next attempt")
        with self._write("record a failed delivery") as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_status = %(status)s, last_error = %(error)s, "
                "lease_owner = NULL, lease_until = NULL, "
                "next_attempt_at = COALESCE(%(later)s::timestamptz, next_attempt_at), "
                "done_at = CASE WHEN %(later)s::timestamptz IS NULL THEN %(at)s::timestamptz ELSE NULL END "
                "WHERE id = %(id)s",
                {"status": status, "error": error[:OUTBOX_ERROR_CHARS], "later": later, "at": when, "id": row_id},
            )

    def outbox_release(self, row_ids: Sequence[int], next_attempt_at: datetime | None = None) -> None:
        later = None if next_attempt_at is None else _aware(next_attempt_at, "next attempt")
        with self._write("release outbox rows") as db:
            db.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, "
                "next_attempt_at = COALESCE(%s::timestamptz, next_attempt_at) "
                "WHERE id = ANY(%s) AND done_at IS NULL",
                (later, list(row_ids)),
            )

    def outbox_pending(self, webhook: str | None = None, limit: int = 100) -> list[OutboxRow]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise HistoryError(f"limit {limit} is out of range; accepted: 1 to {MAX_LIST_LIMIT}")
        with self._read("list the outbox") as db:
            rows = db.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE done_at IS NULL "
                "AND (%(webhook)s::text IS NULL OR webhook = %(webhook)s) ORDER BY id LIMIT %(limit)s",
                {"webhook": webhook, "limit": limit},
            ).fetchall()
        return [outbox_row(r, _utc) for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        with self._read("count the outbox") as db:
            rows = db.execute("SELECT webhook, COUNT(*) FROM outbox WHERE done_at IS NULL GROUP BY webhook").fetchall()
        return {webhook: int(count) for webhook, count in rows}

    def prune(self, older_than: datetime) -> int:
        cutoff = _aware(older_than, "older_than")
        with self._write("prune old runs") as db:
            removed = prune_rows(db, cutoff, cutoff - LAST_SEEN_STEP, mark="%s")
        return removed

    # --- reading --------------------------------------------------------------------------------------

    def latest_run(
        self, report: str, before_id: int | None = None, *, include_abandoned: bool = True
    ) -> ReportRun | None:
        with self._read("find the latest run") as db:
            row = db.execute(
                "SELECT id FROM runs WHERE report = %(report)s AND (%(before)s::bigint IS NULL OR id < %(before)s) "
                "AND (%(all)s OR NOT abandoned) ORDER BY started_at DESC, id DESC LIMIT 1",
                {"report": report, "before": before_id, "all": include_abandoned},
            ).fetchone()
            return None if row is None else self._load_run(db, int(row[0]))

    def get_run(self, run_id: int) -> ReportRun | None:
        with self._read(f"read run {run_id}") as db:
            return self._load_run(db, run_id)

    def list_runs(self, report: str | None = None, limit: int = 50) -> list[RunSummary]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise HistoryError(f"limit {limit} is out of range; accepted: 1 to {MAX_LIST_LIMIT}")
        with self._read("list runs") as db:
            return run_summaries(db, report, limit, mark="%s", read_time=_utc)

    def first_seen_finding(self, report: str, key: str) -> datetime | None:
        with self._read("look up a finding's first sighting") as db:
            return first_seen_finding(db, report, key, mark="%s", read_time=_utc)

    def first_seen_certificate(
        self, report: str, target: str, agent: str, address: str, sha256: str
    ) -> datetime | None:
        with self._read("look up a certificate's first sighting") as db:
            return first_seen_certificate(db, report, target, agent, address, sha256, mark="%s", read_time=_utc)

    def announced(self, key: str) -> bool:
        with self._read("read announcements") as db:
            row = db.execute("SELECT resolved_at FROM announcements WHERE key = %s", (key,)).fetchone()
        return row is not None and row[0] is None

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                with suppress(psycopg.Error):  # closing a connection the server already dropped
                    connection.close()

    def __enter__(self) -> PostgresHistory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        with self._guard("connect"):
            connection = psycopg.connect(autocommit=True, **self._params)
            try:
                connection.execute("SET TIME ZONE 'UTC'")
                connection.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
            except BaseException:
                connection.close()
                raise
            return connection

    def _db(self) -> psycopg.Connection[Any]:
        if self._connection is None:
            raise HistoryError(f"{self._where} is closed")
        if self._connection.broken:
            # The server went away (restart, failover, idle cut): start over on a new connection.
            with suppress(psycopg.Error):
                self._connection.close()
            self._connection = self._connect()
        return self._connection

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as error:
            raise self._translate(error, action) from error

    @contextmanager
    def _write(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        with self._lock, self._guard(action):
            db = self._db()
            with db.transaction():
                yield db

    @contextmanager
    def _read(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        with self._lock, self._guard(action):
            db = self._db()
            with db.transaction():
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one snapshot
                yield db

    def _translate(self, error: psycopg.Error, action: str) -> HistoryError:
        where = self._where
        reason = _first_line(error)
        user = self._params.get("user") or "the connecting user"
        if isinstance(error, errors.LockNotAvailable):
            return HistoryError(
                f"{where}: another coordinator held the migration lock for {LOCK_TIMEOUT_MS // 1000} s; "
                "wait for it to finish, or stop the one that hangs"
            )
        if isinstance(error, errors.QueryCanceled):
            return HistoryError(
                f"{where}: the server took longer than {self._statement_timeout_ms / 1000:g} s to {action}; "
                "check its load and locks (pg_stat_activity)"
            )
        if isinstance(error, errors.InsufficientPrivilege):
            return HistoryError(
                f"{where}: {user} may not {action} ({reason}); grant it CREATE and USAGE on the schema "
                "and ownership of tlsfleet's tables"
            )
        if isinstance(error, errors.DiskFull):
            return HistoryError(f"{where}: the server's disk is full; free space or shorten [storage] retention_days")
        if error.sqlstate in _AUTH_FAILED or "authentication failed" in reason:
            return HistoryError(
                f"{where}: authentication failed for {user} ({reason}); check the user and password "
                "in [storage] url, PGPASSWORD or ~/.pgpass"
            )
        if error.sqlstate == "3D000" or ("database" in reason and "does not exist" in reason):
            return HistoryError(f"{where} does not exist on the server ({reason}); create it first (createdb)")
        if isinstance(error, psycopg.OperationalError) and action == "connect" and "FATAL" not in reason:
            # No answer from a server at all (a FATAL would be its answer).
            return HistoryError(
                f"{where} is unreachable ({reason}); check that the server runs and that [storage] url "
                f"names its host and port (waited up to {self._connect_timeout_s:g} s)"
            )
        if isinstance(error, psycopg.OperationalError) and self._connection is not None and _lost(self._connection):
            return HistoryError(
                f"{where}: the connection was lost while trying to {action} ({reason}); the next attempt reconnects"
            )
        return HistoryError(f"{where}: cannot {action}: {reason}")

    def run_to_compare(self, report: str, run_id: int) -> ReportRun | None:
        with self._read(f"find the run before run {run_id}") as db:
            found = run_to_compare_id(db, report, run_id, mark="%s")
            return None if found is None else self._load_run(db, found, leave_out=parts_of(self._rows(db, run_id)))

    def _rows(self, db: psycopg.Connection[Any], run_id: int) -> SqlRunRows:
        return SqlRunRows(db, run_id, mark="%s", read_time=_utc, by_keys=lambda table, keys: _by_keys(db, table, keys))

    def _load_run(
        self, db: psycopg.Connection[Any], run_id: int, leave_out: frozenset[int] = frozenset()
    ) -> ReportRun | None:
        return decode_run(self._rows(db, run_id), run_id, self._where, leave_out=leave_out, plans=self._plans)

    # --- slot leases (history/leases.py) ----------------------------------------------------------------

    def _leases(self, db: psycopg.Connection[Any]) -> LeaseSql:
        return LeaseSql(db, mark="%s", write_time=_aware, read_time=_utc)


def _announce(db: psycopg.Connection[Any], key: str, when: datetime, resolved: bool) -> None:
    if resolved:
        db.execute(
            "INSERT INTO announcements (key, announced_at, resolved_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET resolved_at = excluded.resolved_at",
            (key, when, when),
        )
    else:
        db.execute(
            "INSERT INTO announcements (key, announced_at, resolved_at) VALUES (%s, %s, NULL) "
            "ON CONFLICT (key) DO UPDATE SET announced_at = excluded.announced_at, resolved_at = NULL",
            (key, when),
        )


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise HistoryError(f"{what} {value!r} has no time zone; history times must be timezone-aware")
    return value.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _first_line(error: psycopg.Error) -> str:
    text = str(error).strip().removeprefix("connection failed: ")
    return text.splitlines()[0] if text else type(error).__name__


def _lost(connection: psycopg.Connection[Any]) -> bool:
    return connection.broken or connection.closed


def _by_keys(db: psycopg.Connection[Any], table: str, keys: Iterable[str]) -> dict[str, bytes]:
    key, data = KEYED_TABLES[table]
    wanted = sorted(keys)
    if not wanted:
        return {}
    rows = db.execute(f"SELECT {key}, {data} FROM {table} WHERE {key} = ANY(%s)", (wanted,))
    return {str(k): bytes(v) for k, v in rows}


def _part_ids(
    db: psycopg.Connection[Any], report: str, encoded: EncodedRun, at: datetime, stale: datetime
) -> dict[str, int]:
    """The row id of each shared part (by digest), inserted with its finding keys when new, in digest order
    (as the other shared rows)."""
    digests = sorted(encoded.parts)
    known = {
        str(digest): (int(row_id), seen)
        for digest, row_id, seen in db.execute(
            "SELECT digest, id, last_seen FROM shared_parts WHERE digest = ANY(%s)", (digests,)
        )
    }
    targets = {digest: target for target, digest in encoded.targets}
    ids: dict[str, int] = {}
    for digest in digests:
        if digest in known:
            ids[digest] = known[digest][0]
            continue
        # A part names its report, whose saves take turns (save_run's lock): nobody else inserts it now.
        row = db.execute(
            "INSERT INTO shared_parts (digest, dictionary, data, last_seen) VALUES (%s, %s, %s, %s) RETURNING id",
            (digest, encoded.dictionary_id, encoded.parts[digest], at),
        ).fetchone()
        assert row is not None
        ids[digest] = int(row[0])
        db.cursor().executemany(
            "INSERT INTO part_findings (key, part, report, target) VALUES (%s, %s, %s, %s)",
            [(key, ids[digest], report, targets[digest]) for key in sorted(encoded.part_keys.get(digest, ()))],
        )
    old = sorted(row_id for row_id, seen in known.values() if seen < stale)
    if old:
        db.execute("UPDATE shared_parts SET last_seen = %s WHERE id = ANY(%s)", (at, old))
    return ids


def _record_targets(
    db: psycopg.Connection[Any], report: str, parts: dict[str, int], at: datetime, stale: datetime
) -> None:
    """Extend each target's current stretch when its part is unchanged (once its last_seen is stale); start a
    new stretch when it changed."""
    if not parts:
        return
    latest = {
        target: (row_id, part, seen)
        for row_id, target, part, seen in db.execute(
            "SELECT DISTINCT ON (target) id, target, part, last_seen FROM target_sightings WHERE report = %s "
            "ORDER BY target, first_seen DESC, id DESC",
            (report,),
        )
    }
    extend, start = [], []
    for target, part in sorted(parts.items()):
        current = latest.get(target)
        if current is not None and current[1] == part:
            if current[2] < stale:
                extend.append(current[0])
        else:
            start.append((report, target, part, at, at))
    if extend:
        db.execute("UPDATE target_sightings SET last_seen = %s WHERE id = ANY(%s)", (at, extend))
    db.cursor().executemany(
        "INSERT INTO target_sightings (report, target, part, first_seen, last_seen) VALUES (%s, %s, %s, %s, %s)",
        start,
    )


def _record_leaves(
    db: psycopg.Connection[Any], report: str, leaves: dict[tuple[str, str, str], str], at: datetime, stale: datetime
) -> None:
    """Extend each place's current stretch when its leaf is unchanged (once its last_seen is stale); start a
    new stretch when it changed."""
    if not leaves:
        return
    latest = {
        (target, agent, address): (row_id, sha, seen)
        for row_id, target, agent, address, sha, seen in db.execute(
            "SELECT DISTINCT ON (target, agent, address) id, target, agent, address, sha256, last_seen "
            "FROM leaf_sightings WHERE report = %s ORDER BY target, agent, address, last_seen DESC, id DESC",
            (report,),
        )
    }
    extend, start = [], []
    for place, sha in sorted(leaves.items()):
        current = latest.get(place)
        if current is not None and current[1] == sha:
            if current[2] < stale:
                extend.append(current[0])
        else:
            start.append((report, *place, sha, at, at))
    cursor = db.cursor()
    if extend:
        db.execute("UPDATE leaf_sightings SET last_seen = %s WHERE id = ANY(%s)", (at, extend))
    cursor.executemany(
        "INSERT INTO leaf_sightings (report, target, agent, address, sha256, first_seen, last_seen) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        start,
    )
