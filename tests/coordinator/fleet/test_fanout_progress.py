"""The fan-out tells a listener of each vantage as it ends, without changing what it returns: a real local
probe of a real TLS server, and a real gRPC vantage whose agent never speaks (a listener nobody serves)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from tlsfleet.coordinator.fleet.fanout import Progress, describe_all, probe_all, reporting_progress
from tlsfleet.coordinator.fleet.grpc_vantage import GrpcVantage
from tlsfleet.coordinator.fleet.inventory import AgentEntry
from tlsfleet.coordinator.fleet.local_vantage import LocalVantage
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.probing import build_request

# The mute agent's deadline: long enough for this machine's own probe to finish first, also the first one of a
# process, which reads every trust store cold (some 300 ms); the local probe alone gets LOCAL_TIMEOUT_S.
TIMEOUT_S = 0.8
LOCAL_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server(pki: LabPKI) -> Iterator[TlsServer]:
    served = TlsServer(ServedIdentity.of(pki.issue_leaf("localhost", "127.0.0.1"), pki.intermediate)).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def mute_agent() -> Iterator[str]:
    """A TCP listener that accepts into its backlog and never answers: an agent that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


async def _probe(server: TlsServer, mute: str, steps: list[Progress] | None):  # -> (request, outcomes)
    request = build_request(f"127.0.0.1:{server.port}", now_ns=time.time_ns(), timeout=TIMEOUT_S)
    vantages = [LocalVantage(), GrpcVantage(AgentEntry("mute", mute, insecure=True), None)]
    try:
        if steps is None:
            return request, await probe_all(vantages, request, TIMEOUT_S)
        with reporting_progress(steps.append):
            return request, await probe_all(vantages, request, TIMEOUT_S)
    finally:
        await asyncio.gather(*(v.close() for v in vantages))


@pytest.mark.slow  # a real subprocess and the mute agent's deadline, about 2 s: the full suite runs it
def test_each_vantage_is_told_as_it_ends_and_the_results_are_unchanged(server: TlsServer, mute_agent: str) -> None:
    steps: list[Progress] = []
    request, told = asyncio.run(_probe(server, mute_agent, steps))
    _, untold = asyncio.run(_probe(server, mute_agent, None))
    assert [(o.vantage.name, o.state) for o in told] == [(o.vantage.name, o.state) for o in untold]
    assert [(o.vantage.name, o.state) for o in told] == [("local", VantageState.OK), ("mute", VantageState.TIMEOUT)]
    # Started, then the local probe (it answers first), then the agent that never did, at the deadline.
    assert [(s.outcome is None, s.done, s.total) for s in steps] == [(True, 0, 2), (False, 1, 2), (False, 2, 2)]
    assert all(s.request is request for s in steps)
    assert steps[1].outcome is told[0] and steps[2].outcome is told[1]


def test_a_listener_that_fails_costs_nothing(server: TlsServer, mute_agent: str) -> None:
    def broken(_step: Progress) -> None:
        raise RuntimeError("display gone")

    async def run():  # -> outcomes
        request = build_request(f"127.0.0.1:{server.port}", now_ns=time.time_ns(), timeout=LOCAL_TIMEOUT_S)
        with reporting_progress(broken):
            return await probe_all([LocalVantage()], request, LOCAL_TIMEOUT_S)

    (outcome,) = asyncio.run(run())
    assert outcome.state is VantageState.OK


def test_describe_fan_outs_are_told_without_a_request_and_nothing_is_told_outside(mute_agent: str) -> None:
    steps: list[Progress] = []

    async def run() -> None:
        with reporting_progress(steps.append):
            await describe_all([LocalVantage()], LOCAL_TIMEOUT_S)
        await describe_all([LocalVantage()], LOCAL_TIMEOUT_S)  # after the context: no listener

    asyncio.run(run())
    assert [(s.request, s.done, s.total) for s in steps] == [(None, 0, 1), (None, 1, 1)]
