"""An agent the coordinator dials over gRPC, with mutual TLS unless the inventory says insecure."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import grpc

from ...agent import wire
from ...agent.model import ProbeRequest, TrustStore
from ...agent.pki.credentials import FleetCredentials, channel_credentials, channel_options_for_peer
from ...v1 import agent_pb2, agent_pb2_grpc, probe_pb2
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageInfo, VantageKind, VantageState
from .clock_offset import estimate_offset
from .inventory import AgentEntry
from .probe_stream import ProbeStream, StreamEnded
from .rpc_failures import CallContext, explain_rpc_failure

MAX_REPLY_BYTES = 32 * 1024 * 1024
# gRPC's words when a reply exceeds grpc.max_receive_message_length.
_OVERSIZED = re.compile(r"Received message larger than max \((\d+) vs\. \d+\)")

# How a failed call to an agent (dialled, or through a coordinator's relay) reads as the vantage's state.
STATE_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: VantageState.OFFLINE,
    grpc.StatusCode.DEADLINE_EXCEEDED: VantageState.TIMEOUT,
    grpc.StatusCode.PERMISSION_DENIED: VantageState.REFUSED,
    grpc.StatusCode.UNAUTHENTICATED: VantageState.REFUSED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: VantageState.REFUSED,
    grpc.StatusCode.INVALID_ARGUMENT: VantageState.REFUSED,
}


class GrpcVantage:
    def __init__(
        self, entry: AgentEntry, credentials: FleetCredentials | None, *, ca_hint: str = "", streamed: bool = False
    ) -> None:
        """`streamed`: probes go as the messages of ProbeStream calls (a caller with many to make); an agent
        that does not offer it is asked by unary calls from then on."""
        self.info = VantageInfo(name=entry.name, address=entry.address, labels=entry.labels, kind=VantageKind.GRPC)
        self._call = CallContext(agent=entry.name, address=entry.address, ca="" if entry.insecure else ca_hint)
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
            # An agent that vanished should be noticed within the deadline, not after minutes of backoff.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.enable_retries", 0),
        ]
        if entry.insecure:
            self._channel = grpc.aio.insecure_channel(entry.address, options=options)
        else:
            if credentials is None:
                raise ValueError(f"agent {entry.name} needs mutual TLS credentials")
            options += channel_options_for_peer("agent", entry.name)
            self._channel = grpc.aio.secure_channel(entry.address, channel_credentials(credentials), options)
        self._stub = agent_pb2_grpc.AgentStub(self._channel)
        self._stream = ProbeStream(self._stub) if streamed else None
        self._trust_stores: tuple[TrustStore, ...] = ()

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome:
        started = time.perf_counter()
        sent_ns = time.time_ns()
        message = wire.request_to_wire(request)
        try:
            if self._stream is not None:
                reply = await self._streamed(message, timeout_s)
            else:
                reply = await self._stub.Probe(message, timeout=timeout_s, wait_for_ready=False)
        except grpc.aio.AioRpcError as error:
            return self._failed(self._state(error), self._explain(error), started)
        except _Refused as refused:
            code = grpc.StatusCode.__members__.get(refused.code.upper(), grpc.StatusCode.UNKNOWN)
            explained = explain_rpc_failure(code.name.lower(), refused.reason, self._call)
            return self._failed(STATE_BY_CODE.get(code, VantageState.ERROR), explained, started)
        except StreamEnded:
            return self._failed(
                VantageState.ERROR, f"agent {self.info.name} ended the probe stream without answering", started
            )
        received_ns = time.time_ns()
        duration_ms = (time.perf_counter() - started) * 1000
        result, agent_name, agent_version = wire.result_from_wire(reply)
        problem = "" if agent_name != self.info.name else wire.result_problem(reply, request)
        if problem:
            return ProbeOutcome(
                vantage=self.info,
                state=VantageState.ERROR,
                agent_version=wire.shown(agent_version),
                error=f"agent {self.info.name}'s reply is refused: {problem}",
                duration_ms=duration_ms,
            )
        if agent_name != self.info.name:
            return ProbeOutcome(
                vantage=self.info,
                state=VantageState.ERROR,
                agent_version=wire.shown(agent_version),
                error=f"the reply came from agent '{wire.shown(agent_name)}', but the inventory names "
                f"{self.info.name!r} at {self.info.address}",
                duration_ms=duration_ms,
            )
        # Every reply repeats the agent's trust-store list; one shared copy keeps a fleet-wide run small.
        if result.trust_stores == self._trust_stores:
            result = replace(result, trust_stores=self._trust_stores)
        else:
            self._trust_stores = result.trust_stores
        clock = estimate_offset(sent_ns, result.agent_received_ns, result.agent_replied_ns, received_ns)
        return ProbeOutcome(
            vantage=self.info,
            state=VantageState.OK,
            result=result,
            agent_version=agent_version,
            clock=clock,
            duration_ms=duration_ms,
        )

    async def _streamed(self, message: probe_pb2.ProbeRequest, timeout_s: float) -> probe_pb2.ProbeResult:
        assert self._stream is not None
        deadline = time.monotonic() + timeout_s
        tag, answer = self._stream.submit(message, timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                entry = await answer
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "Deadline Exceeded"
            ) from None
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                self._stream = None  # an agent from before ProbeStream: unary calls from now on
            elif error.code() is not grpc.StatusCode.INTERNAL:
                raise
            # INTERNAL is also what grpc.aio reports in place of the agent's own status when the agent ended
            # the stream (refusing this coordinator, say) while a write was under way; one unary call asks
            # again and ends with the agent's true answer or status.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            return await self._stub.Probe(message, timeout=remaining, wait_for_ready=False)
        finally:
            self._stream_forget(tag)
        if entry.refused_code:
            raise _Refused(entry.refused_code, entry.refused)
        return entry.result

    def _stream_forget(self, tag: int) -> None:
        if self._stream is not None:
            self._stream.forget(tag)

    def _failed(self, state: VantageState, error: str, started: float) -> ProbeOutcome:
        return ProbeOutcome(
            vantage=self.info, state=state, error=error, duration_ms=(time.perf_counter() - started) * 1000
        )

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome:
        started = time.perf_counter()
        sent_ns = time.time_ns()
        try:
            reply = await self._stub.Describe(
                agent_pb2.DescribeRequest(target_host=target_host or "", include_roots=include_roots),
                timeout=timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            return DescribeOutcome(
                vantage=self.info,
                state=self._state(error),
                error=self._explain(error),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        received_ns = time.time_ns()
        description = wire.description_from_wire(reply)
        duration_ms = (time.perf_counter() - started) * 1000
        problem = wire.description_problem(reply)
        if problem:
            return DescribeOutcome(
                vantage=self.info,
                state=VantageState.ERROR,
                error=f"agent {self.info.name}'s description is refused: {problem}",
                duration_ms=duration_ms,
            )
        if description.identity.name != self.info.name:
            return DescribeOutcome(
                vantage=self.info,
                state=VantageState.ERROR,
                error=f"the reply came from agent '{wire.shown(description.identity.name)}', but the inventory names "
                f"{self.info.name!r} at {self.info.address}",
                duration_ms=duration_ms,
            )
        # Describe has a single agent timestamp; treat receipt and reply as one instant.
        stamp = description.agent_time_ns
        return DescribeOutcome(
            vantage=self.info,
            state=VantageState.OK,
            description=description,
            clock=estimate_offset(sent_ns, stamp, stamp, received_ns),
            duration_ms=duration_ms,
        )

    @staticmethod
    def _state(error: grpc.aio.AioRpcError) -> VantageState:
        if _oversized(error):
            return VantageState.ERROR  # the agent answered; this side would not take the answer
        return STATE_BY_CODE.get(error.code(), VantageState.ERROR)

    def _explain(self, error: grpc.aio.AioRpcError) -> str:
        size = _oversized(error)
        if size:
            return (
                f"agent {self.info.name}'s reply is refused: it is {size} bytes; at most {MAX_REPLY_BYTES} "
                f"({MAX_REPLY_BYTES // 2**20} MiB) are accepted"
            )
        return explain_rpc_failure(error.code().name.lower(), error.details() or "", self._call)

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
        await self._channel.close(grace=None)


class _Refused(Exception):
    """A streamed probe the agent refused, with the status code a unary call would have ended with."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _oversized(error: grpc.aio.AioRpcError) -> int:
    """The size of a reply refused for exceeding MAX_REPLY_BYTES, or 0."""
    if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return 0
    found = _OVERSIZED.search(error.details() or "")
    return int(found.group(1)) if found else 0
