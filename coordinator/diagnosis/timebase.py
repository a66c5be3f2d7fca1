"""Which time validity is judged at: the coordinator's reference time, unless the fleet shows that the
coordinator's own clock is the odd one out.

Offsets are agent minus coordinator, each with an error bound (half the round trip). A vantage is off
only when even the most favourable reading is beyond tolerance: `|offset| - error > tolerance`. When
every remote vantage (two or more; the local one is the coordinator's machine) is off by about the same
amount in the same direction, the remote vantages agree with each other and not with the coordinator:
the coordinator's clock is wrong, and the fleet's time (reference time plus their median offset) is the
better estimate of true time. The clock rule names the coordinator then, and the validity rules judge
windows at the fleet's time, so that neither blames the server for the coordinator's clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..observation import DiagnosisSettings, Observation
from ..outcomes import ClockEstimate, ProbeOutcome, VantageKind

__all__ = ["beyond_tolerance", "coordinator_offset_ms", "judgement_time", "remote_clocks"]


def beyond_tolerance(clock: ClockEstimate, settings: DiagnosisSettings) -> bool:
    """The offset exceeds the tolerance even at the near end of its error bound."""
    return abs(clock.offset_ms) - clock.error_ms > settings.clock_tolerance_ms


def remote_clocks(observation: Observation) -> list[ProbeOutcome]:
    """Vantages with their own clock: the local one is the coordinator's machine (offset 0 by design)."""
    return [o for o in observation.answered if o.clock is not None and o.vantage.kind != VantageKind.LOCAL]


def coordinator_offset_ms(observation: Observation, settings: DiagnosisSettings) -> float | None:
    """The fleet's median offset from the coordinator when the remote vantages agree with each other and
    not with the coordinator (see the module's docstring); None when the coordinator's clock stands."""
    clocks = [o.clock for o in remote_clocks(observation) if o.clock is not None]
    if len(clocks) < 2 or not all(beyond_tolerance(c, settings) for c in clocks):
        return None
    if len({c.offset_ms > 0 for c in clocks}) != 1:
        return None
    offsets = sorted(c.offset_ms for c in clocks)
    if offsets[-1] - offsets[0] > settings.clock_tolerance_ms + 2 * max(c.error_ms for c in clocks):
        return None
    return offsets[len(offsets) // 2]


def judgement_time(observation: Observation, settings: DiagnosisSettings) -> datetime:
    """True time as well as the observation tells it: the reference time, or the fleet's time when the
    coordinator's clock is the odd one out."""
    offset = coordinator_offset_ms(observation, settings)
    return settings.reference_time if offset is None else settings.reference_time + timedelta(milliseconds=offset)
