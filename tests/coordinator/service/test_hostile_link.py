"""A hostile dial-out agent on a real mutual-TLS stream to the coordinator's agent link: registrations under
another name and heartbeats from the far future mid-stream change nothing, a crafted probe reply is that
agent's error naming what was wrong, and the same stream still answers the next probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tlsfleet import __version__
from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target
from tlsfleet.agent.pki.credentials import (
    FleetCredentials,
    channel_credentials,
    channel_options_for_peer,
    load_credentials,
)
from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue, issued_paths
from tlsfleet.coordinator.fleet.linked_vantage import LinkedVantage
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.service.agent_link import AgentLinkServer
from tlsfleet.coordinator.service.config import AgentLinkConfig
from tlsfleet.v1 import link_pb2, link_pb2_grpc, probe_pb2

pytestmark = pytest.mark.e2e

INT64_MAX = 2**63 - 1


def _credentials(pki: Path, role: str, name: str) -> FleetCredentials:
    paths = issued_paths(pki, role, name)
    return load_credentials(pki / "ca.pem", paths.cert, paths.key, expect_role=role)


def _answer(request: link_pb2.CoordinatorMessage, *, poison: bool) -> link_pb2.AgentMessage:
    asked = request.probe
    result = probe_pb2.ProbeResult(
        agent=probe_pb2.AgentRef(name="edge-1", version=__version__),
        target=asked.target,
        request_id=asked.request_id,
        agent_received_ns=time.time_ns(),
        agent_replied_ns=time.time_ns(),
    )
    result.resolution.failure = probe_pb2.Failure.Value("FAILURE_DNS_ERROR")
    result.resolution.error = "no such host"
    if poison:
        result.resolution.duration_ms = float("inf")
        result.target.host = "elsewhere.test"
    return link_pb2.AgentMessage(request_id=request.request_id, probe_result=result)


def test_a_hostile_stream_is_bounded_by_what_its_certificate_proves(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_fleet_ca(pki)
    issue(pki, "coordinator", "coordinator")
    issue(pki, "agent", "edge-1")

    async def scenario() -> tuple[object, ...]:
        config = AgentLinkConfig(listen="127.0.0.1:0", allow=("edge-*",), heartbeat_interval_s=0.5)
        server = AgentLinkServer(config, _credentials(pki, "coordinator", "coordinator"), frozenset())
        address = await server.start()
        outbox: asyncio.Queue[link_pb2.AgentMessage | None] = asyncio.Queue()

        async def sent() -> AsyncIterator[link_pb2.AgentMessage]:
            while (message := await outbox.get()) is not None:
                yield message

        options = channel_options_for_peer("coordinator", "coordinator")
        channel = grpc.aio.secure_channel(address, channel_credentials(_credentials(pki, "agent", "edge-1")), options)
        try:
            stream = link_pb2_grpc.AgentLinkStub(channel).Connect(sent())
            await outbox.put(
                link_pb2.AgentMessage(registration=link_pb2.Registration(name="edge-1", version=__version__))
            )
            welcome = await stream.read()
            # Mid-stream: a registration under another agent's name, heartbeats from the end of time and before it.
            await outbox.put(link_pb2.AgentMessage(registration=link_pb2.Registration(name="edge-2", version="99.0.0")))
            for stamp in (INT64_MAX, -INT64_MAX - 1):
                await outbox.put(link_pb2.AgentMessage(heartbeat=link_pb2.Heartbeat(agent_time_ns=stamp)))
            for _ in range(50):
                if server.registry.agent("edge-1") is not None:
                    break
                await asyncio.sleep(0.05)
            [agent] = server.registry.agents()
            vantage = LinkedVantage(server.registry, agent)
            request = ProbeRequest(Target("target.test", 443), ProbeOptions(), request_id="r-1")
            outcomes = []
            for poison in (True, False):
                asked = asyncio.ensure_future(vantage.probe(request, 5.0))
                await outbox.put(_answer(await stream.read(), poison=poison))
                outcomes.append(await asked)
            names = [a.name for a in server.registry.agents()]
            await outbox.put(None)
            return welcome, names, outcomes
        finally:
            await channel.close()
            await server.stop(0.5)

    welcome, names, (poisoned, honest) = asyncio.run(scenario())
    assert welcome.WhichOneof("body") == "welcome"  # type: ignore[attr-defined]
    assert names == ["edge-1"]  # the second registration named no one
    assert poisoned.state is VantageState.ERROR
    assert poisoned.result is None
    assert poisoned.error.startswith("agent edge-1's reply is refused: resolution.duration_ms is inf"), poisoned.error
    assert honest.state is VantageState.OK, honest.error
    assert honest.result is not None and honest.result.resolution.error == "no such host"
