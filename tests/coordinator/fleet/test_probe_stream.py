"""A dialled agent asked over ProbeStream (as report runs ask) gives the outcomes a unary Probe call gives:
the same results, refusals, deadlines and failures, with a real agent service on a real grpc.aio server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from tlsfleet import __version__
from tlsfleet.agent.grpc_service import AgentService
from tlsfleet.agent.hostfacts import HostFactsCache
from tlsfleet.agent.model import AgentIdentity, Failure, ProbeOptions, ProbeRequest, Target
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.coordinator.fleet import probe_stream
from tlsfleet.coordinator.fleet.grpc_vantage import GrpcVantage
from tlsfleet.coordinator.fleet.inventory import AgentEntry
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageState
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc, probe_pb2

NAME = "stream-1"


def agent_service(*, running: int = 16, waiting: int = 16) -> AgentService:
    return AgentService(
        engine=ProbeEngine(),
        identity=AgentIdentity(name=NAME, version=__version__),
        facts=HostFactsCache(__version__, os.environ),
        max_concurrent_probes=running,
        max_waiting_probes=waiting,
    )


class UnaryOnly:
    """An agent from before ProbeStream: Probe only."""

    def __init__(self) -> None:
        self._real = agent_service()

    async def Probe(self, request: probe_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> probe_pb2.ProbeResult:
        return await self._real.Probe(request, context)


class Mute(agent_pb2_grpc.AgentServicer):
    """Takes the stream's requests and never answers one."""

    async def ProbeStream(
        self, batches: AsyncIterator[agent_pb2.ProbeBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ProbeResultBatch]:
        async for _ in batches:
            pass
        await asyncio.sleep(3600)
        yield agent_pb2.ProbeResultBatch()


class StreamBreaks(agent_pb2_grpc.AgentServicer):
    """Ends every stream with INTERNAL, as grpc.aio reports a stream the agent ended (refusing the caller,
    say) while a write was under way; a unary Probe gets the agent's true answer, or `refusal`."""

    def __init__(self, refusal: str = "") -> None:
        self._real = agent_service()
        self._refusal = refusal

    async def ProbeStream(
        self, batches: AsyncIterator[agent_pb2.ProbeBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ProbeResultBatch]:
        await context.abort(grpc.StatusCode.INTERNAL, "Internal error from Core")
        yield agent_pb2.ProbeResultBatch()

    async def Probe(self, request: probe_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> probe_pb2.ProbeResult:
        if self._refusal:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, self._refusal)
        return await self._real.Probe(request, context)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    pki = LabPKI()
    with TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate), host="127.0.0.1") as server:
        yield server


@pytest.fixture
def stalling_server() -> Iterator[TlsServer]:
    with TlsServer(None, mode="stall", host="127.0.0.1") as server:
        yield server


def probe_request(port: int, **options: object) -> ProbeRequest:
    return ProbeRequest(
        target=Target("localhost", port),
        options=ProbeOptions(pin_address="127.0.0.1", connect_timeout=2.0, **options),  # type: ignore[arg-type]
        request_id="",
    )


