"""The tlsfleet.v1.Agent gRPC service: validates, bounds and logs requests around the probe engine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc

from ..v1 import agent_pb2, agent_pb2_grpc, probe_pb2
from . import wire
from .hostfacts import HostFactsCache
from .logs import get_logger
from .model import AgentDescription, AgentIdentity, ProbeOptions
from .probe.engine import ProbeEngine
from .probe.request_limits import RequestError, fit_to_deadline, request_id_of, validate_request

log = get_logger("tlsfleet.agent")


class ProbeSlots:
    """At most `running` probes at once and at most `waiting` queued behind them; the rest are refused."""

    def __init__(self, running: int, waiting: int) -> None:
        self._semaphore = asyncio.Semaphore(running)
        self._capacity = running + waiting
        self._occupied = 0

    def try_enter(self) -> bool:
        if self._occupied >= self._capacity:
            return False
        self._occupied += 1
        return True

    def leave(self) -> None:
        self._occupied -= 1

    @property
    def semaphore(self) -> asyncio.Semaphore:
        return self._semaphore


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        *,
        engine: ProbeEngine,
        identity: AgentIdentity,
        facts: HostFactsCache,
        max_concurrent_probes: int,
        max_waiting_probes: int,
        defaults: ProbeOptions | None = None,
    ) -> None:
        self._engine = engine
        self._identity = identity
        self._facts = facts
        self._slots = ProbeSlots(max_concurrent_probes, max_waiting_probes)
        self._defaults = defaults or ProbeOptions()

    async def Probe(self, request: probe_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> probe_pb2.ProbeResult:
        request_id = request_id_of(request.request_id)
        bound = log.bind(request_id=request_id, target=f"{request.target.host}:{request.target.port}")
        try:
            probe_request = validate_request(wire.request_from_wire(request, self._defaults))
        except RequestError as error:
            bound.info("probe_refused", reason=str(error))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if not self._slots.try_enter():
            bound.warning("probe_refused", reason="busy")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"agent {self._identity.name} is busy: too many probes in flight; retry later",
            )
        started = time.perf_counter()
        try:
            async with self._slots.semaphore:
                probe_request = fit_to_deadline(probe_request, context.time_remaining())
                result = await self._engine.probe(probe_request)
        except RequestError as error:
            # The engine's own checks (a host or SNI that is not a valid name) refuse by name too.
            bound.info("probe_refused", reason=str(error))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        finally:
            self._slots.leave()
        result = replace(result, request_id=request_id)
        bound.info(
            "probe_done",
            addresses=len(result.addresses),
            resolution_failure=str(result.resolution.failure),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return wire.result_to_wire(result, self._identity.name, self._identity.version)

    async def Describe(
        self, request: agent_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.AgentDescription:
        description = AgentDescription(
            identity=self._identity,
            # Gathering may run a short command when the facts are stale; keep it off the event loop.
            facts=await asyncio.to_thread(self._facts.get, request.target_host or None),
            trust_stores=self._engine.trust_stores(include_roots=request.include_roots),
            agent_time_ns=time.time_ns(),
            probe_policy=self._engine.policy.describe() if self._engine.policy is not None else (),
        )
        log.info("describe_done")
        return wire.description_to_wire(description)
