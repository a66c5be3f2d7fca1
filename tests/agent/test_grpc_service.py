"""The agent's gRPC service on a real grpc.aio server: bounds, deadlines, request ids, refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
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
    assert abs(description.agent_time_ns - __import__("time").time_ns()) < 5e9


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
