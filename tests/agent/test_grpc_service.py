"""The agent's gRPC service on a real grpc.aio server: bounds, deadlines, request ids, refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tlsfleet import __version__
from tlsfleet.agent import wire
from tlsfleet.agent.grpc_service import AgentService
from tlsfleet.agent.hostfacts import HostFactsCache
from tlsfleet.agent.logs import configure_service_logging
from tlsfleet.agent.model import AgentIdentity, Failure, ProbeOptions, ProbeRequest, Target
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc, probe_pb2


async def serve(service: AgentService) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def make_service(*, running: int = 4, waiting: int = 4) -> AgentService:
    return AgentService(
        engine=ProbeEngine(),
        identity=AgentIdentity(name="svc-1", version=__version__, labels=(("env", "test"),)),
        facts=HostFactsCache(__version__, os.environ),
        max_concurrent_probes=running,
        max_waiting_probes=waiting,
    )


@pytest.fixture
def stalling_server() -> Iterator[TlsServer]:
    with TlsServer(None, mode="stall", host="127.0.0.1") as server:
        yield server


@pytest.fixture
def tls_server() -> Iterator[TlsServer]:
    pki = LabPKI()
    leaf = pki.issue_leaf("localhost")
    with TlsServer(ServedIdentity.of(leaf, pki.intermediate), host="127.0.0.1") as server:
        yield server


def request(port: int, *, handshake_timeout: float = 5.0, request_id: str = "") -> probe_pb2.ProbeRequest:
    return wire.request_to_wire(
        ProbeRequest(
            target=Target("127.0.0.1", port),
            options=ProbeOptions(handshake_timeout=handshake_timeout, connect_timeout=2.0),
            request_id=request_id,
        )
    )


def test_reply_names_the_agent_and_carries_the_request_id(tls_server: TlsServer) -> None:
    log = io.StringIO()
    configure_service_logging("info", stream=log)

    async def scenario() -> probe_pb2.ProbeResult:
        server, port = await serve(make_service())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                return await stub.Probe(request(tls_server.port, request_id="req-abc123"), timeout=10)
        finally:
            await server.stop(None)

    reply = asyncio.run(scenario())
    assert reply.agent.name == "svc-1"
    assert reply.agent.version == __version__
    assert reply.request_id == "req-abc123"
    assert len(reply.addresses) == 1
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    done = [e for e in events if e["event"] == "probe_done"]
    assert done and done[0]["request_id"] == "req-abc123"
    assert done[0]["target"] == f"127.0.0.1:{tls_server.port}"
    assert done[0]["level"] == "info" and "timestamp" in done[0]


@pytest.mark.slow
def test_callers_deadline_bounds_the_probe(stalling_server: TlsServer) -> None:
    """A 1 s deadline against a server that never answers: the agent replies with a handshake timeout in time,
    rather than letting the caller's deadline expire."""

    async def scenario() -> probe_pb2.ProbeResult:
        server, port = await serve(make_service())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                return await stub.Probe(request(stalling_server.port, handshake_timeout=30.0), timeout=1.0)
        finally:
            await server.stop(None)

    reply = asyncio.run(scenario())
    result, _name, _version = wire.result_from_wire(reply)
    [address] = result.addresses
    assert address.handshake.failure is Failure.HANDSHAKE_TIMEOUT


@pytest.mark.slow
def test_probes_beyond_the_bound_are_refused_as_busy(stalling_server: TlsServer) -> None:
    async def scenario() -> list[grpc.StatusCode | None]:
        server, port = await serve(make_service(running=1, waiting=1))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)

                async def one() -> grpc.StatusCode | None:
                    try:
                        await stub.Probe(request(stalling_server.port, handshake_timeout=1.5), timeout=10)
                    except grpc.aio.AioRpcError as error:
                        return error.code()
                    return None

                return list(await asyncio.gather(*(one() for _ in range(4))))
        finally:
            await server.stop(None)

    codes = asyncio.run(scenario())
    # One runs, one waits for it, the other two are refused at once.
    assert codes.count(None) == 2
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: setattr(r.target, "port", 70000), "65535"),
        (lambda r: setattr(r.target, "host", ""), "target host"),
        (lambda r: setattr(r.options, "max_addresses", 500), "max_addresses"),
        (lambda r: setattr(r.options, "sni", "bad*name"), "bad*name"),
    ],
)
def test_bad_requests_are_refused_by_name(mutate, fragment: str, tls_server: TlsServer) -> None:
    async def scenario() -> grpc.aio.AioRpcError:
        server, port = await serve(make_service())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                message = request(tls_server.port)
                mutate(message)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Probe(message, timeout=5)
                return caught.value
        finally:
            await server.stop(None)

    error = asyncio.run(scenario())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.details()


