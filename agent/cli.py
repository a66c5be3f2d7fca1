"""`tlsfleet agent serve` (also `tlsfleet-agent serve`, `python -m tlsfleet.agent serve`): the agent's own
command line. It loads no coordinator module; the `tlsfleet` command mounts it as `tlsfleet agent`."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from . import exit_codes, startup_collection
from .command import CONTEXT_SETTINGS, epilog, run_main
from .command_group import CommandGroup
from .errors import UsageError
from .naming import LABEL_KEY_PATTERN, MAX_LABEL_VALUE, MAX_LABELS, NAME_PATTERN, RESERVED_NAMES

app = typer.Typer(
    name="tlsfleet-agent",
    help="Run a tlsfleet agent on this host.",
    no_args_is_help=True,
    add_completion=False,
    context_settings=CONTEXT_SETTINGS,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)


@app.callback()
def _root() -> None:
    """Run a tlsfleet agent on this host."""


@app.command(
    "serve",
    epilog=epilog(
        "tlsfleet-agent serve --name web-1 --listen 0.0.0.0:7443 --label env=prod --pki-dir /etc/tlsfleet/pki",
        "tlsfleet-agent serve --name dev-1 --listen 127.0.0.1:7443 --insecure",
        exits="0 stopped by SIGTERM after draining its probes",
    ),
)
def agent_serve(
    name: Annotated[str, typer.Option("--name", help="This agent's name, as in the inventory and its certificate.")],
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="HOST:PORT to listen on (port 0: any free port); default 0.0.0.0:7443, none with --connect alone.",
        ),
    ] = None,
    connect: Annotated[
        list[str] | None,
        typer.Option(
            "--connect",
            help="[NAME@]HOST:PORT[,...] of coordinators to dial out to and hold a stream with (repeatable; "
            "NAME: the coordinator identity expected, default the first --allow-coordinator).",
        ),
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE label (repeatable).")] = None,
    pki_dir: Annotated[
        Path | None,
        typer.Option("--pki-dir", help="Fleet PKI directory; default $TLSFLEET_PKI_DIR or ~/.config/tlsfleet/pki."),
    ] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="Fleet CA certificate (default: PKI_DIR/ca.pem).")] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="This agent's certificate (default: PKI_DIR/agents/NAME.pem).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="This agent's key (default: PKI_DIR/agents/NAME.key).")
    ] = None,
    allow_coordinator: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-coordinator", help="Coordinator identity allowed to call (repeatable; default: coordinator)."
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Plaintext gRPC without identities; loopback addresses only.")
    ] = False,
    max_probes: Annotated[int, typer.Option("--max-probes", help="Probes run at once (1-4096).")] = 256,
    extra_store: Annotated[
        list[str] | None,
        typer.Option("--extra-store", help="LABEL=PATH of an extra CA bundle to judge chains against (repeatable)."),
    ] = None,
    hosts_file: Annotated[
        Path | None,
        typer.Option("--hosts-file", help="Answer names in this /etc/hosts-format file before the host's resolver."),
    ] = None,
    fetch_aia: Annotated[
        bool,
        typer.Option(
            "--fetch-aia", help="When a server omits its intermediate, fetch it from the AIA URL (as browsers do)."
        ),
    ] = False,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help=(
                "Probe only addresses matching a rule (repeatable): CIDR or address, port:N[-M], name:PATTERN, "
                "or a combination such as '10.0.0.0/8 port:443'."
            ),
        ),
    ] = None,
    deny: Annotated[
        list[str] | None,
        typer.Option("--deny", help="Never probe addresses matching this rule (repeatable; same forms as --allow)."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="TOML file of probe rules: allow = [...], deny = [...]."),
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(
            "--runtime",
            help=(
                "KIND=PATH of a runtime whose trust store to judge (repeatable): python=INTERPRETER, VENV or "
                "SITE-PACKAGES (its certifi), java=JRE-HOME, JAVA or KEYSTORE, node=NODE."
            ),
        ),
    ] = None,
    runtime_search: Annotated[
        bool,
        typer.Option(
            "--runtime-search/--no-runtime-search",
            help="Also find runtimes on the host: python3 in /usr/bin and /usr/local/bin, java and node on PATH.",
        ),
    ] = True,
    client_cert: Annotated[
        list[str] | None,
        typer.Option(
            "--client-cert",
            help="NAME=CERT,KEY of a client certificate probes may present by name (repeatable; PEM, key unencrypted).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str, typer.Option("--log-format", help="json (one JSON object per line) or console (for a terminal).")
    ] = "json",
) -> None:
    """Serve probes to the coordinator until SIGTERM."""
    raise typer.Exit(
        run_agent_serve(
            AgentServeArguments(
                name=name,
                listen=listen,
                connect=tuple(connect or ()),
                labels=tuple(label or ()),
                pki_dir=pki_dir,
                ca=ca,
                cert=cert,
                key=key,
                allowed_coordinators=tuple(allow_coordinator or ("coordinator",)),
                insecure=insecure,
                max_probes=max_probes,
                extra_stores=tuple(extra_store or ()),
                hosts_file=hosts_file,
                fetch_aia=fetch_aia,
                allow=tuple(allow or ()),
                deny=tuple(deny or ()),
                policy_file=policy,
                runtimes=tuple(runtime or ()),
                runtime_search=runtime_search,
                client_certs=tuple(client_cert or ()),
                log_level=log_level,
                log_format=log_format,
            )
        )
    )


@dataclass(frozen=True)
class AgentServeArguments:
    name: str
    listen: str | None = None  # None: 0.0.0.0:7443, or no listener when connect is given
    connect: tuple[str, ...] = ()  # [NAME@]HOST:PORT[,...] of coordinators to dial out to
    labels: tuple[str, ...] = ()
    pki_dir: Path | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    allowed_coordinators: tuple[str, ...] = ("coordinator",)
    insecure: bool = False
    max_probes: int = 256
    extra_stores: tuple[str, ...] = ()
    hosts_file: Path | None = None
    fetch_aia: bool = False
    allow: tuple[str, ...] = ()  # probe policy rules (agent.probe.policy)
    deny: tuple[str, ...] = ()
    policy_file: Path | None = None
    runtimes: tuple[str, ...] = ()
    runtime_search: bool = True
    client_certs: tuple[str, ...] = ()  # NAME=CERT,KEY
    log_level: str = "info"
    log_format: str = "json"


DEFAULT_LISTEN = "0.0.0.0:7443"


class AgentArgumentError(UsageError):
    """An `agent serve` option that is not accepted."""


def _pairs(items: tuple[str, ...], flag: str, what: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise AgentArgumentError(f"{flag} {item!r} is not accepted; use {what}")
        pairs.append((key, value))
    return tuple(pairs)


def build_config(args: AgentServeArguments):  # -> AgentConfig (imported lazily)
    from .daemon import AgentConfig
    from .pki.fleet_ca import FleetPkiError, normalize_name
    from .pki.location import default_pki_dir, pki_dir_problem
    from .probe.client_certs import load_client_certs
    from .probe.policy import load_policy

    if not NAME_PATTERN.match(args.name) or args.name in RESERVED_NAMES:
        raise AgentArgumentError(
            f"--name {args.name!r} is not accepted; 1-63 characters of a-z, 0-9 and '-' ('local' is reserved)"
        )
    labels = _pairs(args.labels, "--label", "KEY=VALUE, e.g. --label env=prod")
    # A coordinator refuses a registration beyond these, so an agent refuses them at start, not at every dial.
    if len(labels) > MAX_LABELS:
        raise AgentArgumentError(f"{len(labels)} --label options; at most {MAX_LABELS} are accepted")
    for key, value in labels:
        if not LABEL_KEY_PATTERN.match(key) or key == "name":
            raise AgentArgumentError(f"--label key {key!r} is not accepted; letters, digits, '_', '.', '-'")
        if len(value) > MAX_LABEL_VALUE:
            raise AgentArgumentError(
                f"--label {key}: the value is {len(value)} characters; at most {MAX_LABEL_VALUE} are accepted"
            )
    extra = {
        label: _readable_path("--extra-store", f"{label}={path}", path)
        for label, path in _pairs(args.extra_stores, "--extra-store", "LABEL=PATH")
    }
    runtimes = _runtimes(args.runtimes)
    pki = (args.pki_dir or default_pki_dir()).expanduser()
    if not args.insecure and args.ca is None and (problem := pki_dir_problem(pki)):
        raise AgentArgumentError(problem)
    from .dialout import parse_connect

    allowed = args.allowed_coordinators or ("coordinator",)
    for coordinator in allowed:
        try:
            normalize_name(coordinator)
        except FleetPkiError as error:
            raise AgentArgumentError(f"--allow-coordinator: {error}") from None
    connect = parse_connect(args.connect, allowed[0])
    return AgentConfig(
        name=args.name,
        listen=args.listen if args.listen is not None or connect else DEFAULT_LISTEN,
        connect=connect,
        labels=tuple(sorted(labels)),
        insecure=args.insecure,
        ca=None if args.insecure else (args.ca or pki / "ca.pem"),
        cert=None if args.insecure else (args.cert or pki / "agents" / f"{args.name}.pem"),
        key=None if args.insecure else (args.key or pki / "agents" / f"{args.name}.key"),
        allowed_coordinators=args.allowed_coordinators,
        max_concurrent_probes=args.max_probes,
        extra_stores=extra,
        hosts_file=args.hosts_file.expanduser() if args.hosts_file else None,
        fetch_aia=args.fetch_aia,
        runtimes=runtimes,
        runtime_search=args.runtime_search,
        client_certs=load_client_certs(args.client_certs),
        policy=load_policy(args.allow, args.deny, args.policy_file.expanduser() if args.policy_file else None),
    )


def _runtimes(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from .trust.runtimes import RUNTIME_KINDS

    what = "KIND=PATH with KIND " + ", ".join(RUNTIME_KINDS) + ", e.g. --runtime python=/usr/bin/python3"
    out = []
    for kind, path in _pairs(items, "--runtime", what):
        if kind not in RUNTIME_KINDS:
            raise AgentArgumentError(f"--runtime {kind}={path} is not accepted; use {what}")
        full = _readable_path("--runtime", f"{kind}={path}", path, program=True)
        out.append((kind, str(full)))
    return tuple(out)


def _readable_path(flag: str, given: str, path: str, *, program: bool = False) -> Path:
    """`path` made absolute, when it exists and this process can read it (list it, for a directory); with
    `program`, a file it may only execute will do too (an interpreter installed mode 0711). A store or
    runtime the agent cannot read would only show up as an error in every probe; it is refused at start."""
    full = Path(os.path.abspath(Path(path).expanduser()))
    try:
        if not full.exists():
            raise AgentArgumentError(f"{flag} {given}: {full} does not exist")
        if full.is_dir():
            with os.scandir(full) as entries:
                next(entries, None)
        elif full.is_file():
            with full.open("rb") as opened:
                opened.read(1)
        else:  # opening a FIFO would wait for a writer
            raise AgentArgumentError(f"{flag} {given}: {full} is neither a regular file nor a directory")
    except PermissionError as error:
        if not (program and os.path.isfile(full) and os.access(full, os.X_OK)):
            raise AgentArgumentError(f"{flag} {given}: cannot read {full}: {error.strerror}") from None
    except OSError as error:
        raise AgentArgumentError(f"{flag} {given}: cannot read {full}: {error.strerror or error}") from None
    return full


def run_agent_serve(args: AgentServeArguments) -> int:
    # An agent logs JSON lines only. structlog imports rich (and pygments) for its console renderer when
    # rich is installed: ~12 MiB an idle agent never uses. Blocking the import makes structlog do without.
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    from .daemon import run_agent
    from .logs import configure_service_logging

    configure_service_logging(args.log_level, log_format=args.log_format)
    asyncio.run(run_agent(build_config(args)))
    return exit_codes.OK


HEALTH_SERVICE = "tlsfleet.v1.Agent"


@app.command(
    "health",
    epilog=epilog(
        "tlsfleet-agent health --address 127.0.0.1:7443 --name web-1",
        exits="0 the agent serves; 1 it does not answer or is not serving",
    ),
)
def agent_health(
    address: Annotated[str, typer.Option("--address", help="HOST:PORT of the agent.")] = "127.0.0.1:7443",
    name: Annotated[
        str | None,
        typer.Option("--name", envvar="TLSFLEET_AGENT_NAME", help="The agent's name (mutual TLS: its certificate)."),
    ] = None,
    pki_dir: Annotated[
        Path | None,
        typer.Option("--pki-dir", help="Fleet PKI directory; default $TLSFLEET_PKI_DIR or ~/.config/tlsfleet/pki."),
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plaintext; loopback addresses only.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Deadline in seconds (0.1-60).")] = 3.0,
) -> None:
    """Ask an agent's gRPC health service whether it serves: exit 0 if so, 1 if not (a HEALTHCHECK)."""
    raise typer.Exit(asyncio.run(_check_health(address, name, pki_dir, insecure, timeout)))


