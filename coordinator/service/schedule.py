"""When a report runs next: a cron expression (UTC) or a fixed interval, plus jitter. Pure.

Every coordinator sharing a history computes the same slots and the same start for each, so that they
contend for one slot at once: interval slots lie on a grid (whole multiples of the interval since the
Unix epoch), and a slot's jitter is drawn from a generator seeded by the report's name and the slot."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from ...agent.errors import UsageError

MAX_DEFAULT_JITTER_S = 30.0


class ScheduleError(UsageError):
    """A cron expression that does not parse; the message says what is accepted."""


def check_cron(expression: str) -> None:
    try:
        # cronsim also reads a sixth field, seconds: a report every second is not a schedule tlsfleet offers.
        if len(expression.split()) == 6:
            raise CronSimError("a sixth field (seconds) is not accepted")
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

    def first_slot(self, now: datetime) -> datetime:
        """The slot a coordinator starting at `now` (aware UTC) tries first: an interval report's current
        slot (the grid point at or before now, run late if nobody ran it yet), a cron report's next one."""
        if self.cron is None and self.interval_s is not None:
            return self.next_slot(now - timedelta(seconds=self.interval_s))
        return self.next_slot(now)

    def next_slot(self, after: datetime) -> datetime:
        """The next scheduled start strictly after `after` (aware UTC), before jitter."""
        if self.cron is not None:
            return next(CronSim(self.cron, after))
        if self.interval_s is not None:
            step = math.floor(after.timestamp() / self.interval_s) + 1
            slot = datetime.fromtimestamp(step * self.interval_s, UTC)
            # Float rounding may land on `after` itself; a slot strictly after is one step on.
            return slot if slot > after else datetime.fromtimestamp((step + 1) * self.interval_s, UTC)
        raise ScheduleError("a schedule needs a cron expression or an interval")

    def jittered(self, slot: datetime, report: str) -> datetime:
        """When the run of `report` for `slot` starts: the same on every coordinator. Slots stay on the
        schedule; only starts move."""
        if self.jitter_s <= 0:
            return slot
        rng = random.Random(f"{report} {slot.isoformat()}")  # a str seed is hashed with SHA-512: stable
        return slot + timedelta(seconds=rng.uniform(0, self.jitter_s))
