"""Leases of report slots in the history, on SQLite and PostgreSQL alike: a slot is claimed once, renewed
and finished by its holder only, never taken over when its holder goes silent, and recorded as an
interrupted run exactly once however many coordinators sweep at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from tests.coordinator.service.history.backends import HistoryDatabase
from tlsfleet.coordinator.service.history import HistoryError, HistoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLOT = T0
NEXT = T0 + timedelta(minutes=5)
EXPIRY = timedelta(seconds=30)
A, B = "host-a:101:aaaaaa", "host-b:202:bbbbbb"
R = TypeVar("R")


@pytest.fixture
def store(history_db: HistoryDatabase):  # type: ignore[no-untyped-def]
    history = history_db.open()
    yield history
    history.close()


def claim(store: HistoryStore, owner: str, slot: datetime = SLOT, at: datetime = T0, report: str = "edge"):  # type: ignore[no-untyped-def]
    return store.claim_slot(report, slot, owner, at, at + EXPIRY)


def test_the_first_claim_wins_and_the_others_see_its_holder(store: HistoryStore) -> None:
    mine = claim(store, A)
    assert (mine.owner, mine.slot, mine.claimed_at, mine.expires_at) == (A, SLOT, T0, T0 + EXPIRY)
    assert mine.done_at is None and mine.run_id is None and not mine.interrupted
    theirs = claim(store, B, at=T0 + timedelta(seconds=1))
    assert theirs == mine
    # Other reports and other slots are claimed on their own.
    assert claim(store, B, report="other").owner == B


def test_a_slot_whose_holder_went_silent_is_never_taken_over(store: HistoryStore) -> None:
    claim(store, A)
    late = T0 + EXPIRY + timedelta(minutes=1)
    assert claim(store, B, at=late).owner == A


def test_a_running_slot_holds_off_the_next_one_until_finished_or_expired(store: HistoryStore) -> None:
    claim(store, A)
    blocked = claim(store, B, slot=NEXT, at=T0 + timedelta(seconds=10))
    assert (blocked.owner, blocked.slot) == (A, SLOT), "the previous run still going is the answer"
    assert store.finish_slot("edge", SLOT, A, T0 + timedelta(seconds=20), 7)
    assert claim(store, B, slot=NEXT, at=T0 + timedelta(seconds=21)).owner == B


def test_an_expired_unfinished_lease_does_not_hold_off_the_next_slot(store: HistoryStore) -> None:
    claim(store, A)
    after_expiry = T0 + EXPIRY + timedelta(seconds=1)
    assert claim(store, B, slot=NEXT, at=after_expiry).owner == B


def test_only_the_holder_renews_and_finishes(store: HistoryStore) -> None:
    claim(store, A)
    later = T0 + timedelta(seconds=10)
    assert store.renew_slot("edge", SLOT, A, later, later + EXPIRY)
    assert not store.renew_slot("edge", SLOT, B, later, later + EXPIRY)
    assert not store.finish_slot("edge", SLOT, B, later, 1)
    # Renewed, the lease outlives its first expiry: the next slot still waits.
    assert claim(store, B, slot=NEXT, at=T0 + EXPIRY + timedelta(seconds=5)).owner == A
    assert store.finish_slot("edge", SLOT, A, later, 42)
    assert not store.finish_slot("edge", SLOT, A, later, 43), "a lease is finished once"
    assert not store.renew_slot("edge", SLOT, A, later, later + EXPIRY)
    done = claim(store, B, at=later)
    assert (done.owner, done.run_id, done.done_at, done.interrupted) == (A, 42, later, False)
    # A run that failed before saving anything finishes its lease without a run.
    claim(store, A, slot=NEXT, at=later)
    assert store.finish_slot("edge", NEXT, A, later, None)
    assert store.interrupt_expired(later + timedelta(hours=1)) == []


def test_an_expired_lease_is_recorded_as_an_interrupted_run_once(store: HistoryStore) -> None:
    claim(store, A)
    silent = T0 + timedelta(seconds=10)
    assert store.renew_slot("edge", SLOT, A, silent, silent + EXPIRY)
    assert store.interrupt_expired(silent + EXPIRY - timedelta(seconds=1)) == [], "not expired yet"
    swept = silent + EXPIRY + timedelta(seconds=2)
    [lease] = store.interrupt_expired(swept)
    assert (lease.owner, lease.slot, lease.renewed_at, lease.done_at, lease.interrupted) == (
        A,
        SLOT,
        silent,
        swept,
        True,
    )
    assert lease.run_id is not None
    assert store.interrupt_expired(swept + timedelta(seconds=1)) == []

    [summary] = store.list_runs("edge")
    assert summary.run_id == lease.run_id
    assert summary.abandoned and summary.targets == 0
    assert (summary.started_at, summary.finished_at) == (T0, silent)
    assert summary.note.startswith("interrupted: coordinator host-a:101:aaaaaa held this run")
    assert "went silent after 2026-03-01 12:00:10 UTC" in summary.note
    run = store.get_run(lease.run_id)
    assert run is not None and run.abandoned and run.targets == () and run.note == summary.note
    # The holder, back from its silence, holds nothing any more.
    assert not store.renew_slot("edge", SLOT, A, swept, swept + EXPIRY)
    assert not store.finish_slot("edge", SLOT, A, swept, 99)
    assert claim(store, B, at=swept).run_id == lease.run_id


def test_a_sweep_leaves_live_and_finished_leases_alone(store: HistoryStore) -> None:
    claim(store, A)
    claim(store, A, report="other")
    assert store.finish_slot("other", SLOT, A, T0 + timedelta(seconds=1), 3)
    assert [lease.report for lease in store.interrupt_expired(T0 + EXPIRY + timedelta(seconds=1))] == ["edge"]
    assert [r.report for r in store.list_runs()] == ["edge"]


def test_naive_times_are_refused(store: HistoryStore) -> None:
    with pytest.raises(HistoryError, match="has no time zone"):
        store.claim_slot("edge", datetime(2026, 3, 1, 12), A, T0, T0 + EXPIRY)


def test_retention_forgets_old_leases(store: HistoryStore, history_db: HistoryDatabase) -> None:
    claim(store, A)
    store.finish_slot("edge", SLOT, A, T0, None)
    claim(store, A, slot=NEXT, at=NEXT)
    store.prune(T0 + timedelta(minutes=1))
    assert history_db.query("SELECT owner FROM report_leases") == [(A,)]
    assert claim(store, B, slot=NEXT, at=NEXT).owner == A


def together(stores: list[HistoryStore], call: Callable[[HistoryStore, int], R]) -> list[R]:
    """`call` on every store at once, each from its own thread (its own connection)."""
    start = threading.Barrier(len(stores))
    results: list[R | BaseException] = [RuntimeError("did not run")] * len(stores)

    def one(index: int) -> None:
        start.wait(10)
        try:
            results[index] = call(stores[index], index)
        except BaseException as error:  # re-raised below, in the test's thread
            results[index] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


@pytest.fixture
def replicas(history_db: HistoryDatabase):  # type: ignore[no-untyped-def]
    """Four stores on one database: four coordinators sharing a history."""
    opened = [history_db.open() for _ in range(4)]
    yield opened
    for history in opened:
        history.close()


def test_coordinators_claiming_one_slot_at_once_give_it_to_one(replicas: list[HistoryStore]) -> None:
    for round_ in range(5):
        slot = T0 + timedelta(minutes=round_)
        leases = together(replicas, lambda s, i, at=slot: s.claim_slot("edge", at, f"replica-{i}", at, at + EXPIRY))
        assert len({lease.owner for lease in leases}) == 1, leases
        replicas[0].finish_slot("edge", slot, leases[0].owner, slot, None)


def test_coordinators_sweeping_at_once_record_an_interruption_once(
    replicas: list[HistoryStore], history_db: HistoryDatabase
) -> None:
    for index, report in enumerate(("a", "b", "c")):
        replicas[index].claim_slot(report, SLOT, f"replica-{index}", T0, T0 + EXPIRY)
    swept = together(replicas, lambda s, _i: s.interrupt_expired(T0 + EXPIRY + timedelta(seconds=1)))
    assert sorted(lease.report for found in swept for lease in found) == ["a", "b", "c"]
    assert history_db.count("runs") == 3
    assert history_db.query("SELECT COUNT(*) FROM report_leases WHERE interrupted = ?", True) == [(3,)]
