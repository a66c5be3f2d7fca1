"""Many probes to one agent over one `ProbeStream` call: what a report run sends, since a unary call per
probe costs both sides more than the handshake's own work on a busy host.

Requests queued in one turn of the event loop go out as one message; the agent answers in batches as
probes finish, each result under its request's tag. A call lives a bounded time; after it, new probes
open a fresh call while the old one finishes what it holds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import suppress

import grpc

from ...agent.probe.request_limits import MAX_PROBE_TIMEOUT_S
from ...v1 import agent_pb2, agent_pb2_grpc, probe_pb2

# Requests per message: far under the agent's 1 MiB receive limit at a few hundred bytes each.
MAX_BATCH_REQUESTS = 256
# How long the first probe queued waits for others to share its message. Every message wakes the agent's
# process; on a host where agents share cores, fewer and larger ones cost them a quarter less CPU.
BATCH_WAIT_S = 0.005
# How long one call takes new probes; the call's own deadline adds the longest probe timeout after it.
CALL_LIFETIME_S = 300.0


class StreamEnded(Exception):
    """The agent ended the stream without answering this probe, and without an error status."""


class ProbeStream:
    """One agent's open `ProbeStream` calls; `submit` hands back a future of the tagged result, or of the
    grpc.aio.AioRpcError that ended the call."""

    def __init__(self, stub: agent_pb2_grpc.AgentStub) -> None:
        self._stub = stub
        self._tags = itertools.count(1)
        self._current: _Call | None = None
        self._calls: set[_Call] = set()

    def submit(
        self, request: probe_pb2.ProbeRequest, timeout_s: float
    ) -> tuple[int, asyncio.Future[agent_pb2.TaggedProbeResult]]:
        call = self._current
        if call is None or not call.open_for_new():
            if call is not None:
                call.close_writing()
            call = self._current = _Call(self._stub, self._calls)
        tag = next(self._tags)
        return tag, call.submit(tag, request, timeout_s)

    def forget(self, tag: int) -> None:
        """No one waits for `tag` any more (timed out, cancelled); its result is dropped when it comes."""
        for call in self._calls:
            call.forget(tag)

    async def close(self) -> None:
        calls = list(self._calls)
        self._current = None
        for call in calls:
            call.cancel()
        for call in calls:
            await call.finished()


class _Call:
    def __init__(self, stub: agent_pb2_grpc.AgentStub, registry: set[_Call]) -> None:
        self._opened = time.monotonic()
        self._call = stub.ProbeStream(timeout=CALL_LIFETIME_S + MAX_PROBE_TIMEOUT_S, wait_for_ready=False)
        self._waiting: dict[int, asyncio.Future[agent_pb2.TaggedProbeResult]] = {}
        self._outbox: list[agent_pb2.TaggedProbeRequest] = []
        self._wanted = asyncio.Event()
        self._closing = False
        self._registry = registry
        registry.add(self)
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())

    def open_for_new(self) -> bool:
        return not self._closing and not self._reader.done() and time.monotonic() - self._opened < CALL_LIFETIME_S

    def submit(
        self, tag: int, request: probe_pb2.ProbeRequest, timeout_s: float
    ) -> asyncio.Future[agent_pb2.TaggedProbeResult]:
        future: asyncio.Future[agent_pb2.TaggedProbeResult] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = future
        self._outbox.append(agent_pb2.TaggedProbeRequest(tag=tag, request=request, timeout_s=timeout_s))
        self._wanted.set()
        return future

    def forget(self, tag: int) -> None:
        self._waiting.pop(tag, None)

    def close_writing(self) -> None:
        """Take no more probes; end the request side once what is queued is sent."""
        self._closing = True
        self._wanted.set()

    def cancel(self) -> None:
        self._closing = True
        self._call.cancel()

    async def finished(self) -> None:
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)

    async def _write(self) -> None:
        try:
            while True:
                await self._wanted.wait()
                await asyncio.sleep(BATCH_WAIT_S)
                self._wanted.clear()
                while self._outbox:
                    batch = agent_pb2.ProbeBatch(probes=self._outbox[:MAX_BATCH_REQUESTS])
                    del self._outbox[:MAX_BATCH_REQUESTS]
                    await self._call.write(batch)
                if self._closing:
                    await self._call.done_writing()
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call ended; the reader tells every waiting probe why

    async def _read(self) -> None:
        failure: BaseException = StreamEnded()
        try:
            async for reply in self._call:
                for entry in reply.results:
                    future = self._waiting.pop(entry.tag, None)
                    if future is not None and not future.done():
                        future.set_result(entry)
                if self._closing and not self._waiting:
                    break
        except grpc.aio.AioRpcError as error:
            failure = error
        except asyncio.CancelledError:
            failure = grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), "")
            raise
        finally:
            self._closing = True
            self._wanted.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(failure)
            self._waiting.clear()
            self._registry.discard(self)
            if not self._writer.done():
                self._writer.cancel()
            with suppress(Exception):
                self._call.cancel()
