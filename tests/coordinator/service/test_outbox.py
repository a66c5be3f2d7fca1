"""The history's outbox on SQLite and PostgreSQL alike: queued once with its announcement, claimed under a
lease, delivered, retried, given up, pruned."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from tests.coordinator.service.history.backends import HistoryDatabase
from tlsfleet.coordinator.service.history.store import Queued

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def item(key: str, *, resolved: bool = False, webhooks: tuple[str, ...] = ("oncall", "chat")) -> Queued:
    kind = "resolved" if resolved else "finding"
    return Queued(key, kind, resolved, f'{{"key":"{key}"}}', webhooks)


def test_enqueue_writes_a_row_per_webhook_and_the_announcement(history_db: HistoryDatabase) -> None:
    with history_db.open() as history:  # type: ignore[attr-defined]
        assert history.enqueue([item("k1"), item("k2", webhooks=("oncall",))], T0) == 3
        assert history.announced("k1") and history.announced("k2")
        assert history.outbox_counts() == {"oncall": 2, "chat": 1}
        rows = history.outbox_pending("oncall")
        assert [(r.key, r.kind, r.attempts, r.created_at) for r in rows] == [
            ("k1", "finding", 0, T0),
            ("k2", "finding", 0, T0),
        ]
        assert rows[0].payload == '{"key":"k1"}'
        # Planned again (a restart between queueing and delivery): nothing is queued twice.
        assert history.enqueue([item("k1")], T0 + timedelta(minutes=1)) == 0
        assert history.outbox_counts() == {"oncall": 2, "chat": 1}
        # The resolution is its own row, and closes the announcement.
        assert history.enqueue([item("k1", resolved=True, webhooks=("oncall",))], T0 + timedelta(hours=1)) == 1
        assert not history.announced("k1")


def test_an_alert_without_webhooks_is_still_marked_announced(history_db: HistoryDatabase) -> None:
    with history_db.open() as history:  # type: ignore[attr-defined]
        assert history.enqueue([item("k1", webhooks=())], T0) == 0
        assert history.announced("k1") and history.outbox_counts() == {}


def test_a_claim_leases_rows_so_a_second_owner_gets_none(history_db: HistoryDatabase) -> None:
    with history_db.open() as first, history_db.open() as second:  # type: ignore[attr-defined]
        first.enqueue([item(f"k{n}", webhooks=("oncall",)) for n in range(5)], T0)
        claimed = first.claim_outbox("a", T0, T0 + LEASE, per_webhook=3)
        assert [r.key for r in claimed] == ["k0", "k1", "k2"]  # the oldest of each webhook
        rest = second.claim_outbox("b", T0, T0 + LEASE, per_webhook=10)
        assert [r.key for r in rest] == ["k3", "k4"]
        assert second.claim_outbox("b", T0, T0 + LEASE, per_webhook=10) == []
        # A lease that ran out (its owner died) is claimed again.
        again = second.claim_outbox("b", T0 + LEASE + timedelta(seconds=1), T0 + 2 * LEASE, per_webhook=10)
        assert [r.key for r in again] == ["k0", "k1", "k2", "k3", "k4"]


def test_concurrent_claims_never_share_a_row(history_db: HistoryDatabase) -> None:
    with history_db.open() as history:  # type: ignore[attr-defined]
        history.enqueue([item(f"k{n}", webhooks=(f"w{n % 4}",)) for n in range(80)], T0)
    got: dict[str, list[int]] = {}

    def claim(owner: str) -> None:
        with history_db.open() as store:  # type: ignore[attr-defined]
            ids: list[int] = []
            for _ in range(10):
                ids += [r.row_id for r in store.claim_outbox(owner, T0, T0 + LEASE, per_webhook=1)]
            got[owner] = ids

    threads = [threading.Thread(target=claim, args=(f"c{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [row_id for ids in got.values() for row_id in ids]
    assert len(got) == 4 and sorted(every) == sorted(set(every)) and len(every) == 80


def test_delivered_failed_released_and_given_up(history_db: HistoryDatabase) -> None:
    with history_db.open() as history:  # type: ignore[attr-defined]
        history.enqueue([item(f"k{n}", webhooks=("oncall",)) for n in range(4)], T0)
        k0, k1, k2, k3 = history.claim_outbox("a", T0, T0 + LEASE, per_webhook=10)
        history.outbox_delivered(k0.row_id, T0, 200)
        retry_at = T0 + timedelta(seconds=5)
        history.outbox_failed(k1.row_id, T0, 503, "HTTP 503: " + "x" * 2000, retry_at)
        history.outbox_release([k2.row_id], retry_at)
        history.outbox_failed(k3.row_id, T0, 400, "HTTP 400", None)  # given up
        pending = history.outbox_pending()
        assert [(r.key, r.attempts) for r in pending] == [("k1", 1), ("k2", 0)]
        assert pending[0].last_error.startswith("HTTP 503") and len(pending[0].last_error) <= 500
        assert history.claim_outbox("a", T0 + timedelta(seconds=4), T0 + LEASE, per_webhook=10) == []
        due = history.claim_outbox("a", retry_at, retry_at + LEASE, per_webhook=10)
        assert [r.key for r in due] == ["k1", "k2"]
        assert history.outbox_counts() == {"oncall": 2}
        # A finding that resolved and came back is queued anew once its earlier row is finished.
        assert history.enqueue([item("k0", webhooks=("oncall",))], T0 + timedelta(days=1)) == 1
        assert history.enqueue([item("k1", webhooks=("oncall",))], T0 + timedelta(days=1)) == 0  # still pending


def test_prune_drops_finished_rows_with_the_runs(history_db: HistoryDatabase) -> None:
    with history_db.open() as history:  # type: ignore[attr-defined]
        history.enqueue([item(f"k{n}", webhooks=("oncall",)) for n in range(3)], T0)
        k0, k1, _k2 = history.claim_outbox("a", T0, T0 + LEASE, per_webhook=10)
        history.outbox_delivered(k0.row_id, T0, 200)
        history.outbox_failed(k1.row_id, T0 + timedelta(days=10), 400, "HTTP 400", None)
        history.prune(T0 + timedelta(days=1))
        assert history_db.query("SELECT key FROM outbox ORDER BY key") == [("k1",), ("k2",)]
