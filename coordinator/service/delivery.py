"""The delivery worker: posts the history's outbox to the webhooks, off the report runs' path.

A run only queues its alerts (`HistoryStore.enqueue`); this worker claims due rows with a lease (so
coordinators sharing one history never post the same row at once), posts each webhook's rows in order,
several webhooks at a time within one bound, and retries what may succeed later with capped exponential
backoff and jitter until the row is `max_age` old, when it is given up and logged. A receiver that is
down, slow or failing costs the worker time, never a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ...agent.logs import get_logger
from .alerts import alert_from_payload
from .history.store import HistoryError, HistoryStore, OutboxRow
from .webhooks import Attempt, WebhookTarget, open_client, post_alert

if TYPE_CHECKING:
    import httpx

    from .metrics import FleetMetrics

log = get_logger("tlsfleet.coordinator")

DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_PER_WEBHOOK = 8  # rows of one webhook one pass takes, posted one after another
DEFAULT_POLL_S = 2.0
DEFAULT_MAX_AGE = timedelta(hours=24)
_LEASE_MARGIN_S = 30.0


@dataclass(frozen=True)
class Backoff:
    """The wait after a row's n-th failed attempt: first_s doubling up to cap_s, times a random factor in
    [0.5, 1] so that many rows failing together do not come back together."""

    first_s: float = 5.0
    cap_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.cap_s <= 86_400:
            raise ValueError(f"backoff {self.first_s:g}-{self.cap_s:g} s is not accepted; 0 < first <= cap <= 1 day")

    def delay(self, attempts: int, rng: random.Random) -> float:
        return min(self.first_s * 2.0 ** max(attempts - 1, 0), self.cap_s) * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Outcome:
    """One attempt on one row. result: delivered, failed (retried later), given_up, deferred (not attempted:
    an earlier row of its webhook failed, it waits as long)."""

    row_id: int
    webhook: str
    key: str
    result: str
    status: int | None = None
    error: str = ""


class DeliveryWorker:
    def __init__(
        self,
        history: HistoryStore,
        webhooks: Mapping[str, WebhookTarget],
        *,
        metrics: FleetMetrics | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        per_webhook: int = DEFAULT_PER_WEBHOOK,
        poll_s: float = DEFAULT_POLL_S,
        backoff: Backoff | None = None,
        max_age: timedelta = DEFAULT_MAX_AGE,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= max_in_flight <= 256 or not 1 <= per_webhook <= 100:
            raise ValueError("max_in_flight must be 1-256 and per_webhook 1-100")
        if not 0 < poll_s <= 3600 or max_age <= timedelta(0):
            raise ValueError("poll_s must be above 0 and at most 3600, max_age above 0")
        self._history = history
        self._webhooks = dict(webhooks)
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._per_webhook = per_webhook
        self._poll_s = poll_s
        self._backoff = backoff or Backoff()
        self._max_age = max_age
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        # Leases name their holder, for an operator reading the table.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        slowest = max((t.timeout_s for t in self._webhooks.values()), default=5.0)
        self._lease = timedelta(seconds=per_webhook * slowest + _LEASE_MARGIN_S)

    @property
    def longest_pass_s(self) -> float:
        """The most one pass can take: each webhook's rows one after another, each within its timeout."""
        return self._per_webhook * max((t.timeout_s for t in self._webhooks.values()), default=0.0)

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set (or the task is cancelled: unfinished rows are handed back)."""
        log.info("delivery_started", webhooks=sorted(self._webhooks), owner=self.owner)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.deliver_due()
                except HistoryError as error:
                    log.error("delivery_paused", reason=str(error), retry_in_s=self._poll_s)
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(waits, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def deliver_due(self) -> list[Outcome]:
        """One pass: claim what is due, post it, record each outcome. Returns the outcomes."""
        now = datetime.now(UTC)
        rows = await asyncio.to_thread(
            self._history.claim_outbox, self.owner, now, now + self._lease, self._per_webhook
        )
        outcomes: list[Outcome] = []
        if rows:
            by_webhook: dict[str, list[OutboxRow]] = defaultdict(list)
            for row in rows:
                by_webhook[row.webhook].append(row)
            done = await asyncio.gather(*(self._deliver_webhook(name, queued) for name, queued in by_webhook.items()))
            outcomes = [o for part in done for o in part]
        await self._count_pending()
        return outcomes

    async def _deliver_webhook(self, name: str, rows: Sequence[OutboxRow]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        target = self._webhooks.get(name)
        try:
            for position, row in enumerate(rows):
                if target is None:
                    outcomes.append(await self._give_up(row, None, f"webhook {name!r} is no longer configured"))
                    continue
                outcome, retry_at = await self._attempt(target, row)
                outcomes.append(outcome)
                if retry_at is not None:
                    # Keep the webhook's order: its later rows wait as long as the one that failed.
                    rest = rows[position + 1 :]
                    await asyncio.to_thread(self._history.outbox_release, [r.row_id for r in rest], retry_at)
                    outcomes += [Outcome(r.row_id, name, r.key, "deferred") for r in rest]
                    break
        except asyncio.CancelledError:
            finished = {o.row_id for o in outcomes}
            unfinished = [r.row_id for r in rows if r.row_id not in finished]
            # Shutdown: hand the rows back now, rather than leave them leased until the lease runs out.
            await asyncio.shield(asyncio.to_thread(self._history.outbox_release, unfinished))
            raise
        return outcomes

    async def _attempt(self, target: WebhookTarget, row: OutboxRow) -> tuple[Outcome, datetime | None]:
        """Post one row and record what came of it; the second item is when to retry, after a failure."""
        try:
            alert = alert_from_payload(row.payload)
        except ValueError as error:
            return await self._give_up(row, None, str(error)), None
        async with self._slots:
            attempt = await post_alert(self._client_or_open(), target, alert)
        now = datetime.now(UTC)
        number = row.attempts + 1
        if attempt.ok:
            assert attempt.status is not None
            await asyncio.to_thread(self._history.outbox_delivered, row.row_id, now, attempt.status)
            log.info(
                "webhook_delivered",
                webhook=row.webhook,
                key=row.key,
                kind=row.kind,
                status=attempt.status,
                attempt=number,
            )
            return self._counted(Outcome(row.row_id, row.webhook, row.key, "delivered", attempt.status)), None
        retry_at = self._retry_at(row, attempt, number, now)
        if retry_at is None:
            reason = attempt.error if not attempt.retryable else f"{attempt.error}; older than {self._max_age}"
            return await self._give_up(row, attempt.status, reason, number), None
        await asyncio.to_thread(self._history.outbox_failed, row.row_id, now, attempt.status, attempt.error, retry_at)
        log.warning(
            "webhook_failed",
            webhook=row.webhook,
            url=target.redacted_url,
            key=row.key,
            kind=row.kind,
            status=attempt.status,
            attempt=number,
            error=attempt.error,
            retry_in_s=round((retry_at - now).total_seconds(), 1),
        )
        outcome = Outcome(row.row_id, row.webhook, row.key, "failed", attempt.status, attempt.error)
        return self._counted(outcome), retry_at

    def _retry_at(self, row: OutboxRow, attempt: Attempt, number: int, now: datetime) -> datetime | None:
        if not attempt.retryable:
            return None
        wait = self._backoff.delay(number, self._rng)
        if attempt.retry_after_s is not None:
            wait = min(max(wait, attempt.retry_after_s), self._backoff.cap_s)
        at = now + timedelta(seconds=wait)
        return at if at - row.created_at <= self._max_age else None

    async def _give_up(self, row: OutboxRow, status: int | None, error: str, attempt: int | None = None) -> Outcome:
        now = datetime.now(UTC)
        await asyncio.to_thread(self._history.outbox_failed, row.row_id, now, status, error, None)
        log.error(
            "webhook_given_up",
            webhook=row.webhook,
            key=row.key,
            kind=row.kind,
            status=status,
            attempt=attempt if attempt is not None else row.attempts,
            error=error,
            queued_at=row.created_at.isoformat(),
        )
        return self._counted(Outcome(row.row_id, row.webhook, row.key, "given_up", status, error))

    def _counted(self, outcome: Outcome) -> Outcome:
        if self._metrics is not None:
            self._metrics.delivery_attempts.labels(outcome.webhook, outcome.result).inc()
        return outcome

    def _client_or_open(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = open_client(self._max_in_flight)
        return self._client

    async def _count_pending(self) -> None:
        if self._metrics is None:
            return
        counts = await asyncio.to_thread(self._history.outbox_counts)
        for name in self._webhooks:
            self._metrics.outbox_pending.labels(name).set(counts.get(name, 0))
