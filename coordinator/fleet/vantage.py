"""A vantage is a place probes run from: the local machine, an agent we dial, or (later) an agent that
dials in. The fan-out speaks only this interface, so every kind plugs in the same way."""

from __future__ import annotations

from typing import Protocol

from ...agent.model import ProbeRequest
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageInfo

# The vantage of the machine the command runs on, beside the agents it names.
LOCAL_NAME = "local"


class Vantage(Protocol):
    info: VantageInfo

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome: ...

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome: ...

    async def close(self) -> None: ...
