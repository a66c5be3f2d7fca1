"""Mutual TLS between a real grpc.aio server on loopback and a real client, with the fleet PKI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tlsfleet.agent.pki.credentials import (
    AllowedPeersInterceptor,
    FleetCredentials,
    channel_credentials,
    channel_options_for_peer,
    load_credentials,
    peer_identity,
    server_credentials,
)
from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue

DEADLINE_S = 3.0


@dataclass(frozen=True)
class Fleet:
    directory: Path

    def creds(self, role: str, name: str, *, now: datetime | None = None) -> FleetCredentials:
        sub = self.directory / f"{role}s"
        return load_credentials(
            self.directory / "ca.pem",
            sub / f"{name}.pem",
            sub / f"{name}.key",
            expect_role=role,
            now=now,
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    d = tmp_path / "pki"
    init_fleet_ca(d)
    for role, name in (
        ("agent", "web-1"),
        ("agent", "web-2"),
        ("coordinator", "ops-1"),
        ("coordinator", "ops-2"),
    ):
        issue(d, role, name)  # type: ignore[arg-type]
    return Fleet(d)


@pytest.fixture
def other_fleet(tmp_path: Path) -> Fleet:
    """A second fleet whose CA has the same default name as the first: only the key tells them apart."""
    d = tmp_path / "other-pki"
    init_fleet_ca(d)
    issue(d, "coordinator", "ops-1")
    return Fleet(d)


class RecordingHealth(health.aio.HealthServicer):
    """The standard health servicer, remembering which callers reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[tuple[str, str] | None] = []

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):  # type: ignore[override]
        self.callers.append(peer_identity(context.auth_context()))
        return await super().Check(request, context)


@asynccontextmanager
async def serving(
    server_creds: FleetCredentials, allowed: tuple[str, ...] = ("ops-1",), role: str = "coordinator"
) -> AsyncIterator[tuple[int, RecordingHealth]]:
    server = grpc.aio.server(interceptors=[AllowedPeersInterceptor(role=role, allowed_names=allowed)])
    servicer = RecordingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(server_creds))
    assert port > 0
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(grace=None)


async def check(
    port: int, channel_creds: grpc.ChannelCredentials, peer: tuple[str, str] = ("agent", "web-1")
) -> health_pb2.HealthCheckResponse:
    options = channel_options_for_peer(*peer)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_creds, options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE_S)


def run_refused(
    server_creds: FleetCredentials, channel_creds: grpc.ChannelCredentials, **kw: object
) -> tuple[grpc.aio.AioRpcError, RecordingHealth]:
    async def scenario() -> tuple[grpc.aio.AioRpcError, RecordingHealth]:
        async with serving(server_creds) as (port, servicer):
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await check(port, channel_creds, **kw)  # type: ignore[arg-type]
            return excinfo.value, servicer

    return asyncio.run(scenario())