def test_describe_reports_identity_labels_facts_and_stores() -> None:
    async def scenario() -> agent_pb2.AgentDescription:
        server, port = await serve(make_service())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await agent_pb2_grpc.AgentStub(channel).Describe(agent_pb2.DescribeRequest(), timeout=5)
        finally:
            await server.stop(None)

    description = wire.description_from_wire(asyncio.run(scenario()))
    assert description.identity.name == "svc-1"
    assert description.identity.labels == (("env", "test"),)
    assert description.facts.agent_version == __version__
    assert description.facts.openssl_version.startswith("OpenSSL")
    assert description.trust_stores, "this host has at least a system store"
    assert abs(description.agent_time_ns - time.time_ns()) < 5e9


@pytest.mark.e2e  # a real agent process
def test_agent_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from tlsfleet.coordinator.lab.agent_process import start_agent

    agent = start_agent("stopper", tmp_path)
    code = agent.stop()
    assert code == 0
    events = [e.get("event") for e in agent.log_lines()]
    assert "agent_stopping" in events and "agent_stopped" in events


def test_describe_lists_roots_only_when_asked() -> None:
    async def scenario(include_roots: bool) -> agent_pb2.AgentDescription:
        server, port = await serve(make_service())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                request = agent_pb2.DescribeRequest(include_roots=include_roots)
                return await agent_pb2_grpc.AgentStub(channel).Describe(request, timeout=5)
        finally:
            await server.stop(None)

    without = wire.description_from_wire(asyncio.run(scenario(False)))
    assert all(store.roots == () for store in without.trust_stores)
    listed = wire.description_from_wire(asyncio.run(scenario(True)))
    readable = [s for s in listed.trust_stores if s.root_count]
    assert readable, "this host has at least one readable store"
    for store in readable:
        assert len({r.sha256 for r in store.roots}) == store.root_count
        assert all(len(r.sha256) == 64 and r.subject for r in store.roots)


# --- ProbeStream: many probes over one call -------------------------------------------------------


async def stream_probes(
    service: AgentService, batches: list[list[tuple[int, probe_pb2.ProbeRequest, float]]]
) -> list[agent_pb2.ProbeResultBatch]:
    """Send `batches` of (tag, request, timeout_s) over one ProbeStream call; every reply message, in order."""
    server, port = await serve(service)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = agent_pb2_grpc.AgentStub(channel).ProbeStream(timeout=30)
            for batch in batches:
                probes = [agent_pb2.TaggedProbeRequest(tag=t, request=r, timeout_s=s) for t, r, s in batch]
                await call.write(agent_pb2.ProbeBatch(probes=probes))
            await call.done_writing()
            return [reply async for reply in call]
    finally:
        await server.stop(None)


def entries(replies: list[agent_pb2.ProbeResultBatch]) -> dict[int, agent_pb2.TaggedProbeResult]:
    found = [entry for reply in replies for entry in reply.results]
    by_tag = {entry.tag: entry for entry in found}
    assert len(by_tag) == len(found), "each tag is answered once"
    return by_tag


