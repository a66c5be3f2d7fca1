"""When a report runs next: a cron expression (UTC) or a fixed interval, plus random jitter. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim, CronSimError


class ScheduleError(ValueError):
    """A cron expression that does not parse; the message says what is accepted."""


def check_cron(expression: str) -> None:
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as error:
        raise ScheduleError(
            f"{expression!r} is not a cron expression ({error}); accepted: five fields, minute hour day month "
            "weekday, e.g. '*/15 * * * *'"
        ) from None


@dataclass(frozen=True)
class Schedule:
    cron: str | None = None
    interval_s: float | None = None
    jitter_s: float = 0.0

    def next_after(self, after: datetime, rng: random.Random | None = None) -> datetime:
        """The next start strictly after `after` (aware UTC), jitter included."""
        if self.cron is not None:
            # cronsim works on naive or aware datetimes alike; schedules are read in UTC.
            base = next(CronSim(self.cron, after))
        elif self.interval_s is not None:
            base = after + timedelta(seconds=self.interval_s)
        else:
            raise ScheduleError("a schedule needs a cron expression or an interval")
        if self.jitter_s <= 0:
            return base
        return base + timedelta(seconds=(rng or random).uniform(0, self.jitter_s))
