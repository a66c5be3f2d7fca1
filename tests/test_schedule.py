"""Report schedules: cron in UTC or a fixed interval, with bounded random jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tlsfleet.coordinator.schedule import Schedule, ScheduleError, check_cron

NOW = datetime(2026, 11, 26, 21, 7, 30, tzinfo=UTC)


def test_cron_gives_the_next_matching_minute() -> None:
    schedule = Schedule(cron="*/15 * * * *")
    first = schedule.next_after(NOW)
    assert first == datetime(2026, 11, 26, 21, 15, tzinfo=UTC)
    assert schedule.next_after(first) == datetime(2026, 11, 26, 21, 30, tzinfo=UTC)


def test_interval_counts_from_the_given_time() -> None:
    assert Schedule(interval_s=600).next_after(NOW) == NOW + timedelta(minutes=10)


def test_jitter_stays_within_its_bound() -> None:
    schedule = Schedule(interval_s=60, jitter_s=30)
    rng = random.Random(7)
    delays = [(schedule.next_after(NOW, rng) - NOW).total_seconds() for _ in range(200)]
    assert all(60 <= d <= 90 for d in delays)
    assert max(delays) - min(delays) > 20, "jitter actually spreads runs"


def test_bad_cron_is_named() -> None:
    with pytest.raises(ScheduleError, match="five fields"):
        check_cron("* * *")
    with pytest.raises(ScheduleError):
        Schedule().next_after(NOW)
