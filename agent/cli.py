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

from . import exit_codes
from .command import CommandGroup, run_main
from .errors import UsageError
from .naming import LABEL_KEY_PATTERN, NAME_PATTERN, RESERVED_NAMES

app = typer.Typer(
    name="tlsfleet-agent",
    help="Run a tlsfleet agent on this host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)


@app.callback()
def _root() -> None:
    """Run a tlsfleet agent on this host."""


@app.command("serve")
def agent_serve(
    name: Annotated[str, typer.Option("--name", help="This agent's name, as in the inventory and its certificate.")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on (port 0: any free port).")] = (
        "0.0.0.0:7443"
    ),
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
) -> None:
    """Serve probes to the coordinator until SIGTERM."""
    raise typer.Exit(
        run_agent_serve(
            AgentServeArguments(
                name=name,
                listen=listen,
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
                runtimes=tuple(runtime or ()),
                runtime_search=runtime_search,
                client_certs=tuple(client_cert or ()),
                log_level=log_level,
            )
        )
    )


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
    runtimes: tuple[str, ...] = ()
    runtime_search: bool = True
    client_certs: tuple[str, ...] = ()  # NAME=CERT,KEY
    log_level: str = "info"


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
    from .pki.fleet_ca import default_pki_dir
    from .probe.client_certs import load_client_certs

    if not NAME_PATTERN.match(args.name) or args.name in RESERVED_NAMES:
        raise AgentArgumentError(
            f"--name {args.name!r} is not accepted; 1-63 characters of a-z, 0-9 and '-' ('local' is reserved)"
        )
    labels = _pairs(args.labels, "--label", "KEY=VALUE, e.g. --label env=prod")
    for key, _ in labels:
        if not LABEL_KEY_PATTERN.match(key) or key == "name":
            raise AgentArgumentError(f"--label key {key!r} is not accepted; letters, digits, '_', '.', '-'")
    extra = {label: Path(path).expanduser() for label, path in _pairs(args.extra_stores, "--extra-store", "LABEL=PATH")}
    runtimes = _runtimes(args.runtimes)
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
        runtimes=runtimes,
        runtime_search=args.runtime_search,
        client_certs=load_client_certs(args.client_certs),
    )


def _runtimes(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from .trust.runtimes import RUNTIME_KINDS

    what = "KIND=PATH with KIND " + ", ".join(RUNTIME_KINDS) + ", e.g. --runtime python=/usr/bin/python3"
    out = []
    for kind, path in _pairs(items, "--runtime", what):
        if kind not in RUNTIME_KINDS:
            raise AgentArgumentError(f"--runtime {kind}={path} is not accepted; use {what}")
        full = os.path.abspath(Path(path).expanduser())
        if not os.path.exists(full):
            raise AgentArgumentError(f"--runtime {kind}={path}: {full} does not exist")
        out.append((kind, full))
    return tuple(out)


def run_agent_serve(args: AgentServeArguments) -> int:
    # An agent logs JSON lines only. structlog imports rich (and pygments) for its console renderer when
    # rich is installed: ~12 MiB an idle agent never uses. Blocking the import makes structlog do without.
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    from .daemon import run_agent
    from .logs import configure_service_logging

    configure_service_logging(args.log_level)
    asyncio.run(run_agent(build_config(args)))
    return exit_codes.OK


def main() -> None:
    """Console entry point `tlsfleet-agent`."""
    run_main(app)
