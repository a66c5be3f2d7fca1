"""The machine the CLI runs on, as the vantage `local`: the agent's probe engine, in process."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from ... import __version__
from ...agent.model import AgentDescription, AgentIdentity, ProbeRequest
from ...agent.probe.engine import ProbeEngine
from ...agent.probe.request_limits import RequestError, fit_to_deadline, validate_request
from ...agent.trust import store_cache
from ..outcomes import ClockEstimate, DescribeOutcome, ProbeOutcome, VantageInfo, VantageKind, VantageState
from .vantage import LOCAL_NAME

if TYPE_CHECKING:
    from ...agent.hostfacts import HostFactsCache

_SAME_CLOCK = ClockEstimate(offset_ms=0.0, error_ms=0.0)


class LocalVantage:
    def __init__(self, engine: ProbeEngine | None = None) -> None:
        # A CLI process discovers the trust stores afresh every run: what earlier runs parsed is kept on disk.
        store_cache.enable()
        self.info = VantageInfo(name=LOCAL_NAME, address="local", kind=VantageKind.LOCAL)
        self._engine = engine or ProbeEngine()
        self._environ = dict(os.environ)  # the host facts describe this environment, as the vantage began
        self._facts: HostFactsCache | None = None  # made by the first describe: a probe needs no host facts

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome:
        started = time.perf_counter()
        try:
            request = fit_to_deadline(validate_request(request), timeout_s)
            async with asyncio.timeout(timeout_s):
                result = await self._engine.probe(request)
        except RequestError as error:
            return self._outcome(VantageState.REFUSED, started, error=str(error))
        except TimeoutError:
            return self._outcome(VantageState.TIMEOUT, started, error=f"no result within {timeout_s:g} s")
        return ProbeOutcome(
            vantage=self.info,
            state=VantageState.OK,
            result=result,
            agent_version=__version__,
            clock=_SAME_CLOCK,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome:
        started = time.perf_counter()
        description = AgentDescription(
            identity=AgentIdentity(name=LOCAL_NAME, version=__version__),
            facts=self._host_facts().get(target_host),
            trust_stores=self._engine.trust_stores(include_roots=include_roots),
            agent_time_ns=time.time_ns(),
        )
        return DescribeOutcome(
            vantage=self.info,
            state=VantageState.OK,
            description=description,
            clock=_SAME_CLOCK,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    async def close(self) -> None:
        store_cache.save()  # what judging learnt after discovery (names of the stores' certificates)

    def _host_facts(self) -> HostFactsCache:
        if self._facts is None:
            from ...agent.hostfacts import HostFactsCache

            self._facts = HostFactsCache(__version__, self._environ)
        return self._facts

    def _outcome(self, state: VantageState, started: float, *, error: str) -> ProbeOutcome:
        return ProbeOutcome(
            vantage=self.info,
            state=state,
            error=error,
            agent_version=__version__,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
