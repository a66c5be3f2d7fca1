"""How a run becomes the history's rows and comes back, for either store: each target's observation as JSON
with its certificates taken out (kept once, by sha256) and compressed with the report's preset dictionary;
findings, agents and trust stores as rows (root lists once per distinct list); the leaves served, for
"since when". No database here: each store runs the SQL in its own dialect.
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
from .store import OUTBOX_MAX_CLAIM, HistoryError, OutboxRow, key_of

MAX_LIST_LIMIT = 10_000
# A new compression dictionary this often, so that it keeps resembling the fleet.
DICTIONARY_MAX_AGE = timedelta(days=7)
DICTIONARY_BYTES = 32 * 1024
DICTIONARY_SAMPLE = 4  # documents the dictionary is made from

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
    targets: list[tuple[int, str, float, bytes]]  # position, target, duration_ms, observation
    findings: list[tuple[Any, ...]]  # target_position, position, report, target, key, ..., prediction
    agents: list[tuple[Any, ...]]  # position, name, address, labels, state, error, version, offset, error_ms
    stores: list[tuple[Any, ...]]  # agent_position, position, name, kind, path, count, fingerprint, error, root_set
    leaves: dict[tuple[str, str, str], str]  # (target, agent, address) -> the leaf's sha256


def encode_run(run: ReportRun, dictionary_for: DictionaryFor) -> EncodedRun:
    """Encoding (JSON, zlib) happens before a store takes its lock: other threads' reads need not wait for it."""
    certificates: dict[str, bytes] = {}
    # Each target's JSON is compressed as soon as it is made: holding a whole fleet's raw JSON at once
    # would set the coordinator's peak memory. The first few documents make the dictionary.
    documents = (observation_json(t, certificates) for t in run.targets)
    sample = list(itertools.islice(documents, DICTIONARY_SAMPLE))
    dictionary_id, dictionary = dictionary_for(sample) if any(sample) else (None, b"")
    compressed = [compress(document, dictionary) for document in itertools.chain(sample, documents)]
    root_sets: dict[str, bytes] = {}
    return EncodedRun(
        certificates=certificates,
        root_sets=root_sets,
        dictionary_id=dictionary_id,
        targets=[
            (position, t.target, float(t.duration_ms), blob)
            for position, (t, blob) in enumerate(zip(run.targets, compressed, strict=True))
        ],
        findings=[
            finding_row(run.report, position, t.target, index, finding)
            for position, t in enumerate(run.targets)
            for index, finding in enumerate(t.findings)
        ],
        agents=[agent_row(position, a) for position, a in enumerate(run.agents)],
        stores=[
            store_row(agent_position, position, s, root_sets)
            for agent_position, a in enumerate(run.agents)
            for position, s in enumerate(a.stores)
        ],
        leaves=served_leaves(run),
    )


class RunRows(Protocol):
    """One stored run's rows, read by a store in one snapshot, in the column order of encode_run's."""

    def head(self) -> tuple[str, datetime, datetime, bool, str] | None:
        """report, started_at, finished_at, abandoned, note; None when there is no such run."""
        ...

    def targets(self) -> list[tuple[int, str, float, int | None, bytes]]:
        """position, target, duration_ms, dictionary id, observation; in position order."""
        ...

    def dictionaries(self) -> Iterable[tuple[int, bytes]]:
        """The run's dictionaries, compressed, by id."""
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

    def head(self) -> tuple[str, datetime, datetime, bool, str] | None:
        row = self._run("SELECT report, started_at, finished_at, abandoned, note FROM runs WHERE id = ?").fetchone()
        return None if row is None else (row[0], self._time(row[1]), self._time(row[2]), bool(row[3]), row[4])

    def targets(self) -> list[tuple[int, str, float, int | None, bytes]]:
        return self._run(
            "SELECT position, target, duration_ms, dictionary, observation FROM target_runs WHERE run_id = ? "
            "ORDER BY position"
        ).fetchall()

    def dictionaries(self) -> Iterable[tuple[int, bytes]]:
        return self._run(
            "SELECT id, data FROM dictionaries WHERE id IN "
            "(SELECT DISTINCT dictionary FROM target_runs WHERE run_id = ?)"
        )

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


