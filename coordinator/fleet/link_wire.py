"""What a coordinator tells a CLI about its dial-in agents (tlsfleet.v1.FleetQuery), both ways."""

from __future__ import annotations

from ...agent import wire
from ...v1 import agent_pb2, link_pb2
from ..outcomes import ClockEstimate, DescribeOutcome, ProbeOutcome, VantageInfo, VantageKind, VantageState
from .link_registry import LinkedAgentInfo


def _labels(pairs: tuple[tuple[str, str], ...]) -> list[agent_pb2.Label]:
    return [agent_pb2.Label(key=k, value=v) for k, v in pairs]


def _state(text: str) -> VantageState:
    try:
        return VantageState(text)
    except ValueError:  # a newer coordinator's state this CLI does not know
        return VantageState.ERROR


def _clock(has: bool, offset_ms: float, error_ms: float) -> ClockEstimate | None:
    return ClockEstimate(offset_ms=offset_ms, error_ms=error_ms) if has else None


def linked_agent_to_wire(agent: LinkedAgentInfo, outcome: DescribeOutcome | None) -> link_pb2.LinkedAgent:
    message = link_pb2.LinkedAgent(
        name=agent.name,
        address=agent.address,
        labels=_labels(agent.labels),
        link_state=str(agent.state),
        version=agent.version,
    )
    if outcome is not None:
        message.state = str(outcome.state)
        message.error = outcome.error
        message.duration_ms = outcome.duration_ms
        if outcome.description is not None:
            message.description.CopyFrom(wire.description_to_wire(outcome.description))
        if outcome.clock is not None:
            message.has_clock = True
            message.clock_offset_ms = outcome.clock.offset_ms
            message.clock_error_ms = outcome.clock.error_ms
    return message


def linked_agent_info(message: link_pb2.LinkedAgent) -> VantageInfo:
    labels = tuple((label.key, label.value) for label in message.labels)
    return VantageInfo(name=message.name, address=message.address, labels=labels, kind=VantageKind.DIAL_IN)


def describe_from_wire(info: VantageInfo, message: link_pb2.LinkedAgent) -> DescribeOutcome:
    return DescribeOutcome(
        vantage=info,
        state=_state(message.state),
        description=wire.description_from_wire(message.description) if message.HasField("description") else None,
        clock=_clock(message.has_clock, message.clock_offset_ms, message.clock_error_ms),
        error=message.error,
        duration_ms=message.duration_ms,
    )


def probe_outcome_to_wire(outcome: ProbeOutcome) -> link_pb2.FleetProbeOutcome:
    message = link_pb2.FleetProbeOutcome(
        name=outcome.vantage.name,
        address=outcome.vantage.address,
        labels=_labels(outcome.vantage.labels),
        state=str(outcome.state),
        error=outcome.error,
        agent_version=outcome.agent_version,
        duration_ms=outcome.duration_ms,
    )
    if outcome.result is not None:
        message.result.CopyFrom(wire.result_to_wire(outcome.result, outcome.vantage.name, outcome.agent_version))
    if outcome.clock is not None:
        message.has_clock = True
        message.clock_offset_ms = outcome.clock.offset_ms
        message.clock_error_ms = outcome.clock.error_ms
    return message


def probe_outcome_from_wire(info: VantageInfo, message: link_pb2.FleetProbeOutcome) -> ProbeOutcome:
    result = wire.result_from_wire(message.result)[0] if message.HasField("result") else None
    return ProbeOutcome(
        vantage=info,
        state=_state(message.state),
        result=result,
        agent_version=message.agent_version,
        clock=_clock(message.has_clock, message.clock_offset_ms, message.clock_error_ms),
        error=message.error,
        duration_ms=message.duration_ms,
    )
