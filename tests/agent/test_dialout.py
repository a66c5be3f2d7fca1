"""The agent's side of dial-out: --connect endpoints, the reconnection backoff, and answering requests
that come down the stream by id, within their deadline, with the listener's checks."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tlsfleet.agent.dialout import AgentLink, Backoff, ConnectError, LinkEndpoint, parse_connect
from tlsfleet.agent.errors import UsageError
from tlsfleet.v1 import agent_pb2, link_pb2, probe_pb2


def test_connect_endpoints_name_the_coordinator_to_expect() -> None:
    assert parse_connect(["10.0.0.1:7443,hub@[::1]:7444", "10.0.0.1:7443"], "coordinator") == (
        LinkEndpoint("10.0.0.1:7443", "coordinator"),
        LinkEndpoint("[::1]:7444", "hub"),
    )


@pytest.mark.parametrize("bad", ["10.0.0.1", "Bad_Name@10.0.0.1:7443", "10.0.0.1:99999", ""])
def test_a_bad_connect_value_is_one_clear_line(bad: str) -> None:
    with pytest.raises(ConnectError) as caught:
        parse_connect([bad], "coordinator")
    assert isinstance(caught.value, UsageError)
    assert str(caught.value).startswith(f"--connect {bad!r} is not accepted")
    assert "[NAME@]HOST:PORT" in str(caught.value) and "\n" not in str(caught.value)


def test_backoff_doubles_from_half_a_second_to_its_cap_with_jitter() -> None:
    highest = Backoff(rng=lambda: 1.0)
    assert [highest.next() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    lowest = Backoff(rng=lambda: 0.0)
    assert [lowest.next() for _ in range(3)] == [0.25, 0.5, 1.0]
    highest.reset()
    assert highest.next() == 0.5
    highest.give_up_to_cap()
    assert highest.next() == 30.0


class _Call:
    def __init__(self) -> None:
        self.written: list[link_pb2.AgentMessage] = []

    async def write(self, message: link_pb2.AgentMessage) -> None:
        self.written.append(message)


class _Service:
    """AgentService's two methods, with the behaviours the stream must carry back."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.seen_remaining: float | None = None

    async def Probe(self, request: probe_pb2.ProbeRequest, context: Any) -> probe_pb2.ProbeResult:
        self.seen_remaining = context.time_remaining()
        if self.behaviour == "busy":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "agent edge-1 is busy")
        if self.behaviour == "hang":
            await asyncio.sleep(60)
        return probe_pb2.ProbeResult(agent=probe_pb2.AgentRef(name="edge-1"), target=request.target)

    async def Describe(self, request: agent_pb2.DescribeRequest, context: Any) -> agent_pb2.AgentDescription:
        return agent_pb2.AgentDescription(agent=probe_pb2.AgentRef(name="edge-1"))


def answer(behaviour: str, timeout_s: float) -> tuple[list[link_pb2.AgentMessage], _Service]:
    service = _Service(behaviour)
    link = AgentLink(
        LinkEndpoint("127.0.0.1:1", "coordinator"),
        credentials=None,  # type: ignore[arg-type]  # no stream is dialled here
        service=service,  # type: ignore[arg-type]
        max_requests=4,
    )
    call = _Call()
    request = link_pb2.CoordinatorMessage(
        request_id="7",
        timeout_s=timeout_s,
        probe=probe_pb2.ProbeRequest(target=probe_pb2.Target(host="a.test", port=1)),
    )
    asyncio.run(link._answer(call, request))
    return call.written, service


def test_an_answer_carries_its_request_id_and_the_deadline_reaches_the_probe() -> None:
    [reply], service = answer("ok", 4.0)
    assert reply.request_id == "7" and reply.WhichOneof("body") == "probe_result"
    assert service.seen_remaining is not None and 3.5 < service.seen_remaining <= 4.0


def test_a_refusal_goes_back_by_id_with_its_reason() -> None:
    [reply], _ = answer("busy", 4.0)
    assert reply.request_id == "7"
    assert reply.error.code == link_pb2.RequestError.CODE_BUSY
    assert reply.error.message == "agent edge-1 is busy"


def test_a_request_past_its_deadline_is_abandoned_without_an_answer() -> None:
    written, _ = answer("hang", 0.2)
    assert written == []


class _SlowCall:
    """A call whose writes take a while, and that records whether one was ever cut off or overlapped."""

    def __init__(self) -> None:
        self.finished: list[link_pb2.AgentMessage] = []
        self.cut_off = 0
        self.writing = 0
        self.overlapped = False

    async def write(self, message: link_pb2.AgentMessage) -> None:
        self.writing += 1
        self.overlapped |= self.writing > 1
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            self.cut_off += 1
            raise
        finally:
            self.writing -= 1
        self.finished.append(message)


def test_a_write_under_way_is_never_cut_off_by_its_requests_cancel() -> None:
    """The coordinator's cancel of a request whose answer is being written: cut off, the write broke the call
    (the coordinator read the stream's end, the agent never learned it and never dialled again)."""
    link = AgentLink(
        LinkEndpoint("127.0.0.1:1", "coordinator"),
        credentials=None,  # type: ignore[arg-type]  # no stream is dialled here
        service=_Service("ok"),  # type: ignore[arg-type]
        max_requests=4,
    )
    call = _SlowCall()

    async def go() -> None:
        answering = asyncio.ensure_future(link._write(call, link_pb2.AgentMessage(request_id="7")))
        await asyncio.sleep(0.02)  # the write is under way
        heartbeat = asyncio.ensure_future(link._write(call, link_pb2.AgentMessage(request_id="")))
        answering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answering
        await heartbeat

    asyncio.run(go())
    assert call.cut_off == 0 and not call.overlapped
    assert [m.request_id for m in call.finished] == ["7", ""], "the answer finished, then the next write"


class _FinishedCall:
    """A stream call that gRPC finished before its first write: connection refused."""

    async def write(self, message: link_pb2.AgentMessage) -> None:
        raise asyncio.InvalidStateError("RPC already finished.")

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str:
        return "failed to connect to all addresses; last error: Connection refused"


def test_a_call_that_ended_before_the_registration_says_why_it_ended() -> None:
    # The write's own words ("InvalidStateError: RPC already finished.") were once logged as agent_link_failed.
    link = AgentLink(
        LinkEndpoint("127.0.0.1:1", "coordinator"),
        credentials=None,  # type: ignore[arg-type]  # no stream is dialled here
        service=_Service("ok"),  # type: ignore[arg-type]
        max_requests=4,
    )
    with pytest.raises(ConnectionError, match=r"the stream ended: unavailable: failed to connect .* refused"):
        asyncio.run(link._register(_FinishedCall()))
