"""What asking one vantage gave: its identity, the state it ended in, its answer and its clock.

The data model the fleet produces and the diagnosis, recordings, reports and history read."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..agent.model import AgentDescription, ProbeResult


class VantageState(StrEnum):
    OK = "ok"
    OFFLINE = "offline"  # could not reach the agent (connection refused, no route, TLS to the agent failed)
    TIMEOUT = "timeout"  # no answer before the deadline
    REFUSED = "refused"  # the agent answered but would not serve us (identity, busy, bad request)
    ERROR = "error"  # the agent failed, or its reply was not what we asked for


class VantageKind(StrEnum):
    LOCAL = "local"  # the machine the CLI runs on, probing in process
    GRPC = "grpc"  # an agent we dial
    DIAL_IN = "dial-in"  # an agent that dials us


@dataclass(frozen=True)
class VantageInfo:
    """A vantage as the coordinator knows it: name, address, labels and how it is reached."""

    name: str
    address: str  # "local" for the machine the CLI runs on
    labels: tuple[tuple[str, str], ...] = ()
    kind: VantageKind = VantageKind.GRPC


@dataclass(frozen=True)
class ClockEstimate:
    """An agent's clock offset from the coordinator's, with its error bound."""

    offset_ms: float  # agent clock minus coordinator clock; positive: the agent is ahead
    error_ms: float  # the true offset lies within offset_ms +/- error_ms

    def describe(self) -> str:
        return f"{self.offset_ms:+.0f} ms ±{self.error_ms:.0f}"


@dataclass(frozen=True)
class ProbeOutcome:
    """What asking one vantage for a probe gave: its state, the result when it answered, its clock."""

    vantage: VantageInfo
    state: VantageState
    result: ProbeResult | None = None
    agent_version: str = ""
    clock: ClockEstimate | None = None
    error: str = ""
    duration_ms: float = 0.0


@dataclass(frozen=True)
class DescribeOutcome:
    """What asking one vantage to describe itself gave: its state, the description when it answered."""

    vantage: VantageInfo
    state: VantageState
    description: AgentDescription | None = None
    clock: ClockEstimate | None = None
    error: str = ""
    duration_ms: float = 0.0
