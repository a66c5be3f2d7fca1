"""Run an agent: the gRPC server, its health service, credentials, a clean stop on SIGTERM, and a re-read
of every trust store on SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import __version__
from ..v1 import agent_pb2_grpc
from . import startup_collection
from .dialout import AgentLink, LinkEndpoint
from .endpoints import bind_failure, is_loopback_host, split_host_port
from .errors import UsageError
from .grpc_service import MAX_MESSAGE_BYTES, AgentService
from .hostfacts import HostFactsCache
from .logs import get_logger
from .model import AgentIdentity
from .pki.credentials import AllowedPeersInterceptor, FleetCredentials, load_credentials, server_credentials
from .probe.client_certs import ClientCertificate
from .probe.engine import ProbeEngine
from .probe.hosts_override import load_hosts_file, with_overrides
from .probe.policy import ProbePolicy
from .probe.resolve import resolve
from .trust.runtimes import RuntimeOptions

log = get_logger("tlsfleet.agent")

SHUTDOWN_GRACE_S = 5.0


class AgentConfigError(UsageError):
    """A setting the agent cannot start with; the message says which and what is accepted."""


@dataclass(frozen=True)
class AgentConfig:
    name: str
    listen: str | None  # None: no listener, only the streams to --connect coordinators
    labels: tuple[tuple[str, str], ...] = ()
    insecure: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    allowed_coordinators: tuple[str, ...] = ("coordinator",)
    max_concurrent_probes: int = 256
    max_waiting_probes: int = 1024
    extra_stores: Mapping[str, Path] = field(default_factory=dict)
    hosts_file: Path | None = None  # names answered from this file before the host's resolver
    fetch_aia: bool = False  # fetch a missing intermediate from the AIA URL a server's certificate names
    runtimes: tuple[tuple[str, str], ...] = ()  # (python|java|node, PATH) from --runtime
    runtime_search: bool = True  # also find runtimes on the host (False: --no-runtime-search)
    client_certs: Mapping[str, ClientCertificate] = field(default_factory=dict)  # --client-cert, checked
    policy: ProbePolicy = field(default_factory=ProbePolicy)  # --allow, --deny, --policy; listeners added here
    connect: tuple[LinkEndpoint, ...] = ()  # coordinators this agent dials out to (--connect)


def _check_config(config: AgentConfig) -> None:
    if config.listen is None and not config.connect:
        raise AgentConfigError("nothing to serve: give --listen HOST:PORT, --connect HOST:PORT, or both")
    host = split_host_port(config.listen, allow_port_zero=True)[0] if config.listen is not None else ""
    if config.insecure:
        if config.connect:
            raise AgentConfigError(
                "--insecure is refused with --connect: an agent dials coordinators with its fleet certificate only"
            )
        if not is_loopback_host(host):
            raise AgentConfigError(
                f"--insecure is refused on {config.listen}: plaintext is accepted on loopback only "
                "(127.0.0.0/8, ::1, localhost); use the fleet certificates (`tlsfleet pki issue agent NAME`)"
            )
    elif not (config.ca and config.cert and config.key):
        raise AgentConfigError(
            "mutual TLS needs --ca, --cert and --key (create them with `tlsfleet pki init` and "
            "`tlsfleet pki issue agent NAME`), or --insecure on a loopback address"
        )
    if not 1 <= config.max_concurrent_probes <= 4096:
        raise AgentConfigError("--max-probes must be between 1 and 4096")


async def run_agent(config: AgentConfig, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then drain in-flight probes and exit."""
    _check_config(config)
    credentials = None
    fleet: FleetCredentials | None = None
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if not config.insecure:
        assert config.ca and config.cert and config.key
        # This host's clock may be what is wrong: serve anyway, say so, and let the fleet see the skew.
        fleet = load_credentials(config.ca, config.cert, config.key, expect_role="agent", tolerate_clock=True)
        for problem in fleet.clock_problems:
            log.warning(
                "credential_outside_validity",
                certificate=str(problem.path),
                kind=problem.what,
                subject=problem.subject,
                state=problem.state,
                not_before=problem.not_before.isoformat(),
                not_after=problem.not_after.isoformat(),
                host_time=problem.host_time.isoformat(),
                message=problem.message() + "; serving anyway: peers whose clock is right accept it",
            )
        if fleet.name != config.name:
            raise AgentConfigError(
                f"the certificate {config.cert} names agent {fleet.name!r}, but this agent is {config.name!r}; "
                f"issue one with `tlsfleet pki issue agent {config.name}` or pass --name {fleet.name}"
            )
        credentials = server_credentials(fleet)
        # Every service, health included, answers only the coordinators this agent was told to trust.
        interceptors.append(
            AllowedPeersInterceptor(
                role="coordinator", allowed_names=config.allowed_coordinators, health_for=("agent", config.name)
            )
        )

    resolver = with_overrides(load_hosts_file(config.hosts_file), resolve) if config.hosts_file else None
    engine = ProbeEngine(
        extra_stores=config.extra_stores,
        max_concurrency=config.max_concurrent_probes,
        resolver=resolver,
        fetch_aia=config.fetch_aia,
        runtimes=RuntimeOptions(named=config.runtimes, search=config.runtime_search),
        client_certs=config.client_certs,
        policy=config.policy,
    )
    identity = AgentIdentity(name=config.name, version=__version__, labels=config.labels)
    service = AgentService(
        engine=engine,
        identity=identity,
        facts=HostFactsCache(
            __version__, os.environ, runtimes=engine.runtimes, client_certs=engine.client_cert_names()
        ),
        max_concurrent_probes=config.max_concurrent_probes,
        max_waiting_probes=config.max_waiting_probes,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", 1024 * 1024),
        ],
        maximum_concurrent_rpcs=config.max_concurrent_probes + config.max_waiting_probes + 16,
        interceptors=interceptors,
    )
    agent_pb2_grpc.add_AgentServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = 0
    if config.listen is not None:  # without one, the server holds no port: the agent only dials out
        try:
            if credentials is None:
                port = server.add_insecure_port(config.listen)
            else:
                port = server.add_secure_port(config.listen, credentials)
        except RuntimeError:  # gRPC's words for it say nothing of the cause
            port = 0
        if port == 0:
            raise AgentConfigError(f"cannot listen on {config.listen}: {bind_failure(config.listen)}")
        # Before the first request: a probe must never reach the agent's own listener.
        engine.policy = config.policy.with_listener(
            split_host_port(config.listen, allow_port_zero=True)[0], port, "gRPC"
        )
    # Handlers go in before anyone can learn the port: a SIGTERM right after start-up must still drain.
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    rereads: set[asyncio.Task[None]] = set()

    async def reread() -> None:
        # In a worker thread: re-reading may run interpreters; probes keep the stores they have meanwhile.
        try:
            await asyncio.to_thread(engine.refresh_stores, reason="SIGHUP")
        except Exception as error:  # a bad re-read must not end the agent; the old stores stay
            log.error("trust_stores_reread_failed", reason="SIGHUP", error=f"{type(error).__name__}: {error}")

    def reread_stores() -> None:
        task = loop.create_task(reread())
        rereads.add(task)
        task.add_done_callback(rereads.discard)

    loop.add_signal_handler(signal.SIGHUP, reread_stores)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("tlsfleet.v1.Agent", health_pb2.HealthCheckResponse.SERVING)
    if config.listen is not None:
        host, _ = split_host_port(config.listen, allow_port_zero=True)
        log.info(
            "agent_listening",
            agent=config.name,
            version=__version__,
            host=host,
            port=port,
            mtls=credentials is not None,
            trust_stores=[s.name for s in engine.trust_stores()],
        )
    links: list[asyncio.Task[None]] = []
    if config.connect:
        assert fleet is not None  # _check_config refuses --insecure with --connect
        for endpoint in config.connect:
            link = AgentLink(
                endpoint,
                credentials=fleet,
                service=service,
                max_requests=config.max_concurrent_probes + config.max_waiting_probes,
                grace_s=SHUTDOWN_GRACE_S,
            )
            links.append(asyncio.create_task(link.run(stop)))
        log.info(
            "agent_dialling",
            agent=config.name,
            version=__version__,
            coordinators=[e.address for e in config.connect],
            trust_stores=[s.name for s in engine.trust_stores()],
        )

    startup_collection.serving()
    try:
        await stop.wait()
        if links:  # each drains its requests in flight, then ends its stream
            _done, late = await asyncio.wait(links, timeout=SHUTDOWN_GRACE_S + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(*links, return_exceptions=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        log.info("agent_stopping", grace_s=SHUTDOWN_GRACE_S)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_S)
        log.info("agent_stopped")
