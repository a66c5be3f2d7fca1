"""How a run becomes the history's rows and comes back, for either store. What repeats from run to run is
kept once, as shared parts by the digest of their JSON, compressed with the report's preset dictionary: each
target's observation (certificates taken out, kept once by sha256; timings taken out, observation_parts)
with its findings, and the run's agents (trust stores' root lists once per distinct list). A run is then
its row, naming its agents' part, and one `run_parts` row: its targets' part ids and all their timings.
Which part each target had, and which leaf each agent was served, are kept by stretches of runs, for
"since when". Runs saved before the split keep their target_runs, findings and agent rows and read back as
they were. No database here: each store runs the SQL in its own dialect.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from ....agent.model import RootCertificate, TrustStore
from ...diagnosis.model import Cause, Evidence, Finding, Severity
from ...observation import Observation
from ...outcomes import VantageState
from ...recording import RecordingError, observation_from_dict, observation_to_dict
from ..report_model import AgentSnapshot, ReportRun, TargetRun
from .observation_parts import (
    PartsError,
    SlotPlan,
    SlotPlans,
    VolatileReader,
    VolatileWriter,
    canonical,
    digest_of,
    unpack_ids,
)
from .store import OUTBOX_MAX_CLAIM, HistoryError, OutboxRow, RunSummary, key_of

MAX_LIST_LIMIT = 10_000
# A new compression dictionary this often, so that it keeps resembling the fleet.
DICTIONARY_MAX_AGE = timedelta(days=7)
DICTIONARY_BYTES = 32 * 1024
DICTIONARY_SAMPLE = 4  # documents the dictionary is made from
# Rows shared by runs (certificates, root lists, observations, leaf sightings) have their last_seen moved
# forward only once it is this old, so that runs of an unchanged fleet rewrite none of them; retention
# keeps such rows this much longer than the runs (shared_cutoff).
LAST_SEEN_STEP = timedelta(days=1)

# The outbox's columns as `outbox_row` reads them.
OUTBOX_COLUMNS = "id, key, kind, webhook, payload, attempts, created_at, next_attempt_at, last_error"
# What of a failed attempt's error is kept in the row.
OUTBOX_ERROR_CHARS = 500

# The report's current dictionary (its id and bytes), made from the sample documents when it has none.
DictionaryFor = Callable[[list[bytes]], tuple[int | None, bytes]]


@dataclass(frozen=True)
class EncodedRun:
    """A run as the rows a store inserts (each tuple in its table's column order, without run_id)."""

    certificates: dict[str, bytes]  # sha256 -> DER
    root_sets: dict[str, bytes]  # digest -> compressed root list
    dictionary_id: int | None
    parts: dict[str, bytes]  # digest -> a shared part's JSON, compressed with the dictionary
    part_keys: dict[str, set[str]]  # digest -> the finding keys of a target's part
    agents_part: str  # the digest of the run's agents
    targets: list[tuple[str, str]]  # target, the digest of its part; in the run's order
    timings: bytes  # the run's volatile values (observation_parts.VolatileWriter)
    counts: tuple[int, int, int]  # findings: critical, warning, info
    leaves: dict[tuple[str, str, str], str]  # (target, agent, address) -> the leaf's sha256


def encode_run(run: ReportRun, dictionary_for: DictionaryFor, plans: SlotPlans | None = None) -> EncodedRun:
    """Encoding (JSON, zlib) happens before a store takes its lock: other threads' reads need not wait for it.
    `plans` is given each target part's slot plan."""
    certificates: dict[str, bytes] = {}
    root_sets: dict[str, bytes] = {}
    timings = VolatileWriter()
    part_keys: dict[str, set[str]] = {}
    agents = canonical(agents_part(run, root_sets, timings))

    def target_part(target: TargetRun) -> bytes:
        document = observation_document(target, certificates)
        timings.duration(float(target.duration_ms))
        kinds = timings.take(document)
        findings = [finding_json(f) for f in target.findings]
        times = timings.take_times(findings)
        part = canonical({"report": run.report, "target": target.target, "observation": document, "findings": findings})
        digest = digest_of(part)
        part_keys[digest] = {key_of(run.report, target.target, f) for f in target.findings}
        if plans is not None:
            plans.put(digest, SlotPlan(kinds, times))
        return part

    # Each target's JSON is compressed as soon as it is made: holding a whole fleet's raw JSON at once
    # would set the coordinator's peak memory. The first few documents make the dictionary.
    documents = (target_part(t) for t in run.targets)
    sample = list(itertools.islice(documents, DICTIONARY_SAMPLE))
    dictionary_id, dictionary = dictionary_for(sample or [agents])
    parts = {digest_of(agents): compress(agents, dictionary)}
    digests = []
    for document in itertools.chain(sample, documents):
        digest = digest_of(document)
        if digest not in parts:
            parts[digest] = compress(document, dictionary)
        digests.append(digest)
    severities = [f.severity for t in run.targets for f in t.findings]
    return EncodedRun(
        certificates=certificates,
        root_sets=root_sets,
        dictionary_id=dictionary_id,
        parts=parts,
        part_keys=part_keys,
        agents_part=digest_of(agents),
        targets=[(t.target, digest) for t, digest in zip(run.targets, digests, strict=True)],
        timings=timings.finish(),
        counts=(
            severities.count(Severity.CRITICAL),
            severities.count(Severity.WARNING),
            severities.count(Severity.INFO),
        ),
        leaves=served_leaves(run),
    )


class RunRows(Protocol):
    """One stored run's rows, read by a store in one snapshot, in the column order of encode_run's."""

    def head(self) -> tuple[str, datetime, datetime, bool, str, int | None] | None:
        """report, started_at, finished_at, abandoned, note, the agents' part (None: a run saved before
        the split); None when there is no such run."""
        ...

    def run_parts(self) -> tuple[bytes, bytes] | None:
        """The run's part ids (pack_ids) and timings; None when it has none."""
        ...

    def parts(self, ids: set[int]) -> dict[int, tuple[int | None, bytes]]:
        """Shared parts by id: (dictionary id, compressed JSON)."""
        ...

    def dictionaries(self, ids: set[int]) -> dict[int, bytes]:
        """Dictionaries by id, compressed."""
        ...

    # A run saved before the split: each target's whole observation in its row, findings and agents as rows.

    def targets(self) -> list[tuple[int, str, float, int | None, bytes]]:
        """position, target, duration_ms, dictionary id, observation; in position order."""
        ...

    def findings(self) -> Iterable[tuple[Any, ...]]:
        """target_position, cause, severity, agents, addresses, summary, detail, prediction; in order."""
        ...

    def certificates(self, sha256s: set[str]) -> dict[str, bytes]: ...

    def agents(self) -> Iterable[tuple[Any, ...]]:
        """position, name, address, labels, state, error, version, clock_offset_ms, clock_error_ms; in order."""
        ...

    def stores(self) -> Iterable[tuple[Any, ...]]:
        """agent_position, name, kind, path, root_count, fingerprint, error, root_set; in order."""
        ...

    def root_sets(self, digests: set[str]) -> dict[str, bytes]: ...


class SqlRunRows:
    """RunRows over either store's connection: the stores differ only in how a parameter is marked (`?`,
    `%s`), how a stored time reads back, and how rows are fetched by many keys at once."""

    def __init__(
        self,
        db: Any,  # sqlite3.Connection or psycopg.Connection
        run_id: int,
        *,
        mark: str,
        read_time: Callable[[Any], datetime],
        by_keys: Callable[[str, set[str]], dict[str, bytes]],  # (table, keys) -> {key: data}
    ) -> None:
        self._db, self._id, self._mark, self._time, self._by_keys = db, (run_id,), mark, read_time, by_keys

    def _run(self, sql: str) -> Any:
        return self._db.execute(sql.replace("?", self._mark), self._id)

    def head(self) -> tuple[str, datetime, datetime, bool, str, int | None] | None:
        row = self._run(
            "SELECT report, started_at, finished_at, abandoned, note, agents_part FROM runs WHERE id = ?"
        ).fetchone()
        if row is None:
            return None
        return row[0], self._time(row[1]), self._time(row[2]), bool(row[3]), row[4], row[5]

    def run_parts(self) -> tuple[bytes, bytes] | None:
        row = self._run("SELECT parts, timings FROM run_parts WHERE run_id = ?").fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def parts(self, ids: set[int]) -> dict[int, tuple[int | None, bytes]]:
        return {
            int(i): (d, bytes(data))
            for i, d, data in self._by_ids("SELECT id, dictionary, data FROM shared_parts", ids)
        }

    def dictionaries(self, ids: set[int]) -> dict[int, bytes]:
        return {int(i): bytes(data) for i, data in self._by_ids("SELECT id, data FROM dictionaries", ids)}

    def _by_ids(self, select: str, ids: set[int]) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        listed = sorted(ids)
        for start in range(0, len(listed), IN_CHUNK):
            chunk = listed[start : start + IN_CHUNK]
            found += self._db.execute(f"{select} WHERE id IN ({', '.join([self._mark] * len(chunk))})", chunk)
        return found

    def targets(self) -> list[tuple[int, str, float, int | None, bytes]]:
        return self._run(
            "SELECT position, target, duration_ms, dictionary, observation FROM target_runs WHERE run_id = ? "
            "ORDER BY position"
        ).fetchall()

    def findings(self) -> Iterable[tuple[Any, ...]]:
        return self._run(
            "SELECT target_position, cause, severity, agents, addresses, summary, detail, prediction FROM findings "
            "WHERE run_id = ? ORDER BY target_position, position"
        )

    def certificates(self, sha256s: set[str]) -> dict[str, bytes]:
        return self._by_keys("certificates", sha256s)

    def agents(self) -> Iterable[tuple[Any, ...]]:
        return self._run(
            "SELECT position, name, address, labels, state, error, version, clock_offset_ms, clock_error_ms "
            "FROM agent_snapshots WHERE run_id = ? ORDER BY position"
        )

    def stores(self) -> Iterable[tuple[Any, ...]]:
        return self._run(
            "SELECT agent_position, name, kind, path, root_count, fingerprint, error, root_set FROM agent_stores "
            "WHERE run_id = ? ORDER BY agent_position, position"
        )

    def root_sets(self, digests: set[str]) -> dict[str, bytes]:
        return self._by_keys("root_sets", digests)


def prune_rows(db: Any, cutoff: Any, shared_cutoff: Any, *, mark: str) -> int:
    """Delete what retention drops, in either store's connection (`mark`: its parameter marker), inside the
    caller's write transaction; returns how many runs went. `shared_cutoff` is `cutoff` less LAST_SEEN_STEP,
    in the store's type."""

    def run(sql: str, at: Any = cutoff) -> Any:
        return db.execute(sql.replace("?", mark), (at,) * sql.count("?"))

    removed = run("DELETE FROM runs WHERE started_at < ?").rowcount
    run("DELETE FROM outbox WHERE done_at IS NOT NULL AND done_at < ?")
    run("DELETE FROM report_leases WHERE slot < ?")
    # What only pruned runs referenced: every remaining run started at or after the cutoff, and each row's
    # last_seen is less than LAST_SEEN_STEP before the latest start among the runs that referenced it.
    for table in ("certificates", "root_sets", "target_sightings", "leaf_sightings"):
        run(f"DELETE FROM {table} WHERE last_seen < ?", shared_cutoff)
    # A part's last_seen may lag a newer stretch's of its target by less than LAST_SEEN_STEP: never take a
    # part something still names. Its finding keys go with it.
    run(
        "DELETE FROM shared_parts WHERE last_seen < ? "
        "AND NOT EXISTS (SELECT 1 FROM target_sightings s WHERE s.part = shared_parts.id) "
        "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.agents_part = shared_parts.id)",
        shared_cutoff,
    )
    # A dictionary made after the cutoff may be about to serve a run being saved: keep those.
    run(
        "DELETE FROM dictionaries WHERE created_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM target_runs t WHERE t.dictionary = dictionaries.id) "
        "AND NOT EXISTS (SELECT 1 FROM shared_parts p WHERE p.dictionary = dictionaries.id)"
    )
    run(
        "DELETE FROM announcements WHERE (resolved_at IS NOT NULL AND resolved_at < ?) "
        "OR (resolved_at IS NULL AND announced_at < ? AND key NOT IN (SELECT key FROM findings) "
        "AND key NOT IN (SELECT key FROM part_findings))"
    )
    return max(removed, 0)


def run_summaries(
    db: Any, report: str | None, limit: int, *, mark: str, read_time: Callable[[Any], datetime]
) -> list[RunSummary]:
    """HistoryStore.list_runs in either store's connection (`mark`: its parameter marker). Runs saved before
    their counts were kept on the run are counted from their rows."""
    rows = db.execute(
        """
        SELECT r.id, r.report, r.started_at, r.finished_at, r.abandoned, r.note,
            COALESCE(r.targets, (SELECT COUNT(*) FROM target_runs t WHERE t.run_id = r.id)),
            COALESCE(r.critical, (SELECT COUNT(*) FROM findings f WHERE f.run_id = r.id
                AND f.severity = 'critical')),
            COALESCE(r.warning, (SELECT COUNT(*) FROM findings f WHERE f.run_id = r.id
                AND f.severity = 'warning')),
            COALESCE(r.info, (SELECT COUNT(*) FROM findings f WHERE f.run_id = r.id AND f.severity = 'info'))
        FROM runs r WHERE (CAST(? AS TEXT) IS NULL OR r.report = ?)
        ORDER BY r.started_at DESC, r.id DESC LIMIT ?
        """.replace("?", mark),
        (report, report, limit),
    ).fetchall()
    return [
        RunSummary(
            run_id=int(r[0]),
            report=r[1],
            started_at=read_time(r[2]),
            finished_at=read_time(r[3]),
            abandoned=bool(r[4]),
            note=r[5],
            targets=int(r[6]),
            critical=int(r[7]),
            warning=int(r[8]),
            info=int(r[9]),
        )
        for r in rows
    ]


def first_seen_certificate(
    db: Any,
    report: str,
    target: str,
    agent: str,
    address: str,
    sha256: str,
    *,
    mark: str,
    read_time: Callable[[Any], datetime],
) -> datetime | None:
    """HistoryStore.first_seen_certificate in either store's connection (`mark`: its parameter marker)."""
    row = db.execute(
        "SELECT first_seen FROM leaf_sightings WHERE report = ? AND target = ? AND agent = ? AND address = ? "
        "AND sha256 = ? ORDER BY last_seen DESC, id DESC LIMIT 1".replace("?", mark),
        (report, target, agent, address, sha256.lower()),
    ).fetchone()
    return None if row is None else read_time(row[0])


def first_seen_finding(
    db: Any, report: str, key: str, *, mark: str, read_time: Callable[[Any], datetime]
) -> datetime | None:
    """HistoryStore.first_seen_finding in either store's connection (`mark`: its parameter marker)."""

    def run(sql: str, *params: Any) -> Any:
        return db.execute(sql.replace("?", mark), params)

    # Runs saved before the split: the start of the finding's latest stretch among them, and whether it
    # still stood in the last of them that probed its target.
    before = run(
        """
        WITH last AS (
            SELECT run_id, target FROM findings WHERE report = ? AND key = ? ORDER BY run_id DESC LIMIT 1
        ), gap AS (
            -- the latest run that probed the target without seeing the finding
            SELECT MAX(t.run_id) AS run_id FROM target_runs t, last
            WHERE t.report = ? AND t.target = last.target AND t.run_id < last.run_id
            AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.run_id = t.run_id AND f.key = ?)
        )
        SELECT MIN(r.started_at), (SELECT run_id FROM last) = (
            SELECT MAX(t.run_id) FROM target_runs t, last WHERE t.report = ? AND t.target = last.target
        )
        FROM findings f JOIN runs r ON r.id = f.run_id
        WHERE f.report = ? AND f.key = ? AND f.run_id > COALESCE((SELECT run_id FROM gap), 0)
        """,
        report,
        key,
        report,
        key,
        report,
        report,
        key,
    ).fetchone()
    began = None if before is None or before[0] is None else read_time(before[0])
    # Since: the target's stretches in order, each with or without the finding.
    found = run("SELECT target FROM part_findings WHERE report = ? AND key = ? LIMIT 1", report, key).fetchone()
    if found is None:
        return began
    stretches = run(
        "SELECT s.first_seen, EXISTS (SELECT 1 FROM part_findings k WHERE k.key = ? AND k.part = s.part) "
        "FROM target_sightings s WHERE s.report = ? AND s.target = ? ORDER BY s.first_seen, s.id",
        key,
        report,
        found[0],
    ).fetchall()
    seen = [bool(row[1]) for row in stretches]
    if not any(seen):
        return began
    first = max(i for i, saw in enumerate(seen) if saw)
    while first > 0 and seen[first - 1]:
        first -= 1
    if first == 0 and began is not None and before[1]:
        return began  # the stretch began before the split
    return read_time(stretches[first][0])


def run_to_compare_id(db: Any, report: str, run_id: int, *, mark: str) -> int | None:
    """HistoryStore.run_to_compare's run, in either store's connection (`mark`: its parameter marker): the
    latest of `report` before `run_id` that probed something (a run saved before its count was kept on the
    run counts its rows)."""
    row = db.execute(
        "SELECT id FROM runs WHERE report = ? AND id < ? "
        "AND COALESCE(targets, (SELECT COUNT(*) FROM target_runs t WHERE t.run_id = runs.id)) > 0 "
        "ORDER BY started_at DESC, id DESC LIMIT 1".replace("?", mark),
        (report, run_id),
    ).fetchone()
    return None if row is None else int(row[0])


IN_CHUNK = 500  # ids per IN (...) query, well under either database's limit on parameters

# What SqlRunRows.by_keys reads: the key column and the data column of each table fetched by many keys.
KEYED_TABLES = {"certificates": ("sha256", "der"), "root_sets": ("digest", "roots")}


def decode_run(
    rows: RunRows,
    run_id: int,
    where: str,
    *,
    leave_out: frozenset[int] = frozenset(),
    plans: SlotPlans | None = None,
) -> ReportRun | None:
    """The run back from its rows; HistoryError names `where` (the database), the run and what is wrong.
    Targets whose shared part is one of `leave_out` are left out of the run (see `parts_of`); of those,
    the ones whose slot plan `plans` knows are stepped over without being parsed."""
    try:
        return _decode_run(rows, run_id, where, leave_out, plans)
    except HistoryError:
        raise
    except PartsError as error:
        raise HistoryError(f"{where}: run {run_id} cannot be read back: {error}") from error
    except (ValueError, KeyError, TypeError, zlib.error) as error:
        raise HistoryError(f"{where}: run {run_id} cannot be read back: {type(error).__name__}: {error}") from error


def parts_of(rows: RunRows) -> frozenset[int]:
    """The shared parts of the run's targets. A part holds its report and target with everything they
    showed but the volatile values, so a target of another run with one of these parts compares equal to
    the same target here: a comparison with this run can leave it out (decode_run's `leave_out`)."""
    packed = rows.run_parts()
    return frozenset() if packed is None else frozenset(unpack_ids(packed[0]))


def _decode_run(
    rows: RunRows, run_id: int, where: str, leave_out: frozenset[int], plans: SlotPlans | None
) -> ReportRun | None:
    head = rows.head()
    if head is None:
        return None
    report, started, finished, abandoned, note, agents_part = head
    if agents_part is None:
        targets, agents = _targets_before_split(rows, where, run_id), _agents(rows, where, run_id)
    else:
        targets, agents = _from_parts(rows, int(agents_part), where, run_id, leave_out, plans)
    return ReportRun(
        report=report,
        started_at=started,
        finished_at=finished,
        targets=targets,
        agents=agents,
        run_id=run_id,
        abandoned=bool(abandoned),
        note=note,
    )


def _dictionaries(rows: RunRows, ids: Iterable[int | None]) -> dict[int | None, bytes]:
    found: dict[int | None, bytes] = {None: b""}  # None: compressed without one
    wanted = {i for i in ids if i is not None}
    found.update((i, zlib.decompress(data)) for i, data in rows.dictionaries(wanted).items())
    return found


def _from_parts(
    rows: RunRows, agents_part: int, where: str, run_id: int, leave_out: frozenset[int], plans: SlotPlans | None
) -> tuple[tuple[TargetRun, ...], tuple[AgentSnapshot, ...]]:
    packed = rows.run_parts()
    if packed is None:
        raise HistoryError(f"{where}: run {run_id} has lost its targets and timings")
    ids = unpack_ids(packed[0])
    timings = VolatileReader(packed[1])
    parts = rows.parts({agents_part, *ids})
    dictionaries = _dictionaries(rows, (d for d, _data in parts.values()))

    def shared(part_id: int, what: str) -> bytes:
        if part_id not in parts:
            raise HistoryError(f"{where}: run {run_id}, {what} refers to a missing shared part {part_id}")
        dictionary, blob = parts[part_id]
        return _unzip(blob, dictionaries.get(dictionary, b""), where, run_id, what)

    def part(part_id: int, what: str) -> dict[str, Any]:
        return _parse(shared(part_id, what), where, run_id, what)

    agents_document = part(agents_part, "the agents' part")
    timings.fill(agents_document)
    listed = agents_document["agents"]
    digests = {s[6] for a in listed for s in a["stores"] if s[6] is not None}
    agents = agents_from_json(listed, rows.root_sets(digests) if digests else {}, where, run_id)
    # One target's JSON at a time: a fleet's worth of parsed documents at once would set the peak memory.
    certificates: dict[str, bytes] = {}
    stores: dict[str, tuple[TrustStore, ...]] = {}
    targets = []
    for position, part_id in enumerate(ids):
        what = f"target {position + 1}"
        data = shared(part_id, what)
        duration = timings.duration()
        if part_id in leave_out and plans is not None:
            plan = plans.get(digest_of(data))
            if plan is not None:
                timings.skip(plan)
                continue
        document = _parse(data, where, run_id, what)
        target = str(document["target"])
        observation = document["observation"]
        timings.fill(observation)
        timings.fill_times(document["findings"])
        if part_id in leave_out:
            continue  # its volatile values are read all the same: the next target's follow them
        findings = tuple(finding_from_json(f, where, run_id) for f in document["findings"])
        kept = _observation(rows, observation, certificates, stores, where, run_id, target)
        targets.append(TargetRun(target, kept, findings, duration))
    timings.finish()
    return tuple(targets), agents


def _observation(
    rows: RunRows,
    document: dict[str, Any],
    certificates: dict[str, bytes],
    stores: dict[str, tuple[TrustStore, ...]],
    where: str,
    run_id: int,
    target: str,
) -> Observation:
    missing = set(certificate_refs(document)) - certificates.keys()
    if missing:
        certificates.update(rows.certificates(missing))
    try:
        restore_certificates(document, certificates)
        return share_trust_stores(observation_from_dict(document), stores)
    except (RecordingError, KeyError) as error:
        raise HistoryError(f"{where}: run {run_id}, target {target} cannot be read back: {error}") from error


def _targets_before_split(rows: RunRows, where: str, run_id: int) -> tuple[TargetRun, ...]:
    findings: dict[int, list[Finding]] = {}
    for row in rows.findings():
        findings.setdefault(row[0], []).append(_finding(row, where, run_id))
    listed = rows.targets()
    dictionaries = _dictionaries(rows, (row[3] for row in listed))
    certificates: dict[str, bytes] = {}
    stores: dict[str, tuple[TrustStore, ...]] = {}
    targets = []
    for position, target, duration, dictionary, blob in listed:
        document = _unpack(bytes(blob), dictionaries.get(dictionary, b""), where, run_id, f"target {target}")
        observation = _observation(rows, document, certificates, stores, where, run_id, target)
        targets.append(TargetRun(target, observation, tuple(findings.get(position, ())), float(duration)))
    return tuple(targets)


def _agents(rows: RunRows, where: str, run_id: int) -> tuple[AgentSnapshot, ...]:
    stores: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows.stores():
        stores.setdefault(row[0], []).append(row[1:])
    digests = {row[-1] for listed in stores.values() for row in listed if row[-1] is not None}
    root_sets = rows.root_sets(digests) if digests else {}
    agents = []
    for position, name, address, labels, state, error, version, offset, clock_error in rows.agents():
        agents.append(
            AgentSnapshot(
                name=name,
                address=address,
                labels=tuple((str(k), str(v)) for k, v in json.loads(labels)),
                state=VantageState(state),
                error=error,
                version=version,
                clock_offset_ms=offset,
                clock_error_ms=clock_error,
                stores=tuple(
                    TrustStore(
                        name=s_name,
                        kind=kind,
                        path=path,
                        root_count=int(count),
                        fingerprint=fingerprint,
                        error=s_error,
                        roots=_roots(root_sets, digest, where, run_id),
                    )
                    for s_name, kind, path, count, fingerprint, s_error, digest in stores.get(position, ())
                ),
            )
        )
    return tuple(agents)


def _roots(root_sets: dict[str, bytes], digest: str | None, where: str, run_id: int) -> tuple[RootCertificate, ...]:
    if digest is None:
        return ()
    if digest not in root_sets:
        raise HistoryError(f"{where}: run {run_id} refers to a missing root list {digest}")
    return tuple(RootCertificate(str(sha), str(subject)) for sha, subject in unzip_json(root_sets[digest]))


def _finding(row: tuple[Any, ...], where: str, run_id: int) -> Finding:
    _position, cause, severity, agents, addresses, summary, detail, prediction = row
    try:
        extra = unzip_json(bytes(detail))
        return Finding(
            cause=Cause(cause),
            severity=Severity.parse(severity),
            summary=summary,
            agents=tuple(json.loads(agents)),
            addresses=tuple(json.loads(addresses)),
            evidence=tuple(
                Evidence(str(field), tuple((str(w), str(v)) for w, v in values)) for field, values in extra["evidence"]
            ),
            fix=str(extra["fix"]),
            reproduce=tuple(str(c) for c in extra["reproduce"]),
            prediction=bool(prediction),
        )
    except (ValueError, KeyError, TypeError, zlib.error) as error:
        raise HistoryError(f"{where}: a finding of run {run_id} cannot be read back: {error}") from error


def _unpack(blob: bytes, dictionary: bytes, where: str, run_id: int, what: str) -> dict[str, Any]:
    return _parse(_unzip(blob, dictionary, where, run_id, what), where, run_id, what)


def _unzip(blob: bytes, dictionary: bytes, where: str, run_id: int, what: str) -> bytes:
    try:
        return decompress(blob, dictionary)
    except zlib.error as error:
        raise HistoryError(f"{where}: run {run_id}, {what} is damaged: {error}") from error


def _parse(data: bytes, where: str, run_id: int, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise HistoryError(f"{where}: run {run_id}, {what} is damaged: {error}") from error
    if not isinstance(document, dict):
        raise HistoryError(f"{where}: run {run_id}, {what} is damaged")
    return document


def zip_json(data: Any) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), 9)


