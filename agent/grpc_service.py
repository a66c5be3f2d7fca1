"""The tlsfleet.v1.Agent gRPC service: validates, bounds and logs requests around the probe engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import grpc

from ..v1 import agent_pb2, agent_pb2_grpc, probe_pb2
from . import wire
from .hostfacts import HostFactsCache
from .logs import get_logger
from .model import AgentDescription, AgentIdentity, ProbeOptions
from .probe.engine import ProbeEngine
from .probe.request_limits import (
    MAX_PROBE_TIMEOUT_S,
    RequestError,
    fit_to_deadline,
    request_id_of,
    validate_request,
)

log = get_logger("tlsfleet.agent")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # what the agent sends at most: 64 addresses x a 16-certificate chain fits

# A streamed result larger than this is refused on its own rather than sent: one message over the send
# limit would end the stream, and every probe still on it. Results share a message up to BATCH_BYTES.
MAX_STREAMED_RESULT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
BATCH_BYTES = 1024 * 1024
# How long the first finished result waits for others to share its message: each message wakes the caller.
BATCH_WAIT_S = 0.005


class Refused(Exception):
    """A probe not run (or not sent), with the status code and words a unary call ends with."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @classmethod
    def too_large(cls, size: int) -> Refused:
        # Not RESOURCE_EXHAUSTED, which says "busy, try later": the probe ran, its answer cannot travel.
        return cls(
            grpc.StatusCode.OUT_OF_RANGE,
            f"the result is {size} bytes; a streamed result is sent up to {MAX_STREAMED_RESULT_BYTES} bytes",
        )


def _refusal(tag: int, refused: Refused) -> agent_pb2.TaggedProbeResult:
    return agent_pb2.TaggedProbeResult(tag=tag, refused_code=refused.code.name.lower(), refused=refused.reason)


def _next_batch(finished: list[agent_pb2.TaggedProbeResult]) -> agent_pb2.ProbeResultBatch:
    """Take from `finished` as many results as fit BATCH_BYTES (at least one) into one message."""
    size, count = 0, 0
    for entry in finished:
        size += entry.ByteSize()
        if count and size > BATCH_BYTES:
            break
        count += 1
    batch = agent_pb2.ProbeResultBatch(results=finished[:count])
    del finished[:count]
    return batch


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

    @property
    def capacity(self) -> int:
        return self._capacity


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
        try:
            return await self._answer(request, context.time_remaining)
        except Refused as refused:
            await context.abort(refused.code, refused.reason)
            raise  # abort raises; this line only tells the type checker so

    async def ProbeStream(
        self, batches: AsyncIterator[agent_pb2.ProbeBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ProbeResultBatch]:
        """Each request is answered, or refused as a unary Probe would be, under its tag; results go out
        as they finish, several to a message when several are ready."""
        finished: list[agent_pb2.TaggedProbeResult] = []
        ready = asyncio.Event()
        running: set[asyncio.Task[None]] = set()
        # Requests are read only while those running and those not yet sent fit the slots: a caller that
        # sends without reading is held back by gRPC's flow control, not by this agent's memory.
        room = asyncio.Semaphore(self._slots.capacity)

        async def answer(tag: int, request: probe_pb2.ProbeRequest, timeout_s: float) -> None:
            ends = time.monotonic() + timeout_s if timeout_s > 0 else None

            def time_left() -> float | None:
                call_left = context.time_remaining()
                if ends is None:
                    return call_left
                left = ends - time.monotonic()
                return left if call_left is None else min(left, call_left)

            try:
                if not 0 <= timeout_s <= MAX_PROBE_TIMEOUT_S:  # NaN too
                    raise Refused(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"timeout_s {timeout_s!r} is out of range; accepted: 0 (the call's deadline) to "
                        f"{MAX_PROBE_TIMEOUT_S:g} seconds",
                    )
                entry = agent_pb2.TaggedProbeResult(tag=tag, result=await self._answer(request, time_left))
                if entry.ByteSize() > MAX_STREAMED_RESULT_BYTES:
                    entry = _refusal(tag, Refused.too_large(entry.ByteSize()))
            except Refused as refused:
                entry = _refusal(tag, refused)
            except Exception as error:  # a unary call would end UNKNOWN; the stream's other probes go on
                log.exception("probe_failed", tag=tag)
                entry = _refusal(tag, Refused(grpc.StatusCode.UNKNOWN, f"the probe failed: {type(error).__name__}"))
            finished.append(entry)
            ready.set()

        async def read() -> None:
            async for batch in batches:
                for probe in batch.probes:
                    await room.acquire()
                    task = asyncio.create_task(answer(probe.tag, probe.request, probe.timeout_s))
                    running.add(task)
                    task.add_done_callback(running.discard)

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: ready.set())
        try:
            while True:
                await ready.wait()
                await asyncio.sleep(BATCH_WAIT_S)
                ready.clear()
                while finished:
                    batch = _next_batch(finished)
                    for _ in batch.results:
                        room.release()
                    yield batch
                if reader.done() and not running and not finished:
                    reader.result()  # a broken request stream ends the call with its error
                    return
        finally:
            reader.cancel()
            for task in running:
                task.cancel()

    async def _answer(
        self, request: probe_pb2.ProbeRequest, time_left: Callable[[], float | None]
    ) -> probe_pb2.ProbeResult:
        """Run one probe within the slots and the caller's deadline (`time_left` seconds, None: none); raises
        Refused with the status a unary call ends with."""
        request_id = request_id_of(request.request_id)
        bound = log.bind(request_id=request_id, target=f"{request.target.host}:{request.target.port}")
        try:
            probe_request = validate_request(wire.request_from_wire(request, self._defaults))
        except RequestError as error:
            bound.info("probe_refused", reason=str(error))
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        if not self._slots.try_enter():
            bound.warning("probe_refused", reason="busy")
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"agent {self._identity.name} is busy: too many probes in flight; retry later",
            )
        started = time.perf_counter()
        try:
            async with self._slots.semaphore:
                probe_request = fit_to_deadline(probe_request, time_left())
                result = await self._engine.probe(probe_request)
        except RequestError as error:
            # The engine's own checks (a host or SNI that is not a valid name) refuse by name too.
            bound.info("probe_refused", reason=str(error))
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
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
