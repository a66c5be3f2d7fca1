"""When a report runs next: a cron expression (UTC) or a fixed interval, plus random jitter. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim, CronSimError

from ...agent.errors import UsageError

MAX_DEFAULT_JITTER_S = 30.0


class ScheduleError(UsageError):
    """A cron expression that does not parse; the message says what is accepted."""


def check_cron(expression: str) -> None:
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as error:
        raise ScheduleError(
            f"{expression!r} is not a cron expression ({error}); accepted: five fields, minute hour day month "
            "weekday, e.g. '*/15 * * * *'"
        ) from None


def default_jitter_s(cron: str | None, interval_s: float | None) -> float:
    """A tenth of the period, at most 30 s: enough to spread many coordinators' runs, never a late run."""
    if interval_s is not None:
        period = interval_s
    elif cron is not None:
        slots = CronSim(cron, datetime(2000, 1, 1))
        first = next(slots)
        period = (next(slots) - first).total_seconds()
    else:
        return 0.0
    return min(MAX_DEFAULT_JITTER_S, period / 10)


@dataclass(frozen=True)
class Schedule:
    cron: str | None = None
    interval_s: float | None = None
    jitter_s: float = 0.0

    def next_slot(self, after: datetime) -> datetime:
        """The next scheduled start strictly after `after` (aware UTC), before jitter."""
        if self.cron is not None:
            return next(CronSim(self.cron, after))
        if self.interval_s is not None:
            return after + timedelta(seconds=self.interval_s)
        raise ScheduleError("a schedule needs a cron expression or an interval")

    def jittered(self, slot: datetime, rng: random.Random | None = None) -> datetime:
        """When a run for `slot` really starts. Slots stay on the schedule; only starts move."""
        if self.jitter_s <= 0:
            return slot
        return slot + timedelta(seconds=(rng or random).uniform(0, self.jitter_s))