async def with_agent(servicer: agent_pb2_grpc.AgentServicer | UnaryOnly, scenario):  # -> what scenario returns
    server = grpc.aio.server()
    if isinstance(servicer, UnaryOnly):
        # As an agent built before ProbeStream: the method is not registered at all (the generated base
        # class's would raise NotImplementedError, which under load reaches the client as INTERNAL).
        unary = grpc.unary_unary_rpc_method_handler(
            servicer.Probe,
            request_deserializer=probe_pb2.ProbeRequest.FromString,
            response_serializer=probe_pb2.ProbeResult.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tlsfleet.v1.Agent", {"Probe": unary}),))
    else:
        agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    vantages = {
        streamed: GrpcVantage(AgentEntry(NAME, f"127.0.0.1:{port}", insecure=True), None, streamed=streamed)
        for streamed in (True, False)
    }
    try:
        return await scenario(vantages[True], vantages[False], server)
    finally:
        for vantage in vantages.values():
            await vantage.close()
        await server.stop(None)


def comparable(outcome: ProbeOutcome) -> tuple[object, ...]:
    assert outcome.result is not None, outcome.error
    [address] = outcome.result.addresses
    return (
        outcome.state,
        outcome.result.target,
        address.address,
        address.handshake.failure,
        address.handshake.tls_version,
        address.handshake.cipher,
        address.native.verdict,
        address.chain,
        tuple(s.name for s in outcome.result.trust_stores),
    )


def test_streamed_probes_give_what_unary_calls_give(tls_server: TlsServer) -> None:
    async def scenario(streamed: GrpcVantage, unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(tls_server.port)
        many = await asyncio.gather(*(streamed.probe(request, 10.0) for _ in range(30)))
        return many, await unary.probe(request, 10.0)

    many, single = asyncio.run(with_agent(agent_service(), scenario))
    assert {comparable(o) for o in many} == {comparable(single)}
    assert all(o.state is VantageState.OK and o.clock is not None for o in many)


def test_a_refusal_reads_as_a_unary_call_refused(tls_server: TlsServer) -> None:
    async def scenario(streamed: GrpcVantage, unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(tls_server.port, client_cert="nosuch")
        return await streamed.probe(request, 10.0), await unary.probe(request, 10.0)

    by_stream, by_call = asyncio.run(with_agent(agent_service(), scenario))
    assert by_stream.state is by_call.state is VantageState.REFUSED
    assert by_stream.error == by_call.error and "nosuch" in by_stream.error


@pytest.mark.slow
def test_the_callers_timeout_bounds_a_streamed_probe_as_it_bounds_a_call(stalling_server: TlsServer) -> None:
    """A 1.5 s timeout against a server that never answers: the agent shrinks the probe to fit and reports
    the handshake timeout in time, by stream as by call."""

    async def scenario(streamed: GrpcVantage, unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(stalling_server.port, handshake_timeout=20.0)
        started = time.monotonic()
        outcomes = await asyncio.gather(streamed.probe(request, 1.5), unary.probe(request, 1.5))
        return outcomes, time.monotonic() - started

    (by_stream, by_call), elapsed = asyncio.run(with_agent(agent_service(), scenario))
    for outcome in (by_stream, by_call):
        assert outcome.state is VantageState.OK and outcome.result is not None
        assert outcome.result.addresses[0].handshake.failure is Failure.HANDSHAKE_TIMEOUT
    assert elapsed < 3.0


def test_an_agent_that_never_answers_times_out_with_the_calls_words(tls_server: TlsServer) -> None:
    async def scenario(streamed: GrpcVantage, unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(tls_server.port)
        return await streamed.probe(request, 0.5), await unary.probe(request, 0.5)

    by_stream, by_call = asyncio.run(with_agent(Mute(), scenario))
    assert by_stream.state is VantageState.TIMEOUT
    assert "within the deadline" in by_stream.error and NAME in by_stream.error
    assert by_stream.duration_ms < 2000
    assert by_call.state is not VantageState.OK  # the mute agent has no unary Probe: UNIMPLEMENTED


def test_an_agent_without_probe_stream_is_asked_by_unary_calls(tls_server: TlsServer) -> None:
    async def scenario(streamed: GrpcVantage, unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(tls_server.port)
        first = await asyncio.gather(*(streamed.probe(request, 10.0) for _ in range(5)))
        later = await streamed.probe(request, 10.0)
        return first, later, streamed._stream

    first, later, stream = asyncio.run(with_agent(UnaryOnly(), scenario))
    assert all(o.state is VantageState.OK for o in [*first, later]), [(o.state, o.error) for o in [*first, later]]
    assert stream is None, "no stream is tried again"


@pytest.mark.parametrize("refusal", ["", "coordinator 'stranger' is not allowed"])
def test_a_stream_broken_by_internal_is_asked_again_by_one_unary_call(tls_server: TlsServer, refusal: str) -> None:
    async def scenario(streamed: GrpcVantage, unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(tls_server.port)
        return await asyncio.gather(*(streamed.probe(request, 10.0) for _ in range(3))), await unary.probe(
            request, 10.0
        )

    by_stream, by_call = asyncio.run(with_agent(StreamBreaks(refusal), scenario))
    assert [o.state for o in by_stream] == [by_call.state] * 3, [o.error for o in by_stream]
    assert by_call.state is (VantageState.REFUSED if refusal else VantageState.OK)
    assert all(o.error == by_call.error for o in by_stream)


@pytest.mark.slow
def test_probes_on_a_stream_whose_agent_vanishes_end_at_once_and_the_next_probe_asks_again(
    stalling_server: TlsServer, tls_server: TlsServer
) -> None:
    async def scenario(streamed: GrpcVantage, _unary: GrpcVantage, server: grpc.aio.Server):
        pending = [
            asyncio.ensure_future(streamed.probe(probe_request(stalling_server.port, handshake_timeout=20.0), 30.0))
            for _ in range(3)
        ]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await server.stop(None)
        ended = await asyncio.gather(*pending)
        waited = time.monotonic() - started
        after = await streamed.probe(probe_request(tls_server.port), 2.0)
        return ended, waited, after

    ended, waited, after = asyncio.run(with_agent(agent_service(), scenario))
    assert waited < 5.0, "the stream's end is every pending probe's end"
    for outcome in ended:
        assert outcome.state in (VantageState.OFFLINE, VantageState.ERROR) and outcome.error
    assert after.state is VantageState.OFFLINE, after.error


def test_a_call_past_its_lifetime_hands_over_to_a_new_one_and_finishes_what_it_holds(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_stream, "CALL_LIFETIME_S", 0.0)  # every probe opens a call of its own

    async def scenario(streamed: GrpcVantage, _unary: GrpcVantage, _server: grpc.aio.Server):
        request = probe_request(tls_server.port)
        outcomes = await asyncio.gather(*(streamed.probe(request, 10.0) for _ in range(8)))
        assert streamed._stream is not None
        for _ in range(50):  # the calls that handed over end once they are answered
            if len(streamed._stream._calls) <= 1:
                break
            await asyncio.sleep(0.05)
        return outcomes, len(streamed._stream._calls)

    outcomes, open_calls = asyncio.run(with_agent(agent_service(), scenario))
    assert all(o.state is VantageState.OK for o in outcomes)
    assert open_calls <= 1
