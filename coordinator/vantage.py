"""A vantage is a place probes run from: the local machine, an agent we dial, or (later) an agent that
dials in. The fan-out speaks only this interface, so every kind plugs in the same way."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from tlsfleet.agent.model import AgentDescription, ProbeRequest, ProbeResult
from tlsfleet.coordinator.clock import ClockEstimate


class VantageState(StrEnum):
    OK = "ok"
    OFFLINE = "offline"  # could not reach the agent (connection refused, no route, TLS to the agent failed)
    TIMEOUT = "timeout"  # no answer before the deadline
    REFUSED = "refused"  # the agent answered but would not serve us (identity, busy, bad request)
    ERROR = "error"  # the agent failed, or its reply was not what we asked for


@dataclass(frozen=True)
class VantageInfo:
    name: str
    address: str  # "local" for the machine the CLI runs on
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "grpc"  # "local", "grpc" (we dial it), "dial-in"


@dataclass(frozen=True)
class ProbeOutcome:
    vantage: VantageInfo
    state: VantageState
    result: ProbeResult | None = None
    agent_version: str = ""
    clock: ClockEstimate | None = None
    error: str = ""
    duration_ms: float = 0.0


@dataclass(frozen=True)
class DescribeOutcome:
    vantage: VantageInfo
    state: VantageState
    description: AgentDescription | None = None
    clock: ClockEstimate | None = None
    error: str = ""
    duration_ms: float = 0.0


class Vantage(Protocol):
    info: VantageInfo

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome: ...

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome: ...

    async def close(self) -> None: ...
