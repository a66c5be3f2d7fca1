"""The history store's interface: what the report runner, the report writers and alerts need from it.

SQLite serves by default (`sqlite_store.SqliteHistory`), PostgreSQL when `[storage]` names one
(`postgres_store.PostgresHistory`); `open_history` opens the one configured.
Stores are synchronous; asyncio callers go through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ....agent.errors import UsageError
from ...diagnosis.model import Finding, Severity
from ..report_model import ChangeKind, ReportRun

__all__ = [
    "FirstSeen",
    "HistoryError",
    "HistoryStore",
    "OutboxRow",
    "Queued",
    "RunSummary",
    "SeenQuery",
    "SlotLease",
    "finding_key",
    "first_seen_lookup",
    "key_of",
]


class HistoryError(UsageError):
    """The history cannot be read or written; the message names the database and what to do."""


@dataclass(frozen=True)
class RunSummary:
    """One stored run, without its results: enough for a list of runs."""

    run_id: int
    report: str
    started_at: datetime
    finished_at: datetime
    abandoned: bool
    targets: int
    critical: int = 0
    warning: int = 0
    info: int = 0
    note: str = ""

    def count(self, severity: Severity) -> int:
        """How many findings of this severity the run had."""
        return {Severity.CRITICAL: self.critical, Severity.WARNING: self.warning, Severity.INFO: self.info}[severity]


def finding_key(report: str, target: str, cause: str, agents: Iterable[str], addresses: Iterable[str] = ()) -> str:
    """A finding's identity across runs: the same cause on the same target seen by the same agents at the
    same addresses. 32 hex digits; the order of agents and addresses does not matter."""
    canonical = json.dumps([report, target, str(cause), sorted(set(agents)), sorted(set(addresses))])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def key_of(report: str, target: str, finding: Finding) -> str:
    """`finding_key` of a finding as the diagnosis produced it."""
    return finding_key(report, target, finding.cause.value, finding.agents, finding.addresses)


@dataclass(frozen=True)
class SeenQuery:
    """ "Since when has this been so?": the state a change describes, for `FirstSeen`.

    FINDING_NEW asks with `key` (a `finding_key`); CERTIFICATE with target, agent, address and the leaf's
    `sha256`. Other kinds are asked too, so that a store that knows may answer; None means "not known"."""

    kind: ChangeKind
    report: str
    target: str = ""
    agent: str = ""
    address: str = ""
    key: str = ""
    sha256: str = ""


FirstSeen = Callable[[SeenQuery], datetime | None]

OUTBOX_MAX_CLAIM = 1_000  # rows one claim may take


@dataclass(frozen=True)
class Queued:
    """One alert to announce: its outbox rows (one per webhook) and its announcement, written together."""

    key: str
    kind: str  # AlertKind's value
    resolved: bool  # a resolution closes the announcement; anything else opens it
    payload: str  # the alert as JSON (alerts.alert_to_payload)
    webhooks: tuple[str, ...]


@dataclass(frozen=True)
class OutboxRow:
    """An alert waiting for (or being given to) one webhook."""

    row_id: int
    key: str
    kind: str
    webhook: str
    payload: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str = ""


@dataclass(frozen=True)
class SlotLease:
    """Who runs a report's slot: claimed once by one coordinator, renewed while the run goes, then done
    with the run's id; a lease that expired unfinished is done as interrupted (run_id: the run recording it)."""

    report: str
    slot: datetime  # the slot's scheduled start, before jitter
    owner: str
    claimed_at: datetime
    renewed_at: datetime
    expires_at: datetime
    done_at: datetime | None = None
    run_id: int | None = None
    interrupted: bool = False


