"""Estimate an agent's clock offset from one request/response exchange (the NTP formula)."""

from __future__ import annotations

from ..outcomes import ClockEstimate


def estimate_offset(sent_ns: int, agent_received_ns: int, agent_replied_ns: int, received_ns: int) -> ClockEstimate:
    """Coordinator sent at `sent_ns` and got the reply at `received_ns` (its clock); the agent stamped
    receipt and reply (its clock). The network delay is unknown per direction, so the error bound is
    half the round trip minus the agent's own processing time."""
    offset_ns = ((agent_received_ns - sent_ns) + (agent_replied_ns - received_ns)) / 2
    round_trip_ns = (received_ns - sent_ns) - max(agent_replied_ns - agent_received_ns, 0)
    return ClockEstimate(offset_ms=offset_ns / 1e6, error_ms=max(round_trip_ns, 0) / 2e6)