async def _check_health(address: str, name: str | None, pki_dir: Path | None, insecure: bool, timeout: float) -> int:
    from typing import Any

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from .endpoints import EndpointError, is_loopback_host, split_host_port
    from .pki.credentials import channel_credentials, channel_options_for_peer, load_credentials
    from .pki.location import default_pki_dir

    if not 0.1 <= timeout <= 60:
        raise AgentArgumentError(f"--timeout {timeout:g} is out of range; accepted: 0.1-60 seconds")
    try:
        host, _ = split_host_port(address)
    except EndpointError as error:
        raise AgentArgumentError(f"--address: {error}") from None
    if insecure:
        if not is_loopback_host(host):
            raise AgentArgumentError(f"--insecure is refused for {address}; accepted for loopback addresses only")
        channel = grpc.aio.insecure_channel(address)
    else:
        if not name or not NAME_PATTERN.match(name):
            raise AgentArgumentError("--name (or $TLSFLEET_AGENT_NAME) must name the agent; its certificate is used")
        pki = (pki_dir or default_pki_dir()).expanduser()
        # The agent's own identity: the check runs beside the agent, where no coordinator key belongs.
        creds = load_credentials(
            pki / "ca.pem", pki / "agents" / f"{name}.pem", pki / "agents" / f"{name}.key", expect_role="agent"
        )
        options = channel_options_for_peer("agent", name)
        channel = grpc.aio.secure_channel(address, channel_credentials(creds), options)
    async with channel:
        try:
            # Typed as Any: the stubs' HealthStub declares none of its methods.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            typer.echo(f"unhealthy: agent at {address}: {error.code().name}: {error.details()}", err=True)
            return exit_codes.PROBLEM
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        typer.echo(f"unhealthy: agent at {address}: {status}", err=True)
        return exit_codes.PROBLEM
    typer.echo(f"serving: agent {name} at {address}" if name else f"serving: agent at {address}")
    return exit_codes.OK


def main() -> None:
    """Console entry point `tlsfleet-agent`."""
    # Collection resumes once the agent serves (daemon.py); its other commands are short.
    startup_collection.pause()
    run_main(app)
