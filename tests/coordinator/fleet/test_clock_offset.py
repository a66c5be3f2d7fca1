"""Clock offset from one exchange: exact under symmetric delay, bounded by the error otherwise."""

from __future__ import annotations

import pytest

from tlsfleet.coordinator.fleet.clock_offset import estimate_offset
from tlsfleet.coordinator.outcomes import ClockEstimate

MS = 1_000_000  # nanoseconds per millisecond
DAY_MS = 86_400_000
# A realistic epoch in nanoseconds (2025), so the arithmetic runs at the magnitudes it meets in service.
T0 = 1_750_000_000_000_000_000


def _exchange(
    *, offset_ms: float, forward_ms: float, back_ms: float, processing_ms: float
) -> tuple[int, int, int, int]:
    """The four timestamps of one exchange: coordinator clock for send/receive, agent clock for the rest."""
    offset = round(offset_ms * MS)
    sent = T0
    agent_received = sent + round(forward_ms * MS) + offset
    agent_replied = agent_received + round(processing_ms * MS)
    received = sent + round((forward_ms + processing_ms + back_ms) * MS)
    return sent, agent_received, agent_replied, received


@pytest.mark.parametrize("offset_ms", [0.0, 3.0, 250.0, -250.0, 45_000.0])
@pytest.mark.parametrize(("delay_ms", "processing_ms"), [(0.0, 0.0), (1.0, 0.0), (20.0, 7.5), (150.0, 900.0)])
def test_symmetric_delay_gives_the_exact_offset(offset_ms: float, delay_ms: float, processing_ms: float) -> None:
    estimate = estimate_offset(
        *_exchange(offset_ms=offset_ms, forward_ms=delay_ms, back_ms=delay_ms, processing_ms=processing_ms)
    )
    assert estimate.offset_ms == pytest.approx(offset_ms, abs=1e-6)
    # The agent's processing time is not network delay: the bound is one one-way delay.
    assert estimate.error_ms == pytest.approx(delay_ms, abs=1e-6)


def test_processing_time_does_not_widen_the_error_bound() -> None:
    quick = estimate_offset(*_exchange(offset_ms=10, forward_ms=5, back_ms=5, processing_ms=0))
    slow = estimate_offset(*_exchange(offset_ms=10, forward_ms=5, back_ms=5, processing_ms=4_000))
    assert quick == slow == ClockEstimate(offset_ms=pytest.approx(10.0), error_ms=pytest.approx(5.0))


@pytest.mark.parametrize(
    ("forward_ms", "back_ms"),
    [(1.0, 99.0), (99.0, 1.0), (0.0, 40.0), (40.0, 0.0), (12.5, 30.0)],
)
@pytest.mark.parametrize("offset_ms", [0.0, 700.0, -1_300.0])
def test_asymmetric_delay_biases_the_estimate_within_the_error_bound(
    forward_ms: float, back_ms: float, offset_ms: float
) -> None:
    estimate = estimate_offset(
        *_exchange(offset_ms=offset_ms, forward_ms=forward_ms, back_ms=back_ms, processing_ms=3.0)
    )
    # NTP: the estimate is off by half the delay asymmetry, and the bound is half the round trip.
    assert estimate.offset_ms == pytest.approx(offset_ms + (forward_ms - back_ms) / 2, abs=1e-6)
    assert estimate.error_ms == pytest.approx((forward_ms + back_ms) / 2, abs=1e-6)
    assert abs(estimate.offset_ms - offset_ms) <= estimate.error_ms + 1e-9


def test_negative_offset_when_the_agent_is_behind() -> None:
    estimate = estimate_offset(*_exchange(offset_ms=-5_000, forward_ms=2, back_ms=2, processing_ms=1))
    assert estimate.offset_ms == pytest.approx(-5_000.0)
    assert estimate.offset_ms < 0
    assert estimate.describe() == "-5000 ms ±2"


def test_two_days_ahead() -> None:
    estimate = estimate_offset(*_exchange(offset_ms=2 * DAY_MS, forward_ms=8, back_ms=8, processing_ms=40))
    assert estimate.offset_ms == pytest.approx(2 * DAY_MS, abs=1e-3)
    assert estimate.error_ms == pytest.approx(8.0, abs=1e-6)
    assert estimate.describe() == "+172800000 ms ±8"


def test_two_days_behind() -> None:
    estimate = estimate_offset(*_exchange(offset_ms=-2 * DAY_MS, forward_ms=8, back_ms=8, processing_ms=40))
    assert estimate.offset_ms == pytest.approx(-2 * DAY_MS, abs=1e-3)


def test_agent_processing_longer_than_the_round_trip_clamps_the_error_at_zero() -> None:
    # The agent's clock ran faster during the call (or was stepped): its processing time exceeds our round
    # trip. The bound cannot be negative.
    sent, agent_received, _replied, received = _exchange(offset_ms=0, forward_ms=1, back_ms=1, processing_ms=1)
    estimate = estimate_offset(sent, agent_received, agent_received + 50 * MS, received)
    assert estimate.error_ms == 0.0


def test_agent_reply_stamped_before_receipt_is_not_treated_as_negative_processing() -> None:
    # A clock stepped backwards mid-call: negative "processing" must not inflate the round trip.
    sent = T0
    received = T0 + 10 * MS
    estimate = estimate_offset(sent, T0 + 5 * MS, T0 + 2 * MS, received)
    assert estimate.error_ms == pytest.approx(5.0)


def test_hand_computed_example() -> None:
    # Sent at 0, agent stamps 1000 and 1002 (ms), reply back at 6: offset ((1000-0) + (1002-6)) / 2 = 998,
    # round trip 6 - 2 = 4, error 2.
    estimate = estimate_offset(T0, T0 + 1000 * MS, T0 + 1002 * MS, T0 + 6 * MS)
    assert estimate.offset_ms == pytest.approx(998.0)
    assert estimate.error_ms == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("offset_ms", "error_ms", "text"),
    [(0.0, 0.0, "+0 ms ±0"), (12.4, 3.6, "+12 ms ±4"), (-7.0, 1.0, "-7 ms ±1"), (1500.0, 20.0, "+1500 ms ±20")],
)
def test_describe(offset_ms: float, error_ms: float, text: str) -> None:
    assert ClockEstimate(offset_ms, error_ms).describe() == text


def test_estimate_is_frozen() -> None:
    estimate = ClockEstimate(1.0, 2.0)
    with pytest.raises(AttributeError):
        estimate.offset_ms = 3.0  # type: ignore[misc]
