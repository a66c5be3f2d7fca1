"""Dial-out: the agent holds one stream to each coordinator endpoint (`agent serve --connect`), for hosts
the coordinator cannot dial (behind NAT, inside Kubernetes).

Each stream is mutual TLS with the agent's fleet certificate; the coordinator's certificate must come from
the fleet CA and carry the coordinator identity expected (`NAME@HOST:PORT`, default the first
--allow-coordinator). The agent registers (name, version, labels, host facts), sends heartbeats, and
answers probe and describe requests by request id, each within the deadline the request carries, through
the same service, probe slots and checks as its listener. A stream that fails or ends is dialled again
after an exponential backoff with jitter (0.5 s doubling to 30 s), reset once a registration is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc

from ..v1 import agent_pb2, link_pb2, link_pb2_grpc
from .endpoints import EndpointError, join_host_port, split_host_port
from .errors import UsageError
from .grpc_service import AgentService
from .logs import get_logger
from .pki.credentials import FleetCredentials, channel_credentials, channel_options_for_peer
from .pki.fleet_ca import FleetPkiError, normalize_name

log = get_logger("tlsfleet.agent")

MAX_ENDPOINTS = 16
BACKOFF_INITIAL_S = 0.5
BACKOFF_CAP_S = 30.0
REGISTRATION_TIMEOUT_S = 5.0  # connecting, the TLS handshake and the coordinator's answer
MAX_REQUEST_TIMEOUT_S = 300.0
WRITE_FINISH_S = 5.0  # how long a write under way may take to finish when its task is cancelled
DEFAULT_HEARTBEAT_S = 5.0
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: link_pb2.RequestError.CODE_INVALID,
    grpc.StatusCode.RESOURCE_EXHAUSTED: link_pb2.RequestError.CODE_BUSY,
}


class ConnectError(UsageError):
    """A --connect value that is not accepted."""


@dataclass(frozen=True)
class LinkEndpoint:
    address: str  # HOST:PORT
    coordinator: str  # the coordinator identity its certificate must carry


def parse_connect(items: Sequence[str], default_coordinator: str) -> tuple[LinkEndpoint, ...]:
    """`[NAME@]HOST:PORT[,...]` (repeatable) -> endpoints, in order, each once."""
    endpoints: dict[str, LinkEndpoint] = {}
    for item in (part.strip() for text in items for part in text.split(",")):
        name, sep, address = item.rpartition("@")
        try:
            coordinator = normalize_name(name if sep else default_coordinator)
            host, port = split_host_port(address)
        except (EndpointError, FleetPkiError) as error:
            raise ConnectError(f"--connect {item!r} is not accepted: {error}; use [NAME@]HOST:PORT") from None
        endpoint = LinkEndpoint(join_host_port(host, port), coordinator)
        endpoints.setdefault(endpoint.address, endpoint)
    if len(endpoints) > MAX_ENDPOINTS:
        raise ConnectError(f"--connect names {len(endpoints)} coordinators; at most {MAX_ENDPOINTS} are accepted")
    return tuple(endpoints.values())


class Backoff:
    """Exponential delays with jitter: each one between half and all of initial x 2^attempts, capped."""

    def __init__(
        self,
        initial_s: float = BACKOFF_INITIAL_S,
        cap_s: float = BACKOFF_CAP_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial, self._cap, self._rng = initial_s, cap_s, rng
        self._attempts = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._initial * 2**self._attempts)
        self._attempts = min(self._attempts + 1, 32)
        return ceiling * (0.5 + self._rng() / 2)

    def give_up_to_cap(self) -> None:
        """A refusal that will not change by retrying: wait the longest from now on."""
        self._attempts = 32

    def reset(self) -> None:
        self._attempts = 0


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _LinkCallContext:
    """What AgentService reads of a gRPC call context, for a request that came down the stream: its
    deadline, and an abort that becomes a RequestError answer."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