def prune_rows(db: Any, cutoff: Any, *, mark: str) -> int:
    """Delete what retention drops, in either store's connection (`mark`: its parameter marker), inside the
    caller's write transaction; returns how many runs went."""

    def run(sql: str) -> Any:
        return db.execute(sql.replace("?", mark), (cutoff,) * sql.count("?"))

    removed = run("DELETE FROM runs WHERE started_at < ?").rowcount
    run("DELETE FROM outbox WHERE done_at IS NOT NULL AND done_at < ?")
    # What only pruned runs referenced: every remaining run started at or after the cutoff, and each row's
    # last_seen is the latest start among the runs that referenced it.
    for table in ("certificates", "root_sets", "leaf_sightings"):
        run(f"DELETE FROM {table} WHERE last_seen < ?")
    # A dictionary made after the cutoff may be about to serve a run being saved: keep those.
    run(
        "DELETE FROM dictionaries WHERE created_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM target_runs t WHERE t.dictionary = dictionaries.id)"
    )
    run(
        "DELETE FROM announcements WHERE (resolved_at IS NOT NULL AND resolved_at < ?) "
        "OR (resolved_at IS NULL AND announced_at < ? AND key NOT IN (SELECT key FROM findings))"
    )
    return max(removed, 0)


# What SqlRunRows.by_keys reads: the key column and the data column of each table fetched by many keys.
KEYED_TABLES = {"certificates": ("sha256", "der"), "root_sets": ("digest", "roots")}


def decode_run(rows: RunRows, run_id: int, where: str) -> ReportRun | None:
    """The run back from its rows; HistoryError names `where` (the database), the run and what is wrong."""
    try:
        return _decode_run(rows, run_id, where)
    except HistoryError:
        raise
    except (ValueError, KeyError, TypeError, zlib.error) as error:
        raise HistoryError(f"{where}: run {run_id} cannot be read back: {type(error).__name__}: {error}") from error


def _decode_run(rows: RunRows, run_id: int, where: str) -> ReportRun | None:
    head = rows.head()
    if head is None:
        return None
    report, started, finished, abandoned, note = head
    blobs = rows.targets()
    dictionaries = {int(i): zlib.decompress(data) for i, data in rows.dictionaries()}
    findings: dict[int, list[Finding]] = {}
    for row in rows.findings():
        findings.setdefault(row[0], []).append(_finding(row, where, run_id))
    # One target's JSON at a time: a fleet's worth of parsed documents at once would set the peak memory.
    certificates: dict[str, bytes] = {}
    stores: dict[str, tuple[TrustStore, ...]] = {}
    targets = []
    for position, target, duration, dictionary, blob in blobs:
        preset = b"" if dictionary is None else dictionaries.get(dictionary, b"")
        document = _unpack(bytes(blob), preset, where, run_id, target)
        missing = set(certificate_refs(document)) - certificates.keys()
        if missing:
            certificates.update(rows.certificates(missing))
        try:
            restore_certificates(document, certificates)
            observation = share_trust_stores(observation_from_dict(document), stores)
        except (RecordingError, KeyError) as error:
            raise HistoryError(f"{where}: run {run_id}, target {target} cannot be read back: {error}") from error
        targets.append(TargetRun(target, observation, tuple(findings.get(position, ())), float(duration)))
    return ReportRun(
        report=report,
        started_at=started,
        finished_at=finished,
        targets=tuple(targets),
        agents=_agents(rows, where, run_id),
        run_id=run_id,
        abandoned=bool(abandoned),
        note=note,
    )


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


def _unpack(blob: bytes, dictionary: bytes, where: str, run_id: int, target: str) -> dict[str, Any]:
    try:
        document = json.loads(decompress(blob, dictionary).decode("utf-8"))
    except (ValueError, zlib.error) as error:
        raise HistoryError(f"{where}: run {run_id}, target {target} is damaged: {error}") from error
    if not isinstance(document, dict):
        raise HistoryError(f"{where}: run {run_id}, target {target} is damaged")
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


def observation_json(target: TargetRun, certificates: dict[str, bytes]) -> bytes:
    """The observation as JSON, each certificate (served chains, AIA fetches) replaced by its sha256 and
    collected into `certificates`."""
    document = observation_to_dict(target.observation)
    for address in _address_dicts(document):
        chain = address.pop("chain", None)
        if chain:
            address["chainSha256"] = [_keep(certificates, der) for der in chain]
        aia = address.get("aia")
        if aia and aia.get("certificate"):
            aia["certificateSha256"] = _keep(certificates, aia.pop("certificate"))
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


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
