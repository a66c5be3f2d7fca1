"""`tlsfleet agent serve`: turn command-line options into an AgentConfig and run the agent."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from tlsfleet.coordinator import exit_codes
from tlsfleet.coordinator.inventory import LABEL_KEY_PATTERN, NAME_PATTERN


@dataclass(frozen=True)
class AgentServeArguments:
    name: str
    listen: str
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
    log_level: str = "info"


class AgentArgumentError(ValueError):
    pass


def _pairs(items: tuple[str, ...], flag: str, what: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise AgentArgumentError(f"{flag} {item!r} is not accepted; use {what}")
        pairs.append((key, value))
    return tuple(pairs)


def build_config(args: AgentServeArguments):  # -> AgentConfig (imported lazily)
    from tlsfleet.agent.fleet_pki import default_pki_dir
    from tlsfleet.agent.server import AgentConfig

    if not NAME_PATTERN.match(args.name) or args.name == "local":
        raise AgentArgumentError(
            f"--name {args.name!r} is not accepted; 1-63 characters of a-z, 0-9 and '-' ('local' is reserved)"
        )
    labels = _pairs(args.labels, "--label", "KEY=VALUE, e.g. --label env=prod")
    for key, _ in labels:
        if not LABEL_KEY_PATTERN.match(key) or key == "name":
            raise AgentArgumentError(f"--label key {key!r} is not accepted; letters, digits, '_', '.', '-'")
    extra = {label: Path(path).expanduser() for label, path in _pairs(args.extra_stores, "--extra-store", "LABEL=PATH")}
    pki = (args.pki_dir or default_pki_dir()).expanduser()
    return AgentConfig(
        name=args.name,
        listen=args.listen,
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
    )


def run_agent_serve(args: AgentServeArguments) -> int:
    # An agent logs JSON lines only. structlog imports rich (and pygments) for its console renderer when
    # rich is installed: ~12 MiB an idle agent never uses. Blocking the import makes structlog do without.
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    from tlsfleet.agent.endpoints import EndpointError
    from tlsfleet.agent.fleet_credentials import CredentialError
    from tlsfleet.agent.hosts_override import HostsFileError
    from tlsfleet.agent.logs import configure_service_logging
    from tlsfleet.agent.server import AgentConfigError, run_agent

    try:
        configure_service_logging(args.log_level)
        config = build_config(args)
        asyncio.run(run_agent(config))
    except (AgentArgumentError, AgentConfigError, CredentialError, EndpointError, HostsFileError) as error:
        typer.echo(f"error: {error}", err=True)
        return exit_codes.USAGE
    return exit_codes.OK
