"""Report schedules: cron in UTC or a fixed interval on a grid from the epoch, with bounded jitter that never
moves the slots and is the same on every coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tlsfleet.coordinator.service.schedule import Schedule, ScheduleError, check_cron, default_jitter_s

NOW = datetime(2026, 11, 26, 21, 7, 30, tzinfo=UTC)


def test_cron_gives_the_next_matching_minute() -> None:
    schedule = Schedule(cron="*/15 * * * *")
    first = schedule.next_slot(NOW)
    assert first == datetime(2026, 11, 26, 21, 15, tzinfo=UTC)
    assert schedule.next_slot(first) == datetime(2026, 11, 26, 21, 30, tzinfo=UTC)


def test_interval_slots_lie_on_a_grid_from_the_epoch() -> None:
    """Every coordinator computes the same slots, whenever it started."""
    ten_minutes = Schedule(interval_s=600)
    assert ten_minutes.next_slot(NOW) == datetime(2026, 11, 26, 21, 10, tzinfo=UTC)
    assert ten_minutes.next_slot(datetime(2026, 11, 26, 21, 10, tzinfo=UTC)) == datetime(
        2026, 11, 26, 21, 20, tzinfo=UTC
    )
    seven = Schedule(interval_s=7)
    slots = {seven.next_slot(NOW + timedelta(seconds=s / 10)) for s in range(70)}
    assert len(slots) == 2 and all(slot.timestamp() % 7 == 0 for slot in slots)


def test_an_interval_report_starts_with_its_current_slot_and_cron_waits() -> None:
    assert Schedule(interval_s=600).first_slot(NOW) == datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
    on_the_grid = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
    assert Schedule(interval_s=600).first_slot(on_the_grid) == on_the_grid
    assert Schedule(cron="*/15 * * * *").first_slot(NOW) == datetime(2026, 11, 26, 21, 15, tzinfo=UTC)


def test_fractional_intervals_always_move_forward() -> None:
    schedule = Schedule(interval_s=1.1)
    slot = NOW
    for _ in range(1000):
        following = schedule.next_slot(slot)
        assert timedelta(0) < following - slot <= timedelta(seconds=1.1)
        slot = following


def test_jitter_stays_within_its_bound_and_slots_do_not_drift() -> None:
    schedule = Schedule(interval_s=60, jitter_s=30)
    slot = schedule.first_slot(NOW)
    first = slot
    delays = []
    for _ in range(200):
        start = schedule.jittered(slot, "edge")
        delays.append((start - slot).total_seconds())
        slot = schedule.next_slot(slot)
    assert all(0 <= d <= 30 for d in delays)
    assert max(delays) - min(delays) > 20, "jitter actually spreads runs"
    assert slot == first + timedelta(minutes=200), "200 periods later, exactly on schedule"


def test_jitter_is_the_same_on_every_coordinator_and_differs_by_report_and_slot() -> None:
    schedule = Schedule(interval_s=60, jitter_s=30)
    slot = schedule.first_slot(NOW)
    assert schedule.jittered(slot, "edge") == Schedule(interval_s=60, jitter_s=30).jittered(slot, "edge")
    assert schedule.jittered(slot, "edge") != schedule.jittered(slot, "core")
    assert schedule.jittered(slot, "edge") != schedule.jittered(schedule.next_slot(slot), "edge") - timedelta(minutes=1)
    # Another process (another hash seed) draws the same start.
    code = (
        "from datetime import datetime; from tlsfleet.coordinator.service.schedule import Schedule; "
        f"print(Schedule(interval_s=60, jitter_s=30).jittered(datetime.fromisoformat({slot.isoformat()!r}), 'edge')"
        ".isoformat())"
    )
    elsewhere = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert elsewhere.stdout.strip() == schedule.jittered(slot, "edge").isoformat()


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


def test_a_cron_with_a_seconds_field_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"a sixth field \(seconds\) is not accepted.*five fields"):
        check_cron("* * * * * *")
