"""The history in one SQLite file: WAL, a busy timeout, foreign keys, migrations at open.

What repeats from run to run is kept once (rows.py): certificates by sha256, trust-store root lists, each
target's observation and findings and the run's agents as shared parts. A run of an unchanged fleet adds
its row and one blob of its targets' parts and timings, and rewrites no shared row.
One connection serves every thread, behind a lock: callers on asyncio use `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from ..report_model import ReportRun
from .leases import LeaseSql, SlotLeases
from .migrations import migrate
from .observation_parts import SlotPlans, pack_ids
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

__all__ = ["DEFAULT_BUSY_TIMEOUT_S", "SqliteHistory"]

DEFAULT_BUSY_TIMEOUT_S = 5.0
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_IN_CHUNK = 500  # parameters per IN (...) query, well under SQLite's limit


class SqliteHistory(SlotLeases):
    """`HistoryStore` on an SQLite file, created (with its schema) when absent."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self._path = Path(path).expanduser()
        if busy_timeout_s < 0:
            raise HistoryError(f"busy timeout {busy_timeout_s} s is negative; accepted: 0 or more seconds")
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._plans = SlotPlans()  # of the runs saved here: a comparison steps over the targets alike
        if self._path.is_dir():
            raise HistoryError(f"history database {self._path} is a directory; [storage] path must name a file")
        if not self._path.parent.is_dir():
            raise HistoryError(
                f"history database {self._path}: directory {self._path.parent} does not exist; create it first"
            )
        self._connection: sqlite3.Connection | None = None
        with self._guard("open it"):
            connection = sqlite3.connect(
                self._path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                _configure(connection)
                migrate(connection, self._path)
            except BaseException:
                connection.close()
                raise
            self._connection = connection

    @property
    def path(self) -> Path:
        return self._path

    # --- writing --------------------------------------------------------------------------------------

    def save_run(self, run: ReportRun) -> int:
        if run.run_id is not None:
            raise HistoryError(f"run {run.run_id} of report {run.report!r} is already saved; a run is saved once")
        if not run.report:
            raise HistoryError("a run needs its report's name; got an empty name")
        started = _time(run.started_at, "started_at")
        finished = _time(run.finished_at, "finished_at")
        stale = _time(run.started_at - LAST_SEEN_STEP, "started_at")
        encoded = encode_run(run, lambda sample: self._dictionary(run.report, sample), self._plans)
        with self._write("save a run") as db:
            # Shared rows: inserted when new, last_seen moved on only when stale (LAST_SEEN_STEP).
            db.executemany(
                "INSERT INTO certificates (sha256, der, last_seen) VALUES (?, ?, ?) ON CONFLICT (sha256) "
                "DO UPDATE SET last_seen = excluded.last_seen WHERE certificates.last_seen < ?",
                ((sha, der, started, stale) for sha, der in encoded.certificates.items()),
            )
            db.executemany(
                "INSERT INTO root_sets (digest, roots, last_seen) VALUES (?, ?, ?) ON CONFLICT (digest) "
                "DO UPDATE SET last_seen = excluded.last_seen WHERE root_sets.last_seen < ?",
                ((digest, blob, started, stale) for digest, blob in encoded.root_sets.items()),
            )
            parts = _part_ids(db, run.report, encoded, started, stale)
            head = (run.report, started, finished, int(run.abandoned), run.note, parts[encoded.agents_part])
            run_id = db.execute(
                "INSERT INTO runs (report, started_at, finished_at, abandoned, note, agents_part, targets, critical, "
                "warning, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*head, len(encoded.targets), *encoded.counts),
            ).lastrowid
            assert run_id is not None
            db.execute(
                "INSERT INTO run_parts (run_id, parts, timings) VALUES (?, ?, ?)",
                (run_id, pack_ids(parts[digest] for _target, digest in encoded.targets), encoded.timings),
            )
            _record_targets(db, run.report, {t: parts[d] for t, d in encoded.targets}, started, stale)
            _record_leaves(db, run.report, encoded.leaves, started, stale)
        return int(run_id)

    def _dictionary(self, report: str, documents: list[bytes]) -> tuple[int | None, bytes]:
        """The report's current preset dictionary, made from `documents` when it has none (or only an
        old one: the fleet it describes drifts). Its own transaction, so compressing needs no lock."""
        now = datetime.now(UTC)
        with self._write("save a run") as db:
            row = db.execute(
                "SELECT id, data FROM dictionaries WHERE report = ? AND created_at >= ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                (report, _time(now - DICTIONARY_MAX_AGE, "dictionary age")),
            ).fetchone()
            if row is not None:
                return int(row[0]), zlib.decompress(row[1])
            data = make_dictionary(documents)
            made = db.execute(
                "INSERT INTO dictionaries (report, created_at, data) VALUES (?, ?, ?)",
                (report, _time(now, "now"), zlib.compress(data, 9)),
            ).lastrowid
            assert made is not None
            return int(made), data

    def mark_announced(self, key: str, at: datetime, resolved: bool = False) -> None:
        when = _time(at, "announcement time")
        with self._write("record an announcement") as db:
            _announce(db, key, when, resolved)

    def enqueue(self, items: Sequence[Queued], at: datetime) -> int:
        when = _time(at, "enqueue time")
        added = 0
        with self._write("queue alerts") as db:
            for item in items:
                for webhook in item.webhooks:
                    added += db.execute(
                        "INSERT INTO outbox (key, kind, webhook, payload, created_at, next_attempt_at) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, webhook, kind) DO UPDATE SET "
                        "payload = excluded.payload, created_at = excluded.created_at, "
                        "next_attempt_at = excluded.next_attempt_at, attempts = 0, lease_owner = NULL, "
                        "lease_until = NULL, done_at = NULL, delivered = 0, last_status = NULL, last_error = '' "
                        "WHERE outbox.done_at IS NOT NULL",
                        (item.key, item.kind, webhook, item.payload, when, when),
                    ).rowcount
                _announce(db, item.key, when, item.resolved)
        return added

    def claim_outbox(self, owner: str, now: datetime, lease_until: datetime, per_webhook: int) -> list[OutboxRow]:
        check_claim(per_webhook)
        at, until = _time(now, "claim time"), _time(lease_until, "lease end")
        with self._write("claim outbox rows") as db:
            rows = db.execute(
                f"""
                WITH due AS (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY webhook ORDER BY id) AS n FROM outbox
                    WHERE done_at IS NULL AND next_attempt_at <= :at AND (lease_until IS NULL OR lease_until < :at)
                )
                UPDATE outbox SET lease_owner = :owner, lease_until = :until
                WHERE id IN (SELECT id FROM due WHERE n <= :per_webhook)
                RETURNING {OUTBOX_COLUMNS}
                """,
                {"at": at, "until": until, "owner": owner, "per_webhook": per_webhook},
            ).fetchall()
        return sorted((outbox_row(r, _parse_time) for r in rows), key=lambda r: r.row_id)

    def outbox_delivered(self, row_id: int, at: datetime, status: int) -> None:
        with self._write("record a delivery") as db:
            db.execute(
                "UPDATE outbox SET done_at = ?, delivered = 1, attempts = attempts + 1, last_status = ?, "
                "last_error = '', lease_owner = NULL, lease_until = NULL WHERE id = ?",
                (_time(at, "delivery time"), status, row_id),
            )

    def outbox_failed(
        self, row_id: int, at: datetime, status: int | None, error: str, next_attempt_at: datetime | None
    ) -> None:
        when = _time(at, "attempt time")
        later = None if next_attempt_at is None else _time(next_attempt_at, "next attempt")
        with self._write("record a failed delivery") as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_status = ?, last_error = ?, lease_owner = NULL, "
                "lease_until = NULL, next_attempt_at = COALESCE(?, next_attempt_at), "
                "done_at = CASE WHEN ? IS NULL THEN ? ELSE NULL END WHERE id = ?",
                (status, error[:OUTBOX_ERROR_CHARS], later, later, when, row_id),
            )

    def outbox_release(self, row_ids: Sequence[int], next_attempt_at: datetime | None = None) -> None:
        later = None if next_attempt_at is None else _time(next_attempt_at, "next attempt")
        with self._write("release outbox rows") as db:
            db.executemany(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, "
                "next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ? AND done_at IS NULL",
                ((later, row_id) for row_id in row_ids),
            )

    def outbox_pending(self, webhook: str | None = None, limit: int = 100) -> list[OutboxRow]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise HistoryError(f"limit {limit} is out of range; accepted: 1 to {MAX_LIST_LIMIT}")
        with self._read("list the outbox") as db:
            rows = db.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE done_at IS NULL "
                "AND (:webhook IS NULL OR webhook = :webhook) ORDER BY id LIMIT :limit",
                {"webhook": webhook, "limit": limit},
            ).fetchall()
        return [outbox_row(r, _parse_time) for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        with self._read("count the outbox") as db:
            rows = db.execute("SELECT webhook, COUNT(*) FROM outbox WHERE done_at IS NULL GROUP BY webhook").fetchall()
        return {webhook: int(count) for webhook, count in rows}

    def prune(self, older_than: datetime) -> int:
        cutoff = _time(older_than, "older_than")
        shared_cutoff = _time(older_than - LAST_SEEN_STEP, "older_than")
        with self._write("prune old runs") as db:
            removed = prune_rows(db, cutoff, shared_cutoff, mark="?")
        if removed:
            with self._lock, self._guard("return freed space"):
                # Hands freed pages back to the file system (the schema is created with incremental auto-vacuum).
                # executescript steps the pragma to the end: execute() would free only one page.
                self._db().executescript("PRAGMA incremental_vacuum;")
        return removed

    # --- reading --------------------------------------------------------------------------------------

    def latest_run(
        self, report: str, before_id: int | None = None, *, include_abandoned: bool = True
    ) -> ReportRun | None:
        with self._read("find the latest run") as db:
            row = db.execute(
                "SELECT id FROM runs WHERE report = ? AND (? IS NULL OR id < ?) AND (? OR abandoned = 0) "
                "ORDER BY started_at DESC, id DESC LIMIT 1",
                (report, before_id, before_id, include_abandoned),
            ).fetchone()
            return None if row is None else self._load_run(db, int(row[0]))

    def get_run(self, run_id: int) -> ReportRun | None:
        with self._read(f"read run {run_id}") as db:
            return self._load_run(db, run_id)

    def run_to_compare(self, report: str, run_id: int) -> ReportRun | None:
        with self._read(f"find the run before run {run_id}") as db:
            found = run_to_compare_id(db, report, run_id, mark="?")
            return None if found is None else self._load_run(db, found, leave_out=parts_of(self._rows(db, run_id)))

    def _rows(self, db: sqlite3.Connection, run_id: int) -> SqlRunRows:
        return SqlRunRows(
            db, run_id, mark="?", read_time=_parse_time, by_keys=lambda table, keys: _by_keys(db, table, keys)
        )

    def _load_run(
        self, db: sqlite3.Connection, run_id: int, leave_out: frozenset[int] = frozenset()
    ) -> ReportRun | None:
        return decode_run(
            self._rows(db, run_id), run_id, f"history database {self._path}", leave_out=leave_out, plans=self._plans
        )

    def list_runs(self, report: str | None = None, limit: int = 50) -> list[RunSummary]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise HistoryError(f"limit {limit} is out of range; accepted: 1 to {MAX_LIST_LIMIT}")
        with self._read("list runs") as db:
            return run_summaries(db, report, limit, mark="?", read_time=_parse_time)

    def first_seen_finding(self, report: str, key: str) -> datetime | None:
        with self._read("look up a finding's first sighting") as db:
            return first_seen_finding(db, report, key, mark="?", read_time=_parse_time)

    def first_seen_certificate(
        self, report: str, target: str, agent: str, address: str, sha256: str
    ) -> datetime | None:
        with self._read("look up a certificate's first sighting") as db:
            return first_seen_certificate(db, report, target, agent, address, sha256, mark="?", read_time=_parse_time)

    def announced(self, key: str) -> bool:
        with self._read("read announcements") as db:
            row = db.execute("SELECT resolved_at FROM announcements WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] is None

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is None:
                return
            with suppress(sqlite3.Error):  # only a planner hint: not worth waiting for another writer
                connection.execute("PRAGMA busy_timeout = 100")
                connection.execute("PRAGMA optimize")
            try:
                connection.close()
            except sqlite3.Error as error:
                raise self._translate(error, "close it") from error

    def __enter__(self) -> SqliteHistory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise HistoryError(f"history database {self._path} is closed")
        return self._connection

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise self._translate(error, action) from error

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard(action):
            db = self._db()
            # IMMEDIATE takes the write lock up front, so waiting for another writer honours the busy timeout.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard(action):
            db = self._db()
            db.execute("BEGIN")  # one snapshot for every query of the read
            try:
                yield db
            finally:
                _rollback(db)

    def _translate(self, error: sqlite3.Error, action: str) -> HistoryError:
        code = getattr(error, "sqlite_errorcode", -1) & 0xFF
        where = f"history database {self._path}"
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return HistoryError(
                f"{where} is locked by another process (waited {self._busy_timeout_s:g} s to {action}); "
                "stop the other process using it, or give this coordinator its own [storage] path"
            )
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return HistoryError(
                f"{where} is damaged or not an SQLite database ({error}); move it aside to start a new "
                "history, or restore it from a backup"
            )
        if code == sqlite3.SQLITE_CANTOPEN:
            return HistoryError(f"{where} cannot be opened ({error}); check that its directory is writable")
        if code == sqlite3.SQLITE_READONLY:
            return HistoryError(f"{where} is read-only ({error}); the coordinator needs to write it")
        if code == sqlite3.SQLITE_FULL:
            return HistoryError(f"{where}: the disk is full; free space or shorten [storage] retention_days")
        return HistoryError(f"{where}: cannot {action}: {error}")

    # --- slot leases (history/leases.py) ----------------------------------------------------------------

    def _leases(self, db: sqlite3.Connection) -> LeaseSql:
        return LeaseSql(db, mark="?", write_time=_time, read_time=_parse_time)


def _configure(connection: sqlite3.Connection) -> None:
    # Before the first read, or it is ignored; larger pages waste less around ~1 KiB observation rows.
    connection.execute("PRAGMA page_size = 16384")
    connection.execute("PRAGMA foreign_keys = ON")
    # Reading the page count is the first access to the file: a file that is not a database fails here.
    if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
        # Only settable before the first table exists; lets prune give space back.
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    # WAL: readers never wait for the writer. NORMAL sync is durable across process crashes in WAL mode.
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")


def _announce(db: sqlite3.Connection, key: str, when: str, resolved: bool) -> None:
    if resolved:
        db.execute(
            "INSERT INTO announcements (key, announced_at, resolved_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET resolved_at = excluded.resolved_at",
            (key, when, when),
        )
    else:
        db.execute(
            "INSERT INTO announcements (key, announced_at, resolved_at) VALUES (?, ?, NULL) "
            "ON CONFLICT (key) DO UPDATE SET announced_at = excluded.announced_at, resolved_at = NULL",
            (key, when),
        )


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with suppress(sqlite3.Error):  # the original error is the one worth reporting
            db.execute("ROLLBACK")


def _time(value: datetime, what: str) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise HistoryError(f"{what} {value!r} has no time zone; history times must be timezone-aware")
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _by_keys(db: sqlite3.Connection, table: str, keys: Iterable[str]) -> dict[str, bytes]:
    key, data = KEYED_TABLES[table]
    sql = f"SELECT {key}, {data} FROM {table} WHERE {key} IN ({{}})"
    found: dict[str, bytes] = {}
    keys = sorted(keys)
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        found.update(db.execute(sql.format(", ".join("?" * len(chunk))), chunk).fetchall())
    return found


def _part_ids(db: sqlite3.Connection, report: str, encoded: EncodedRun, at: str, stale: str) -> dict[str, int]:
    """The row id of each shared part (by digest), inserted with its finding keys when new."""
    ids: dict[str, int] = {}
    targets = {digest: target for target, digest in encoded.targets}
    for digest, data in encoded.parts.items():
        row = db.execute("SELECT id, last_seen FROM shared_parts WHERE digest = ?", (digest,)).fetchone()
        if row is not None:
            ids[digest] = int(row[0])
            if row[1] < stale:
                db.execute("UPDATE shared_parts SET last_seen = ? WHERE id = ?", (at, row[0]))
            continue
        made = db.execute(
            "INSERT INTO shared_parts (digest, dictionary, data, last_seen) VALUES (?, ?, ?, ?)",
            (digest, encoded.dictionary_id, data, at),
        ).lastrowid
        assert made is not None
        ids[digest] = int(made)
        db.executemany(
            "INSERT INTO part_findings (key, part, report, target) VALUES (?, ?, ?, ?)",
            ((key, made, report, targets[digest]) for key in sorted(encoded.part_keys.get(digest, ()))),
        )
    return ids


def _record_targets(db: sqlite3.Connection, report: str, parts: dict[str, int], at: str, stale: str) -> None:
    """Extend each target's current stretch when its part is unchanged (once its last_seen is stale); start a
    new stretch when it changed."""
    for target, part in parts.items():
        latest = db.execute(
            "SELECT id, part, last_seen FROM target_sightings WHERE report = ? AND target = ? "
            "ORDER BY first_seen DESC, id DESC LIMIT 1",
            (report, target),
        ).fetchone()
        if latest is not None and latest[1] == part:
            if latest[2] < stale:
                db.execute("UPDATE target_sightings SET last_seen = ? WHERE id = ?", (at, latest[0]))
        else:
            db.execute(
                "INSERT INTO target_sightings (report, target, part, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
                (report, target, part, at, at),
            )


def _record_leaves(
    db: sqlite3.Connection, report: str, leaves: dict[tuple[str, str, str], str], at: str, stale: str
) -> None:
    """Extend each place's current stretch when its leaf is unchanged (once its last_seen is stale); start a
    new stretch when it changed."""
    for (target, agent, address), sha in leaves.items():
        latest = db.execute(
            "SELECT id, sha256 FROM leaf_sightings WHERE report = ? AND target = ? AND agent = ? AND address = ? "
            "ORDER BY last_seen DESC, id DESC LIMIT 1",
            (report, target, agent, address),
        ).fetchone()
        if latest is not None and latest[1] == sha:
            db.execute("UPDATE leaf_sightings SET last_seen = ? WHERE id = ? AND last_seen < ?", (at, latest[0], stale))
        else:
            db.execute(
                "INSERT INTO leaf_sightings (report, target, agent, address, sha256, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (report, target, agent, address, sha, at, at),
            )
