"""Report schedules: cron in UTC or a fixed interval, with bounded random jitter that never moves the slots."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tlsfleet.coordinator.service.schedule import Schedule, ScheduleError, check_cron, default_jitter_s

NOW = datetime(2026, 11, 26, 21, 7, 30, tzinfo=UTC)


def test_cron_gives_the_next_matching_minute() -> None:
    schedule = Schedule(cron="*/15 * * * *")
    first = schedule.next_slot(NOW)
    assert first == datetime(2026, 11, 26, 21, 15, tzinfo=UTC)
    assert schedule.next_slot(first) == datetime(2026, 11, 26, 21, 30, tzinfo=UTC)


def test_interval_counts_from_the_previous_slot() -> None:
    assert Schedule(interval_s=600).next_slot(NOW) == NOW + timedelta(minutes=10)


def test_jitter_stays_within_its_bound_and_slots_do_not_drift() -> None:
    schedule = Schedule(interval_s=60, jitter_s=30)
    rng = random.Random(7)
    slot = NOW
    delays = []
    for _ in range(200):
        start = schedule.jittered(slot, rng)
        delays.append((start - slot).total_seconds())
        slot = schedule.next_slot(slot)
    assert all(0 <= d <= 30 for d in delays)
    assert max(delays) - min(delays) > 20, "jitter actually spreads runs"
    assert slot == NOW + timedelta(minutes=200), "200 periods later, exactly on schedule"


def test_default_jitter_is_a_tenth_of_the_period_at_most_30_s() -> None:
    assert default_jitter_s(None, 60) == 6
    assert default_jitter_s(None, 3600) == 30
    assert default_jitter_s("* * * * *", None) == 6
    assert default_jitter_s("0 * * * *", None) == 30


def test_bad_cron_is_named() -> None:
    with pytest.raises(ScheduleError, match="five fields"):
        check_cron("* * *")
    with pytest.raises(ScheduleError):
        Schedule().next_slot(NOW)