class HistoryStore(Protocol):
    """Runs of scheduled reports, kept for a retention period. Times are aware datetimes. Every method
    raises HistoryError (and nothing else) when the database fails."""

    def save_run(self, run: ReportRun) -> int:
        """Keep a finished (or abandoned) run; returns its run id. A run is saved once."""
        ...

    def latest_run(
        self, report: str, before_id: int | None = None, *, include_abandoned: bool = True
    ) -> ReportRun | None:
        """The most recent run of `report` (saved before run `before_id` when given; complete runs only
        when include_abandoned is False), or None."""
        ...

    def get_run(self, run_id: int) -> ReportRun | None: ...

    def run_to_compare(self, report: str, run_id: int) -> ReportRun | None:
        """The run that run `run_id` is compared with: the latest of `report` saved before it that probed
        something, or None. Its targets whose stored observation and findings are run `run_id`'s (timings
        aside) are left out: a comparison finds nothing in them, and reading them back is most of the cost."""
        ...

    def list_runs(self, report: str | None = None, limit: int = 50) -> list[RunSummary]:
        """Newest first."""
        ...

    def first_seen_finding(self, report: str, key: str) -> datetime | None:
        """When the finding's current uninterrupted presence began: the start of the first run of the
        latest stretch of runs that saw it (runs that did not probe its target do not interrupt it)."""
        ...

    def first_seen_certificate(
        self, report: str, target: str, agent: str, address: str, sha256: str
    ) -> datetime | None:
        """When `agent` began to be served the leaf `sha256` at `address` for `target`, in its latest
        uninterrupted stretch; None when never."""
        ...

    def announced(self, key: str) -> bool:
        """True while the finding has been announced and its resolution has not."""
        ...

    def mark_announced(self, key: str, at: datetime, resolved: bool = False) -> None:
        """Record that the finding (resolved=False) or its resolution (resolved=True) was announced."""
        ...

    def prune(self, older_than: datetime) -> int:
        """Forget runs that started before `older_than`, what only they referenced, and outbox rows delivered
        or given up before it; returns how many runs."""
        ...

    def enqueue(self, items: Sequence[Queued], at: datetime) -> int:
        """Queue each item for its webhooks and mark it announced (or resolved), in one transaction; returns
        the rows added. A row already pending for the same (key, webhook, kind) is not added again; a
        finished one (delivered or given up) is queued anew, as when a resolved finding comes back."""
        ...

    def claim_outbox(self, owner: str, now: datetime, lease_until: datetime, per_webhook: int) -> list[OutboxRow]:
        """Pending rows due by `now` and not leased to another owner, the oldest `per_webhook` of each webhook,
        leased to `owner` until `lease_until`: coordinators sharing the history never claim the same row at
        once. Oldest first."""
        ...

    def outbox_delivered(self, row_id: int, at: datetime, status: int) -> None: ...

    def outbox_failed(
        self, row_id: int, at: datetime, status: int | None, error: str, next_attempt_at: datetime | None
    ) -> None:
        """Count a failed attempt; retry at `next_attempt_at`, or give the row up when it is None."""
        ...

    def outbox_release(self, row_ids: Sequence[int], next_attempt_at: datetime | None = None) -> None:
        """Hand rows back unattempted (shutdown, or an earlier row of their webhook failed): lease cleared,
        next attempt moved to `next_attempt_at` when given."""
        ...

    def outbox_pending(self, webhook: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """Rows not yet delivered nor given up, oldest first."""
        ...

    def outbox_counts(self) -> dict[str, int]:
        """Pending rows per webhook (webhooks with none are absent)."""
        ...

    def claim_slot(self, report: str, slot: datetime, owner: str, now: datetime, expires_at: datetime) -> SlotLease:
        """Lease the run of `report` for `slot` to `owner` unless the slot has a lease already (a slot runs
        once: one whose holder went silent is not taken over) or another slot of the report is still
        running (an unexpired, unfinished lease). Returns the lease that decides: `owner`'s new one when
        claimed, else the slot's own or the running one."""
        ...

    def renew_slot(self, report: str, slot: datetime, owner: str, now: datetime, expires_at: datetime) -> bool:
        """Extend `owner`'s unfinished lease; False when `owner` does not hold it (any more)."""
        ...

    def finish_slot(self, report: str, slot: datetime, owner: str, at: datetime, run_id: int | None) -> bool:
        """Mark `owner`'s lease done with the run it saved (None: the run failed before saving anything);
        False when `owner` does not hold it (any more)."""
        ...

    def interrupt_expired(self, now: datetime) -> list[SlotLease]:
        """Record each unfinished lease that expired before `now` as an interrupted run (abandoned, its note
        naming the holder and when it went silent), once however many coordinators call; returns those."""
        ...

    def close(self) -> None: ...


def first_seen_lookup(store: HistoryStore) -> FirstSeen:
    """The `first_seen` argument of `changes.changes_between`, answered from `store`. Save the current run
    first, so that its own sightings count."""

    def lookup(query: SeenQuery) -> datetime | None:
        if query.kind is ChangeKind.FINDING_NEW and query.key:
            return store.first_seen_finding(query.report, query.key)
        if query.kind is ChangeKind.CERTIFICATE and query.sha256:
            return store.first_seen_certificate(query.report, query.target, query.agent, query.address, query.sha256)
        return None

    return lookup