def unzip_json(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob).decode("utf-8"))


# --- observations: certificates out to their own table, and back -----------------------------------------


def _outcome_dicts(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from document.get("outcomes", ())
    for variant in document.get("variants", ()):
        yield from variant.get("outcomes", ())


def _address_dicts(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for outcome in _outcome_dicts(document):
        yield from (outcome.get("result") or {}).get("addresses", ())


def _keep(certificates: dict[str, bytes], encoded: str) -> str:
    der = base64.b64decode(encoded)
    sha = hashlib.sha256(der).hexdigest()
    certificates[sha] = der
    return sha


def observation_document(target: TargetRun, certificates: dict[str, bytes]) -> dict[str, Any]:
    """The observation as JSON-ready data, each certificate (served chains, AIA fetches) replaced by its
    sha256 and collected into `certificates`."""
    document = observation_to_dict(target.observation)
    for address in _address_dicts(document):
        chain = address.pop("chain", None)
        if chain:
            address["chainSha256"] = [_keep(certificates, der) for der in chain]
        aia = address.get("aia")
        if aia and aia.get("certificate"):
            aia["certificateSha256"] = _keep(certificates, aia.pop("certificate"))
    return document


def make_dictionary(documents: list[bytes]) -> bytes:
    """zlib looks back 32 KiB at most: the tail of the first documents, which repeat in every later run."""
    return b"".join(documents[:DICTIONARY_SAMPLE])[-DICTIONARY_BYTES:]


def compress(data: bytes, dictionary: bytes) -> bytes:
    compressor = zlib.compressobj(9, zdict=dictionary) if dictionary else zlib.compressobj(9)
    return compressor.compress(data) + compressor.flush()


def decompress(blob: bytes, dictionary: bytes) -> bytes:
    decompressor = zlib.decompressobj(zdict=dictionary) if dictionary else zlib.decompressobj()
    data = decompressor.decompress(blob) + decompressor.flush()
    if not decompressor.eof:
        raise zlib.error("compressed data is truncated")
    return data


def certificate_refs(document: dict[str, Any]) -> Iterator[str]:
    for address in _address_dicts(document):
        yield from address.get("chainSha256", ())
        aia = address.get("aia") or {}
        if "certificateSha256" in aia:
            yield aia["certificateSha256"]


def restore_certificates(document: dict[str, Any], certificates: dict[str, bytes]) -> None:
    def der(sha: str) -> str:
        if sha not in certificates:
            raise KeyError(f"certificate {sha} is missing from the certificates table")
        return base64.b64encode(certificates[sha]).decode("ascii")

    for address in _address_dicts(document):
        if "chainSha256" in address:
            address["chain"] = [der(sha) for sha in address.pop("chainSha256")]
        aia = address.get("aia") or {}
        if "certificateSha256" in aia:
            aia["certificate"] = der(aia.pop("certificateSha256"))


# --- rows -------------------------------------------------------------------------------------------------


def finding_json(f: Finding) -> list[Any]:
    """A finding as it is kept in its target's shared part."""
    evidence = [[e.field, [list(pair) for pair in e.values]] for e in f.evidence]
    reproduce = list(f.reproduce)
    return [
        f.cause.value,
        str(f.severity),
        f.summary,
        list(f.agents),
        list(f.addresses),
        evidence,
        f.fix,
        reproduce,
        f.prediction,
    ]


def finding_from_json(data: list[Any], where: str, run_id: int) -> Finding:
    try:
        cause, severity, summary, agents, addresses, evidence, fix, reproduce, prediction = data
        return Finding(
            cause=Cause(cause),
            severity=Severity.parse(severity),
            summary=str(summary),
            agents=tuple(str(a) for a in agents),
            addresses=tuple(str(a) for a in addresses),
            evidence=tuple(
                Evidence(str(field), tuple((str(w), str(v)) for w, v in values)) for field, values in evidence
            ),
            fix=str(fix),
            reproduce=tuple(str(c) for c in reproduce),
            prediction=bool(prediction),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise HistoryError(f"{where}: a finding of run {run_id} cannot be read back: {error}") from error


def agents_part(run: ReportRun, root_sets: dict[str, bytes], timings: VolatileWriter) -> dict[str, Any]:
    """The run's agents as their shared part (each store's roots by the digest of their list, kept in
    root_sets), their clock estimates taken into `timings`."""
    listed = []
    for a in run.agents:
        stores = []
        for s in a.stores:
            digest = _root_set(s, root_sets)
            identity = [s.name, s.kind, s.path, s.root_count, s.fingerprint, s.error]
            stores.append([*identity, digest, s.runtime, s.found_by, s.declared])
        listed.append(
            {
                "name": a.name,
                "address": a.address,
                "labels": [list(pair) for pair in a.labels],
                "state": a.state.value,
                "error": a.error,
                "version": a.version,
                "clock_offset_ms": a.clock_offset_ms,
                "clock_error_ms": a.clock_error_ms,
                "stores": stores,
            }
        )
    document = {"report": run.report, "agents": listed}
    timings.take(document)
    return document


def agents_from_json(
    listed: list[dict[str, Any]], root_sets: dict[str, bytes], where: str, run_id: int
) -> tuple[AgentSnapshot, ...]:
    return tuple(
        AgentSnapshot(
            name=str(a["name"]),
            address=str(a["address"]),
            labels=tuple((str(k), str(v)) for k, v in a["labels"]),
            state=VantageState(a["state"]),
            error=str(a["error"]),
            version=str(a["version"]),
            clock_offset_ms=a["clock_offset_ms"],
            clock_error_ms=a["clock_error_ms"],
            stores=tuple(
                TrustStore(
                    name=str(name),
                    kind=str(kind),
                    path=str(path),
                    root_count=int(count),
                    fingerprint=str(fingerprint),
                    error=str(error),
                    roots=_roots(root_sets, digest, where, run_id),
                    runtime=str(runtime),
                    found_by=str(found_by),
                    declared=bool(declared),
                )
                for name, kind, path, count, fingerprint, error, digest, runtime, found_by, declared in a["stores"]
            ),
        )
        for a in listed
    )


def _root_set(s: TrustStore, root_sets: dict[str, bytes]) -> str | None:
    if not s.roots:
        return None
    listed = [[r.sha256, r.subject] for r in s.roots]
    digest = hashlib.sha256(json.dumps(listed, separators=(",", ":")).encode("utf-8")).hexdigest()
    root_sets[digest] = zip_json(listed)
    return digest


def served_leaves(run: ReportRun) -> dict[tuple[str, str, str], str]:
    """(target, agent, address) -> the leaf's sha256, for the main probe of every target."""
    leaves: dict[tuple[str, str, str], str] = {}
    for t in run.targets:
        for row in t.observation.rows_with_chain:
            leaves[(t.target, row.agent, row.address.address)] = row.leaf_fingerprint
    return leaves


def share_trust_stores(observation: Observation, seen: dict[str, tuple[TrustStore, ...]]) -> Observation:
    """Every target's result repeats its agent's trust-store list; one shared copy per agent keeps a
    fleet-wide run small in memory."""
    outcomes = []
    for outcome in observation.outcomes:
        result = outcome.result
        if result is not None:
            known = seen.setdefault(outcome.vantage.name, result.trust_stores)
            if known == result.trust_stores:
                outcome = replace(outcome, result=replace(result, trust_stores=known))
        outcomes.append(outcome)
    return replace(observation, outcomes=tuple(outcomes))


def outbox_row(row: tuple[Any, ...], read_time: Callable[[Any], datetime]) -> OutboxRow:
    """A row selected with OUTBOX_COLUMNS."""
    return OutboxRow(
        row_id=int(row[0]),
        key=row[1],
        kind=row[2],
        webhook=row[3],
        payload=row[4],
        attempts=int(row[5]),
        created_at=read_time(row[6]),
        next_attempt_at=read_time(row[7]),
        last_error=row[8],
    )


def check_claim(per_webhook: int) -> None:
    if not 1 <= per_webhook <= OUTBOX_MAX_CLAIM:
        raise HistoryError(f"per_webhook {per_webhook} is out of range; accepted: 1 to {OUTBOX_MAX_CLAIM}")