class _Refused(Exception):
    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class AgentLink:
    """One coordinator endpoint: dial, register, serve requests, and dial again when the stream ends."""

    def __init__(
        self,
        endpoint: LinkEndpoint,
        *,
        credentials: FleetCredentials,
        service: AgentService,
        max_requests: int,
        backoff: Backoff | None = None,
        grace_s: float = 5.0,
    ) -> None:
        self._endpoint = endpoint
        self._credentials = credentials
        self._service = service
        self._max_requests = max_requests
        self._backoff = backoff or Backoff()
        self._grace_s = grace_s
        self._requests: dict[str, asyncio.Task[None]] = {}
        self._write_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the stream until `stop` is set."""
        bound = log.bind(coordinator=self._endpoint.coordinator, address=self._endpoint.address)
        while not stop.is_set():
            try:
                await self._stream(stop, bound)
                if stop.is_set():
                    return
                reason = "the coordinator ended the stream"
            except _Refused as refused:
                reason = refused.reason
                bound.warning("agent_link_refused", reason=reason)
                if not refused.retry:
                    self._backoff.give_up_to_cap()
            except grpc.aio.AioRpcError as error:
                details = (error.details() or "").strip()
                reason = f"{error.code().name.lower()}: {details}" if details else error.code().name.lower()
            except (TimeoutError, ConnectionError) as error:
                reason = str(error) or type(error).__name__
            except Exception as error:  # a fault in one stream must not end the agent's link for good
                reason = f"{type(error).__name__}: {error}"
                bound.error("agent_link_failed", reason=reason)
            delay = self._backoff.next()
            bound.info("agent_link_retry", reason=reason, retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _stream(self, stop: asyncio.Event, bound: Any) -> None:
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Our own backoff decides when to dial again; the channel must not wait minutes on its own, nor
            # inherit the connection state of the previous attempt's channel from the process-wide pool.
            ("grpc.enable_retries", 0),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # A stream over a dead route looks idle forever; pings notice it.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            *channel_options_for_peer("coordinator", self._endpoint.coordinator),
        ]
        channel = grpc.aio.secure_channel(self._endpoint.address, channel_credentials(self._credentials), options)
        try:
            call = link_pb2_grpc.AgentLinkStub(channel).Connect()
            registering = asyncio.ensure_future(self._register(call))
            done, _ = await asyncio.wait({registering}, timeout=REGISTRATION_TIMEOUT_S)
            if not done:
                call.cancel()  # ends the call's pending read or write, which a task cancel alone may not
                registering.cancel()
                await asyncio.gather(registering, return_exceptions=True)
                raise TimeoutError(f"no answer to the registration within {REGISTRATION_TIMEOUT_S:g} s")
            interval = registering.result()
            self._backoff.reset()
            bound.info("agent_link_connected", heartbeat_interval_s=interval)
            reader = asyncio.ensure_future(self._read(call))
            # The RPC's own end, whoever ended it: a read pending on a call that the coordinator finished does
            # not always return, and the stream would then sit idle for good instead of being dialled again.
            ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def end(_call: Any) -> None:
                if not ended.done():
                    ended.set_result(None)

            call.add_done_callback(end)
            tasks: set[asyncio.Future[Any]] = {
                reader,
                ended,
                asyncio.ensure_future(self._heartbeats(call, interval)),
                asyncio.ensure_future(stop.wait()),
            }
            try:
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # a failed stream raises here, with its reason
                if ended in finished and not stop.is_set():
                    raise ConnectionError(f"the stream ended: {await _status(call)}")
                if stop.is_set():
                    reader.cancel()  # no new requests; those in flight may finish within the grace period
                    await self._drain(bound)
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await call.done_writing()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for request in self._requests.values():
                    request.cancel()
                await asyncio.gather(*self._requests.values(), return_exceptions=True)
                self._requests.clear()
                call.cancel()
        finally:
            await channel.close(grace=None)

    async def _register(self, call: Any) -> float:
        context = cast(Any, _LinkCallContext(asyncio.get_running_loop().time() + REGISTRATION_TIMEOUT_S))
        description = await self._service.Describe(agent_pb2.DescribeRequest(), context)
        registration = link_pb2.Registration(
            name=description.agent.name,
            version=description.agent.version,
            labels=description.labels,
            facts=description.facts,
        )
        try:
            await call.write(link_pb2.AgentMessage(registration=registration))
        except asyncio.InvalidStateError:
            # The call ended before its first write (nothing listens there, the TLS handshake failed): its
            # status says why, where the write only says "RPC already finished".
            raise ConnectionError(f"the stream ended: {await _status(call)}") from None
        first = await call.read()
        if first is grpc.aio.EOF:
            raise ConnectionError(f"the coordinator closed the stream: {await call.details() or await call.code()}")
        kind = first.WhichOneof("body")
        if kind == "refusal":
            raise _Refused(first.refusal.reason, first.refusal.retry)
        if kind != "welcome":
            raise ConnectionError(f"the coordinator answered the registration with {kind or 'nothing'}")
        interval = first.welcome.heartbeat_interval_s
        return interval if 0.1 <= interval <= 300 else DEFAULT_HEARTBEAT_S

    async def _read(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("body")
            if kind in ("probe", "describe"):
                self._start(call, message)
            elif kind == "cancel":
                task = self._requests.get(message.request_id)
                if task is not None:
                    task.cancel()
            elif kind == "refusal":  # a newer stream of ours replaced this one, or the coordinator stops
                raise _Refused(message.refusal.reason, message.refusal.retry)

    def _start(self, call: Any, message: link_pb2.CoordinatorMessage) -> None:
        request_id = message.request_id
        if len(self._requests) >= self._max_requests or request_id in self._requests:
            why = "too many requests in flight" if request_id not in self._requests else "a repeated request id"
            answer = link_pb2.AgentMessage(
                request_id=request_id,
                error=link_pb2.RequestError(code=link_pb2.RequestError.CODE_BUSY, message=f"agent busy: {why}"),
            )
            task = asyncio.ensure_future(self._write(call, answer))
        else:
            task = asyncio.ensure_future(self._answer(call, message))
        self._requests[request_id] = task
        task.add_done_callback(lambda _t: self._requests.pop(request_id, None))

    async def _answer(self, call: Any, message: link_pb2.CoordinatorMessage) -> None:
        request_id = message.request_id
        timeout = message.timeout_s if 0 < message.timeout_s <= MAX_REQUEST_TIMEOUT_S else MAX_REQUEST_TIMEOUT_S
        loop = asyncio.get_running_loop()
        context = cast(Any, _LinkCallContext(loop.time() + timeout))
        try:
            async with asyncio.timeout(timeout):
                if message.WhichOneof("body") == "probe":
                    result = await self._service.Probe(message.probe, context)
                    answer = link_pb2.AgentMessage(request_id=request_id, probe_result=result)
                else:
                    description = await self._service.Describe(message.describe, context)
                    answer = link_pb2.AgentMessage(request_id=request_id, description=description)
        except _Aborted as aborted:
            code = _CODES.get(aborted.code, link_pb2.RequestError.CODE_INTERNAL)
            answer = link_pb2.AgentMessage(
                request_id=request_id, error=link_pb2.RequestError(code=code, message=aborted.details)
            )
        except TimeoutError:
            return  # the coordinator stopped waiting at the same deadline
        except Exception as error:  # one request's failure must not end the stream
            log.error("link_request_failed", request_id=request_id, error=f"{type(error).__name__}: {error}")
            answer = link_pb2.AgentMessage(
                request_id=request_id,
                error=link_pb2.RequestError(code=link_pb2.RequestError.CODE_INTERNAL, message="internal error"),
            )
        with contextlib.suppress(ConnectionError):  # the stream ended first: nobody is left to answer
            await self._write(call, answer)

    async def _heartbeats(self, call: Any, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._write(
                call,
                link_pb2.AgentMessage(
                    heartbeat=link_pb2.Heartbeat(agent_time_ns=time.time_ns(), probes_in_flight=len(self._requests))
                ),
            )

    async def _write(self, call: Any, message: link_pb2.AgentMessage) -> None:
        # One write at a time on a stream; answers and heartbeats take turns.
        async with self._write_lock:
            write = asyncio.ensure_future(call.write(message))
            write.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                # A write cancelled on its way (the coordinator's cancel of a request whose answer is being sent)
                # breaks the call: the coordinator reads the stream's end, this side never learns it and never
                # dials again. Once begun, a write finishes (within a bound); then the cancel goes on.
                await asyncio.wait({write}, timeout=WRITE_FINISH_S)
                raise
            except asyncio.InvalidStateError:
                # The RPC finished under this write: the stream's end is noticed where the call's end is.
                raise ConnectionError(f"the stream ended: {await _status(call)}") from None

    async def _drain(self, bound: Any) -> None:
        pending = list(self._requests.values())
        if pending:
            bound.info("agent_link_draining", requests=len(pending), grace_s=self._grace_s)
            await asyncio.wait(pending, timeout=self._grace_s)


async def _status(call: Any) -> str:
    """How the RPC ended, as its status code and details say."""
    try:
        code = await call.code()
        details = (await call.details() or "").strip()
    except Exception:  # the status of a call torn down mid-way may be unreadable; the end is what counts
        return "status unknown"
    name = code.name.lower() if code is not None else "unknown"
    return f"{name}: {details}" if details else name