def test_allowed_coordinator_is_served(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with serving(fleet.creds("agent", "web-1")) as (port, servicer):
            reply = await check(port, channel_credentials(fleet.creds("coordinator", "ops-1")))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert servicer.callers == [("coordinator", "ops-1")]

    asyncio.run(scenario())


def test_allowed_names_are_case_insensitive(fleet: Fleet) -> None:
    async def scenario() -> None:
        async with serving(fleet.creds("agent", "web-1"), allowed=("OPS-1",)) as (port, _):
            reply = await check(port, channel_credentials(fleet.creds("coordinator", "ops-1")))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    asyncio.run(scenario())


def test_coordinator_serving_agents_that_dial_in(fleet: Fleet) -> None:
    """The same glue the other way round: a coordinator server admitting listed agents."""

    async def scenario() -> None:
        server_creds = fleet.creds("coordinator", "ops-1")
        async with serving(server_creds, allowed=("web-1",), role="agent") as (port, servicer):
            reply = await check(port, channel_credentials(fleet.creds("agent", "web-1")), ("coordinator", "ops-1"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await check(port, channel_credentials(fleet.creds("agent", "web-2")), ("coordinator", "ops-1"))
            assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert excinfo.value.details() == "agent 'web-2' is not allowed to call this service (allowed: web-1)"
            assert servicer.callers == [("agent", "web-1")]

    asyncio.run(scenario())


def test_interceptor_refuses_invalid_allowed_names() -> None:
    with pytest.raises(ValueError, match="allowed coordinator names: invalid name 'ops_1'"):
        AllowedPeersInterceptor(role="coordinator", allowed_names=["ops_1"])
    with pytest.raises(ValueError, match="unknown role 'robot'"):
        AllowedPeersInterceptor(role="robot", allowed_names=["ops-1"])


def test_streaming_method_is_guarded_too(fleet: Fleet) -> None:
    """Health.Watch is a server-streaming coroutine; the check must run before its first reply."""

    async def watch_first(port: int, creds: FleetCredentials) -> health_pb2.HealthCheckResponse:
        options = channel_options_for_peer("agent", "web-1")
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(creds), options) as ch:
            call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE_S)
            try:
                return await call.read()
            finally:
                call.cancel()

    async def scenario() -> None:
        async with serving(fleet.creds("agent", "web-1")) as (port, _):
            first = await watch_first(port, fleet.creds("coordinator", "ops-1"))
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await watch_first(port, fleet.creds("coordinator", "ops-2"))
            assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(scenario())


def test_client_certificate_from_another_ca_fails_the_handshake(fleet: Fleet, other_fleet: Fleet) -> None:
    stranger = other_fleet.creds("coordinator", "ops-1")
    # It trusts our CA, so the server is accepted; only its own certificate is foreign.
    client = replace(stranger, ca_pem=fleet.creds("coordinator", "ops-1").ca_pem)
    error, servicer = run_refused(fleet.creds("agent", "web-1"), channel_credentials(client))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


def test_agent_certificate_as_client_is_permission_denied(fleet: Fleet) -> None:
    error, servicer = run_refused(fleet.creds("agent", "web-1"), channel_credentials(fleet.creds("agent", "web-2")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "the caller is agent 'web-2'; only a coordinator may call this service"
    assert servicer.callers == []


def test_the_agent_itself_may_ask_its_health_service_and_nothing_else(fleet: Fleet) -> None:
    """A HEALTHCHECK beside the agent uses the agent's own certificate: health answers it; any other method,
    and another agent, are refused."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def scenario() -> tuple[int, grpc.StatusCode | None, grpc.StatusCode | None]:
        interceptor = AllowedPeersInterceptor(
            role="coordinator", allowed_names=("ops-1",), health_for=("agent", "web-1")
        )
        server = grpc.aio.server(interceptors=[interceptor])
        health_pb2_grpc.add_HealthServicer_to_server(RecordingHealth(), server)
        other_service = {"Describe": grpc.unary_unary_rpc_method_handler(echo)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tlsfleet.v1.Agent", other_service),))
        port = server.add_secure_port("127.0.0.1:0", server_credentials(fleet.creds("agent", "web-1")))
        await server.start()
        itself = channel_credentials(fleet.creds("agent", "web-1"))
        try:
            status = (await check(port, itself)).status
            try:
                await check(port, channel_credentials(fleet.creds("agent", "web-2")))
                other_agent = None
            except grpc.aio.AioRpcError as error:
                other_agent = error.code()
            options = channel_options_for_peer("agent", "web-1")
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", itself, options) as channel:
                try:
                    await channel.unary_unary("/tlsfleet.v1.Agent/Describe")(b"x", timeout=DEADLINE_S)
                    other_method = None
                except grpc.aio.AioRpcError as error:
                    other_method = error.code()
            return status, other_agent, other_method
        finally:
            await server.stop(grace=None)

    status, other_agent, other_method = asyncio.run(scenario())
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert other_agent == grpc.StatusCode.PERMISSION_DENIED
    assert other_method == grpc.StatusCode.PERMISSION_DENIED


def test_coordinator_not_in_allowed_list_is_permission_denied(fleet: Fleet) -> None:
    error, servicer = run_refused(
        fleet.creds("agent", "web-1"), channel_credentials(fleet.creds("coordinator", "ops-2"))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "coordinator 'ops-2' is not allowed to call this service (allowed: ops-1)"
    assert servicer.callers == []


def test_client_without_certificate_fails_the_handshake(fleet: Fleet) -> None:
    anonymous = grpc.ssl_channel_credentials(root_certificates=fleet.creds("coordinator", "ops-1").ca_pem)
    error, servicer = run_refused(fleet.creds("agent", "web-1"), anonymous)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


def test_server_with_another_agents_identity_is_refused_by_the_client(fleet: Fleet) -> None:
    # The inventory says web-1 lives at this address, but the server there is web-2.
    error, servicer = run_refused(
        fleet.creds("agent", "web-2"),
        channel_credentials(fleet.creds("coordinator", "ops-1")),
        peer=("agent", "web-1"),
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Hostname Verification Check failed" in (error.details() or "")
    assert servicer.callers == []


def test_server_presenting_a_coordinator_identity_is_refused_when_an_agent_is_dialled(fleet: Fleet) -> None:
    error, servicer = run_refused(
        fleet.creds("coordinator", "ops-2"),
        channel_credentials(fleet.creds("coordinator", "ops-1")),
        peer=("agent", "ops-2"),
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Hostname Verification Check failed" in (error.details() or "")
    assert servicer.callers == []


def test_expired_client_certificate_fails_the_handshake(fleet: Fleet) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    issue(
        fleet.directory,
        "coordinator",
        "ops-1",
        not_before=past,
        not_after=past + timedelta(days=5),
        force=True,
    )
    # load_credentials rightly refuses it, so the client is built from the raw files.
    valid = fleet.creds("coordinator", "ops-2")
    expired = replace(
        valid,
        cert_pem=(fleet.directory / "coordinators" / "ops-1.pem").read_bytes(),
        key_pem=(fleet.directory / "coordinators" / "ops-1.key").read_bytes(),
        name="ops-1",
    )
    error, servicer = run_refused(fleet.creds("agent", "web-1"), channel_credentials(expired))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


def test_plain_function_handler_is_refused_not_served_unchecked(fleet: Fleet) -> None:
    served: list[bytes] = []

    def plain(request: bytes, context: object) -> bytes:
        served.append(request)
        return b"ok"

    async def scenario() -> None:
        handler = grpc.method_handlers_generic_handler(
            "test.Plain", {"Call": grpc.unary_unary_rpc_method_handler(plain)}
        )
        server = grpc.aio.server(interceptors=[AllowedPeersInterceptor(allowed_names=["ops-1"])])
        server.add_generic_rpc_handlers((handler,))
        port = server.add_secure_port("127.0.0.1:0", server_credentials(fleet.creds("agent", "web-1")))
        await server.start()
        try:
            creds = channel_credentials(fleet.creds("coordinator", "ops-1"))
            options = channel_options_for_peer("agent", "web-1")
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                    await channel.unary_unary("/test.Plain/Call")(b"x", timeout=DEADLINE_S)
            assert excinfo.value.code() == grpc.StatusCode.UNKNOWN
            assert "is not async" in (excinfo.value.details() or "")
        finally:
            await server.stop(grace=None)

    asyncio.run(scenario())
    assert served == []