def test_stream_answers_every_request_under_its_tag_and_the_call_ends_when_all_are_answered(
    tls_server: TlsServer,
) -> None:
    first = [(tag, request(tls_server.port, request_id=f"req-{tag}"), 10.0) for tag in range(1, 7)]
    second = [(tag, request(tls_server.port, request_id=f"req-{tag}"), 0.0) for tag in range(7, 13)]
    replies = asyncio.run(stream_probes(make_service(running=4, waiting=8), [first, second]))
    answered = entries(replies)
    assert sorted(answered) == list(range(1, 13))
    for tag, entry in answered.items():
        assert not entry.refused_code and entry.result.request_id == f"req-{tag}"
        assert entry.result.agent.name == "svc-1"
        [address] = entry.result.addresses
        assert address.chain, "the served chain is kept"
    # Results that finish together share a message; never more messages than results.
    assert len(replies) <= 12


def test_stream_refuses_a_bad_request_by_name_and_answers_the_others(tls_server: TlsServer) -> None:
    bad = request(tls_server.port)
    bad.target.port = 70000
    batch = [(1, request(tls_server.port), 10.0), (2, bad, 10.0), (3, request(tls_server.port), float("nan"))]
    answered = entries(asyncio.run(stream_probes(make_service(), [batch])))
    assert not answered[1].refused_code and answered[1].result.addresses
    assert answered[2].refused_code == "invalid_argument" and "65535" in answered[2].refused
    assert not answered[2].HasField("result")
    assert answered[3].refused_code == "invalid_argument" and "timeout_s" in answered[3].refused


@pytest.mark.slow
def test_stream_probe_is_bounded_by_its_own_timeout(stalling_server: TlsServer) -> None:
    """As a unary call's deadline does: a 1 s timeout against a server that never answers ends in a
    handshake timeout reported in time, though the call itself has 30 s."""
    batch = [(1, request(stalling_server.port, handshake_timeout=20.0), 1.0)]
    started = time.monotonic()
    answered = entries(asyncio.run(stream_probes(make_service(), [batch])))
    result, _name, _version = wire.result_from_wire(answered[1].result)
    assert result.addresses[0].handshake.failure is Failure.HANDSHAKE_TIMEOUT
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_stream_holds_back_requests_beyond_the_slots_instead_of_running_them(stalling_server: TlsServer) -> None:
    """Two slots, six probes of 1 s each against a silent server: they run two at a time (three rounds),
    none is refused, none runs beyond the bound."""
    service = make_service(running=1, waiting=1)
    batch = [(tag, request(stalling_server.port, handshake_timeout=1.0), 10.0) for tag in range(1, 7)]

    async def timed() -> tuple[float, list[agent_pb2.ProbeResultBatch]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await stream_probes(service, [batch])
        return loop.time() - started, replies

    elapsed, replies = asyncio.run(timed())
    answered = entries(replies)
    assert sorted(answered) == list(range(1, 7))
    assert not any(e.refused_code for e in answered.values())
    # One runs while one waits for it: six in about six seconds, not one.
    assert elapsed >= 5.0


def test_stream_refuses_a_result_too_large_to_send_on_its_own(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlsfleet.agent import grpc_service

    monkeypatch.setattr(grpc_service, "MAX_STREAMED_RESULT_BYTES", 200)
    answered = entries(asyncio.run(stream_probes(make_service(), [[(5, request(tls_server.port), 10.0)]])))
    assert answered[5].refused_code == "out_of_range"
    assert "bytes" in answered[5].refused and "200" in answered[5].refused


def test_result_batches_keep_to_their_byte_budget_and_always_take_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlsfleet.agent import grpc_service

    def entry(tag: int, size: int) -> agent_pb2.TaggedProbeResult:
        return agent_pb2.TaggedProbeResult(tag=tag, refused="x" * size)

    monkeypatch.setattr(grpc_service, "BATCH_BYTES", 1000)
    finished = [entry(1, 300), entry(2, 300), entry(3, 300), entry(4, 5000), entry(5, 10)]
    first = grpc_service._next_batch(finished)
    assert [e.tag for e in first.results] == [1, 2, 3]
    assert first.ByteSize() <= 1000
    assert [e.tag for e in grpc_service._next_batch(finished).results] == [4], "an oversized one goes alone"
    assert [e.tag for e in grpc_service._next_batch(finished).results] == [5]
    assert finished == []
