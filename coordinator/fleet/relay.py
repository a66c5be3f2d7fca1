"""The agents that dial in to a coordinator service, reached from the CLI through that service.

The CLI dials the service's agent-link listener with its coordinator certificate (the inventory's
[coordinator] credentials) and checks that the service holds a coordinator identity too. Each dial-in
agent becomes a vantage whose probes and descriptions the service relays down the agent's stream, so
`tlsfleet probe` and `tlsfleet agents` treat it like any other vantage.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from ...agent import wire
from ...agent.endpoints import EndpointError, join_host_port, split_host_port
from ...agent.errors import UsageError
from ...agent.model import ProbeRequest
from ...agent.naming import NAME_PATTERN
from ...agent.pki.credentials import FleetCredentials, channel_credentials, channel_options_for_peer
from ...v1 import link_pb2, link_pb2_grpc
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageInfo, VantageState
from .grpc_vantage import STATE_BY_CODE
from .link_wire import describe_from_wire, linked_agent_info, probe_outcome_from_wire
from .rpc_failures import CallContext, explain_rpc_failure
from .vantage import Vantage

ENV_COORDINATOR = "TLSFLEET_COORDINATOR"  # [NAME@]HOST:PORT of a coordinator service's agent link
LIST_TIMEOUT_S = 5.0
RELAY_MARGIN_S = 0.3  # the service answers by the deadline; this is the way back
MAX_REPLY_BYTES = 32 * 1024 * 1024


class RelayError(UsageError):
    """The coordinator service cannot be asked: a bad address, unreachable, or it refused us."""


def parse_coordinator_address(text: str) -> tuple[str, str]:
    """'[NAME@]HOST:PORT' -> (the coordinator identity to expect, HOST:PORT); NAME defaults to coordinator."""
    name, sep, address = text.strip().rpartition("@")
    if not sep:
        name = "coordinator"
    if not NAME_PATTERN.match(name):
        raise RelayError(f"coordinator {text!r}: {name!r} is not a coordinator name; use [NAME@]HOST:PORT")
    try:
        host, port = split_host_port(address)
    except EndpointError as error:
        raise RelayError(f"coordinator {text!r}: {error}; use [NAME@]HOST:PORT") from None
    return name, join_host_port(host, port)


class Relay:
    """One channel to the service, and a vantage per agent it knows."""

    def __init__(self, address: str, channel: grpc.aio.Channel, agents: list[link_pb2.LinkedAgent]) -> None:
        self._channel = channel
        stub = link_pb2_grpc.FleetQueryStub(channel)
        self.candidates: list[tuple[Vantage, bool]] = [
            (RelayVantage(stub, linked_agent_info(a), address), a.link_state != "offline") for a in agents
        ]

    async def close(self) -> None:
        await self._channel.close(grace=None)


async def open_relay(text: str, credentials: FleetCredentials, timeout_s: float = LIST_TIMEOUT_S) -> Relay:
    """Dial the service at `text` ([NAME@]HOST:PORT) and list its agents within `timeout_s` (at most
    LIST_TIMEOUT_S); RelayError when that fails."""
    name, address = parse_coordinator_address(text)
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
        ("grpc.enable_retries", 0),
        *channel_options_for_peer("coordinator", name),
    ]
    channel = grpc.aio.secure_channel(address, channel_credentials(credentials), options)
    try:
        reply = await link_pb2_grpc.FleetQueryStub(channel).ListAgents(
            link_pb2.ListAgentsRequest(), timeout=min(timeout_s, LIST_TIMEOUT_S)
        )
    except grpc.aio.AioRpcError as error:
        await channel.close(grace=None)
        said = explain_rpc_failure(
            error.code().name.lower(), error.details() or "", CallContext(name, address, role="coordinator")
        )
        raise RelayError(f"the coordinator service {name!r} at {address} did not list its agents: {said}") from None
    return Relay(address, channel, list(reply.agents))


class RelayVantage:
    def __init__(self, stub: link_pb2_grpc.FleetQueryStub, info: VantageInfo, coordinator: str) -> None:
        self.info = info
        self._stub = stub
        self._coordinator = coordinator

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome:
        try:
            reply = await self._stub.Probe(
                link_pb2.FleetProbeRequest(
                    agent=self.info.name, timeout_s=timeout_s, request=wire.request_to_wire(request)
                ),
                timeout=timeout_s + RELAY_MARGIN_S,
            )
        except grpc.aio.AioRpcError as error:
            return ProbeOutcome(self.info, STATE_BY_CODE.get(error.code(), VantageState.ERROR), error=self._why(error))
        return probe_outcome_from_wire(self.info, reply)

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome:
        try:
            reply = await self._stub.ListAgents(
                link_pb2.ListAgentsRequest(
                    names=[self.info.name], timeout_s=timeout_s, include_roots=include_roots, describe=True
                ),
                timeout=timeout_s + RELAY_MARGIN_S,
            )
        except grpc.aio.AioRpcError as error:
            return DescribeOutcome(
                self.info, STATE_BY_CODE.get(error.code(), VantageState.ERROR), error=self._why(error)
            )
        for agent in reply.agents:
            if agent.name == self.info.name:
                return describe_from_wire(self.info, agent)
        return DescribeOutcome(
            self.info, VantageState.OFFLINE, error=f"coordinator at {self._coordinator} no longer knows this agent"
        )

    async def close(self) -> None:
        return None  # the channel is the relay's

    def _why(self, error: grpc.aio.AioRpcError) -> str:
        details = (error.details() or "").strip()
        text = error.code().name.lower() + (f": {details}" if details else "")
        return f"via coordinator at {self._coordinator}: {text}"


async def relay_for(
    coordinator: str | None, inventory_path: Path | None, timeout_s: float = LIST_TIMEOUT_S
) -> Relay | None:
    """The relay through the coordinator named by `coordinator` or ${ENV_COORDINATOR}, or None for none;
    the CLI presents the inventory's [coordinator] credentials, and waits for the list within `timeout_s`."""
    from ...agent.pki.credentials import load_credentials
    from ...agent.pki.location import default_pki_dir
    from .inventory import load_inventory

    text = coordinator or os.environ.get(ENV_COORDINATOR)
    if not text:
        return None
    try:
        parse_coordinator_address(text)
    except RelayError as error:
        raise RelayError(f"{'--coordinator' if coordinator else '$' + ENV_COORDINATOR}: {error}") from None
    paths = load_inventory(inventory_path, pki_dir=default_pki_dir()).credentials
    credentials = load_credentials(paths.ca, paths.cert, paths.key, expect_role="coordinator")
    return await open_relay(text, credentials, timeout_s)
