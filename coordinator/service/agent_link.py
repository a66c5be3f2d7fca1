"""The coordinator's agent-link listener: agents that dial in hold a stream here (tlsfleet.v1.AgentLink),
and a CLI asks about them here (tlsfleet.v1.FleetQuery). Mutual TLS with the fleet CA on both.

Agents are admitted by the registry's policy (their certificate's name is the name they register, in the
inventory or matching an allow pattern, recent enough); callers of FleetQuery must be coordinator
identities named in `query_allow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc

from ...agent.endpoints import bind_failure, join_host_port, split_host_port
from ...agent.logs import get_logger
from ...agent.pki.credentials import FleetCredentials, peer_identity, require_peer, server_credentials
from ...v1 import link_pb2, link_pb2_grpc
from ..fleet.fanout import describe_all
from ..fleet.link_registry import LinkPolicy, LinkRegistry
from ..fleet.link_session import LinkSession
from ..fleet.link_wire import linked_agent_to_wire, probe_outcome_to_wire
from ..fleet.linked_vantage import LinkedVantage
from ..fleet.selector import SelectorError, parse_selector
from ..outcomes import DescribeOutcome
from .config import AgentLinkConfig

log = get_logger("tlsfleet.coordinator")

REGISTRATION_TIMEOUT_S = 10.0
MAX_QUERY_TIMEOUT_S = 300.0
MAX_NAMES = 10_000
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # an agent's answer: as large as a probe reply may be
TLS_FRAME_BYTES = 4096


def _peer_address(context: grpc.aio.ServicerContext) -> str:
    peer = context.peer() or ""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            return peer.removeprefix(prefix).replace("%5B", "[").replace("%5D", "]")
    return peer


async def _registration(context: grpc.aio.ServicerContext) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """The name, version and labels the agent registers with. Only these are kept: the message's host
    facts would stay in memory for as long as the stream lives."""
    try:
        first = await asyncio.wait_for(context.read(), REGISTRATION_TIMEOUT_S)
    except TimeoutError:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no registration within {REGISTRATION_TIMEOUT_S:g} s")
    if first is grpc.aio.EOF or first.WhichOneof("body") != "registration":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a registration")
    registration = first.registration
    return registration.name, registration.version, tuple((label.key, label.value) for label in registration.labels)


class AgentLinkServicer(link_pb2_grpc.AgentLinkServicer):
    def __init__(self, registry: LinkRegistry, coordinator_name: str) -> None:
        self._registry = registry
        self._name = coordinator_name

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        address = _peer_address(context)
        identity = peer_identity(context.auth_context())
        name, version, labels = await _registration(context)
        reason = self._registry.refusal(identity, name, version, labels)
        if reason is not None:
            log.warning("agent_link_refused", agent=name[:64], address=address, reason=reason)
            await context.write(link_pb2.CoordinatorMessage(refusal=link_pb2.Refusal(reason=reason, retry=False)))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        assert identity is not None  # refusal() refuses a caller without one
        session = LinkSession(name=identity[1], version=version[:64], labels=labels, address=address)
        self._registry.attach(session)
        interval = self._registry.policy.heartbeat_interval_s
        welcome = link_pb2.Welcome(coordinator=self._name, heartbeat_interval_s=interval)
        why = "the stream ended"
        tasks: list[asyncio.Future[None]] = []
        try:
            # The welcome goes first: requests queued meanwhile wait for the writer, started after it.
            await context.write(link_pb2.CoordinatorMessage(welcome=welcome))
            reader = asyncio.ensure_future(self._read(context, session))
            writer = asyncio.ensure_future(self._write(context, session))
            tasks += [reader, writer]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    why = f"the stream failed: {type(task.exception()).__name__}"
            if writer in done and session.closed:
                why = session.close_reason
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._registry.detach(session, why)

    @staticmethod
    async def _read(context: grpc.aio.ServicerContext, session: LinkSession) -> None:
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            session.deliver(message)

    @staticmethod
    async def _write(context: grpc.aio.ServicerContext, session: LinkSession) -> None:
        while True:
            message = await session.next_outbound()
            if message is None:
                return
            await context.write(message)


class FleetQueryServicer(link_pb2_grpc.FleetQueryServicer):
    def __init__(self, registry: LinkRegistry, allowed_callers: tuple[str, ...]) -> None:
        self._registry = registry
        self._allowed = allowed_callers

    async def ListAgents(
        self, request: link_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> link_pb2.ListAgentsReply:
        await require_peer(context, "coordinator", self._allowed)
        try:
            selector = parse_selector(request.selector or None)
        except SelectorError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if len(request.names) > MAX_NAMES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_NAMES} names per request")
        if request.names:
            found = (self._registry.agent(name) for name in dict.fromkeys(request.names))
            candidates = [a for a in found if a is not None]
        else:
            candidates = self._registry.agents()
        agents = [a for a in candidates if selector.matches(a.name, dict(a.labels))]
        outcomes: tuple[DescribeOutcome | None, ...] = (None,) * len(agents)
        if request.describe:
            timeout = await _timeout(request.timeout_s, context)
            vantages = [LinkedVantage(self._registry, a) for a in agents]
            outcomes = await describe_all(vantages, timeout, include_roots=request.include_roots)
        return link_pb2.ListAgentsReply(
            agents=[linked_agent_to_wire(a, o) for a, o in zip(agents, outcomes, strict=True)]
        )

    async def Probe(
        self, request: link_pb2.FleetProbeRequest, context: grpc.aio.ServicerContext
    ) -> link_pb2.FleetProbeOutcome:
        from ...agent import wire
        from ...agent.model import ProbeOptions

        await require_peer(context, "coordinator", self._allowed)
        timeout = await _timeout(request.timeout_s, context)
        agent = self._registry.agent(request.agent)
        if agent is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no agent {request.agent[:64]!r} dials in to this coordinator"
            )
        assert agent is not None  # abort raised
        # The CLI built and checked the request; the agent checks it again.
        probe = wire.request_from_wire(request.request, ProbeOptions())
        outcome = await LinkedVantage(self._registry, agent).probe(probe, timeout)
        return probe_outcome_to_wire(outcome)


async def _timeout(requested: float, context: grpc.aio.ServicerContext) -> float:
    if not 0 < requested <= MAX_QUERY_TIMEOUT_S:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"timeout_s {requested:g} is out of range; accepted: above 0 to 300"
        )
    return requested


class AgentLinkServer:
    """The listener, its registry, and the sweep that notices silent streams."""

    def __init__(self, config: AgentLinkConfig, credentials: FleetCredentials, inventory_names: frozenset[str]) -> None:
        self._config = config
        self._credentials = credentials
        self.registry = LinkRegistry(
            LinkPolicy(
                inventory_names=inventory_names,
                allow_patterns=config.allow,
                min_version=config.min_agent_version,
                heartbeat_interval_s=config.heartbeat_interval_s,
                stale_after=config.stale_after,
                max_agents=config.max_agents,
            )
        )
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.address: str | None = None
        self.started_at: float | None = None  # time.monotonic() when the listener took streams

    async def start(self) -> str:
        server = grpc.aio.server(
            options=[
                # A second process on the same port would take half the agents' streams unnoticed.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # Agents ping an idle stream to notice a dead route; let them.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_ping_strikes", 0),
                # Each connection keeps a TLS output buffer of this size for as long as it lives: at the
                # 16 KiB default, about 6 KiB more per connected agent, for records that are rarely larger.
                ("grpc.tsi.max_frame_size", TLS_FRAME_BYTES),
            ],
            maximum_concurrent_rpcs=self._config.max_agents + 256,
        )
        link_pb2_grpc.add_AgentLinkServicer_to_server(AgentLinkServicer(self.registry, self._credentials.name), server)
        link_pb2_grpc.add_FleetQueryServicer_to_server(
            FleetQueryServicer(self.registry, self._config.query_allow), server
        )
        try:
            port = server.add_secure_port(self._config.listen, server_credentials(self._credentials))
        except RuntimeError:  # gRPC's words for it say nothing of the cause
            port = 0
        if port == 0:
            raise OSError(f"[agent_link] cannot listen on {self._config.listen}: {bind_failure(self._config.listen)}")
        await server.start()
        self.started_at = time.monotonic()
        self._server = server
        host, _ = split_host_port(self._config.listen, allow_port_zero=True)
        self.address = join_host_port(host, port)
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("agent_link_listening", host=host, port=port, coordinator=self._credentials.name)
        return self.address

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_interval_s)
            self.registry.sweep()

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        # Refuse new streams first, so no agent registers with a registry that is closing.
        stopping = asyncio.ensure_future(self._server.stop(grace_s)) if self._server is not None else None
        await asyncio.sleep(0)
        self.registry.close_all("the coordinator is stopping")
        if stopping is not None:
            await stopping
