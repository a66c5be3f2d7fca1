"""The `tlsfleet` command line.

Heavy imports (grpc, cryptography, rich) happen inside commands so that `tlsfleet --help` starts fast.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.models import TyperInfo

from ... import __version__
from ...agent.command import CONTEXT_SETTINGS, epilog, fail, run_main
from ...agent.command_group import CommandGroup

FINDING_EXITS = (
    "0 no finding at or above --fail-on and every vantage answered; 1 a finding at or above --fail-on "
    "(default warning); 3 no such finding, but some vantages did not answer"
)
FailOnOption = Annotated[
    str,
    typer.Option("--fail-on", help="Exit 1 when a finding reaches this severity: info, warning or critical."),
]
ClockToleranceOption = Annotated[
    float, typer.Option("--clock-tolerance", help="Clock offset (seconds) beyond which a host is called skewed.")
]


class _GroupsWhenListed(typer.Typer):
    """A Typer whose groups (`_add_groups`) are imported when its groups are first listed: a command of its
    own (`tlsfleet probe`) runs with none of them (_only_the_command_asked), and their modules take 3 ms."""

    _groups: list[TyperInfo]
    _groups_to_add = False

    @property
    def registered_groups(self) -> list[TyperInfo]:
        if self._groups_to_add:
            self._groups_to_add = False
            _add_groups(self)
        return self._groups

    @registered_groups.setter
    def registered_groups(self, groups: list[TyperInfo]) -> None:
        self._groups = groups
        self._groups_to_add = False


def _add_groups(full: typer.Typer) -> None:
    from ...agent.cli import app as agent_app
    from .coordinator import coordinator_app
    from .pki import app as pki_app
    from .report import report_app

    full.add_typer(agent_app, name="agent", help="Run a tlsfleet agent on this host.")
    full.add_typer(pki_app, name="pki", help="Create the fleet CA and issue agent and coordinator certificates.")
    full.add_typer(coordinator_app, name="coordinator")
    full.add_typer(report_app, name="report")


app = _GroupsWhenListed(
    name="tlsfleet",
    help="One TLS handshake, seen from every host at once.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)
app._groups_to_add = True


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tlsfleet {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """One TLS handshake, seen from every host at once."""


InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        help="Fleet inventory (TOML). Default: $TLSFLEET_INVENTORY or ~/.config/tlsfleet/inventory.toml; "
        "without one, only the local machine probes.",
    ),
]
AgentsOption = Annotated[
    str | None,
    typer.Option(
        "--agents",
        "-a",
        help="Which vantages: KEY=VALUE, KEY!=VALUE or agent names (wildcards allowed), comma-separated; "
        "'local' is this machine.",
    ),
]
NoLocalOption = Annotated[bool, typer.Option("--no-local", help="Leave this machine out of the vantages.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", "-t", help="Deadline for the whole fan-out, seconds (0.1-300).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the full results as JSON on stdout.")]
NotesOption = Annotated[
    bool,
    typer.Option("--notes", help="With no finding at warning or above, show each note's evidence and fix too."),
]
CoordinatorOption = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        envvar="TLSFLEET_COORDINATOR",
        help="[NAME@]HOST:PORT of a coordinator service: its dial-out agents are asked through it too.",
    ),
]


@app.command(
    epilog=epilog(
        "tlsfleet probe api.internal:443",
        "tlsfleet probe https://api.internal/ --agents env=prod --no-local",
        "tlsfleet probe db.internal:5432 --json > result.json",
        "tlsfleet probe api.internal login.internal --targets-file more-targets.txt",
        "tlsfleet probe api.internal --sni-variants none,www.api.internal --save api.tlsfleet.json",
        exits=FINDING_EXITS,
    )
)
def probe(
    target: Annotated[
        list[str] | None,
        typer.Argument(help="HOST, HOST:PORT, [IPv6]:PORT or https://HOST[:PORT]/; several for several targets."),
    ] = None,
    targets_file: Annotated[
        Path | None,
        typer.Option("--targets-file", help="Also probe the targets in FILE: one per line, # comments allowed."),
    ] = None,
    sni: Annotated[str | None, typer.Option("--sni", help="Send this name in SNI (and verify against it).")] = None,
    no_sni: Annotated[bool, typer.Option("--no-sni", help="Send no SNI at all.")] = False,
    alpn: Annotated[list[str] | None, typer.Option("--alpn", help="Offer this ALPN protocol (repeatable).")] = None,
    tls_min: Annotated[str | None, typer.Option("--tls-min", help="Lowest TLS version: 1.0, 1.1, 1.2, 1.3.")] = None,
    tls_max: Annotated[str | None, typer.Option("--tls-max", help="Highest TLS version: 1.0, 1.1, 1.2, 1.3.")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Probe this IP address only, skipping DNS (address pin).")
    ] = None,
    max_addresses: Annotated[int, typer.Option("--max-addresses", help="Probe at most this many addresses.")] = 8,
    client_cert: Annotated[
        str | None,
        typer.Option(
            "--client-cert", help="Present the agents' client certificate of this name (agent --client-cert)."
        ),
    ] = None,
    starttls: Annotated[
        str | None,
        typer.Option(
            "--starttls",
            help="Negotiate TLS inside smtp, imap, pop3, ftp, ldap, postgres, mysql or xmpp first; "
            "by default inferred from the port (25/587 smtp, 5432 postgres, ...); 'none' for TLS at once.",
        ),
    ] = None,
    via_proxy: Annotated[
        bool,
        typer.Option(
            "--via-proxy", help="Connect through each host's HTTPS_PROXY (honouring NO_PROXY), as its applications do."
        ),
    ] = False,
    coordinator: CoordinatorOption = None,
    agents: AgentsOption = None,
    inventory: InventoryOption = None,
    no_local: NoLocalOption = False,
    timeout: TimeoutOption = 10.0,
    json_output: JsonOption = False,
    sni_variants: Annotated[
        str | None,
        typer.Option(
            "--sni-variants",
            help="Also probe with these SNI names, comma-separated; 'none' probes without SNI (e.g. none,www.a.test).",
        ),
    ] = None,
    fail_on: FailOnOption = "warning",
    clock_tolerance: ClockToleranceOption = 2.0,
    notes: NotesOption = False,
    save: Annotated[
        Path | None, typer.Option("--save", help="Keep the raw results in FILE for `tlsfleet diagnose FILE`.")
    ] = None,
) -> None:
    """Probe each TARGET from every selected vantage, compare what each one sees, and name the cause."""
    options = dict(locals())  # its parameters as typer read them; probe_argv.py reads the same without typer
    from .probe_command import probe_command

    raise typer.Exit(probe_command(**options))


@app.command(
    epilog=epilog(
        "tlsfleet diagnose api.tlsfleet.json", "tlsfleet diagnose api.tlsfleet.json --json", exits=FINDING_EXITS
    )
)
def diagnose(
    recording: Annotated[Path, typer.Argument(help="A file written by `tlsfleet probe --save FILE`.")],
    fail_on: FailOnOption = "warning",
    clock_tolerance: ClockToleranceOption = 2.0,
    json_output: JsonOption = False,
    notes: NotesOption = False,
) -> None:
    """Diagnose a saved recording offline: the same matrix and findings as when it was probed."""
    from .diagnose import run_diagnose

    raise typer.Exit(
        run_diagnose(recording, fail_on=fail_on, clock_tolerance=clock_tolerance, json_output=json_output, notes=notes)
    )


@app.command(
    epilog=epilog(
        "tlsfleet agents",
        "tlsfleet agents --agents env=prod --json",
        exits="0 every agent answered; 3 some agents did not answer",
    )
)
def agents(
    agents: AgentsOption = None,
    inventory: InventoryOption = None,
    no_local: NoLocalOption = False,
    timeout: TimeoutOption = 5.0,
    coordinator: CoordinatorOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show each agent's state, version, labels, clock offset and trust stores."""
    from .agents import run_agents

    raise typer.Exit(
        run_agents(
            agents=agents,
            inventory=inventory,
            no_local=no_local,
            timeout=timeout,
            json_output=json_output,
            coordinator=coordinator,
        )
    )


@app.command(
    epilog=epilog(
        "tlsfleet chain api.internal:443",
        "tlsfleet chain api.internal:443 --agents edge-2 --pem > served.pem",
        "tlsfleet chain ldap.internal:389 --text",
        exits="0 every vantage was served a chain; 1 some vantage or address got none; 3 some vantages did not answer",
    )
)
def chain(
    target: Annotated[str, typer.Argument(help="HOST, HOST:PORT, [IPv6]:PORT or https://HOST[:PORT]/")],
    pem: Annotated[bool, typer.Option("--pem", help="Each certificate as PEM, for openssl.")] = False,
    text: Annotated[bool, typer.Option("--text", help="Each certificate's fields: key, signature, SAN, AIA.")] = False,
    sni: Annotated[str | None, typer.Option("--sni", help="Send this name in SNI.")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Probe this IP address only, skipping DNS (address pin).")
    ] = None,
    starttls: Annotated[
        str | None, typer.Option("--starttls", help="As `tlsfleet probe --starttls` (inferred from the port).")
    ] = None,
    agents: AgentsOption = None,
    inventory: InventoryOption = None,
    no_local: NoLocalOption = False,
    timeout: TimeoutOption = 10.0,
) -> None:
    """The served chain as each vantage saw it, grouped where it is the same, to read, share or feed to openssl."""
    from .chain import ChainArguments, run_chain

    if pem and text:
        raise fail("--pem and --text contradict each other; give one of them")
    output = "pem" if pem else "text" if text else "summary"
    raise typer.Exit(
        run_chain(
            ChainArguments(
                target=target,
                output=output,
                sni=sni,
                address=address,
                starttls=starttls,
                agents=agents,
                inventory=inventory,
                no_local=no_local,
                timeout=timeout,
            )
        )
    )


@app.command(epilog=epilog("tlsfleet demo", exits="0 the demonstration ran"))
def demo() -> None:
    """A throwaway lab of real hosts with real faults on loopback, probed and diagnosed."""
    from .demo import run_demo

    raise typer.Exit(run_demo())


def main() -> None:
    """Console entry point `tlsfleet`."""
    run_main(_only_the_command_asked(app, sys.argv[1:]))  # launch.py freezes what is left as the process ends


def _only_the_command_asked(full: typer.Typer, args: list[str]) -> typer.Typer:
    """`full` with only the command named first in `args` when that is one of its own commands (`probe`,
    `chain`, ...), not a group: building every command's parameters takes longer than running `tlsfleet
    probe` from this machine does without them. The command parses, helps and fails as in `full`; anything
    else gets `full`."""
    asked = args[0] if args else ""
    chosen = [c for c in full.registered_commands if (c.name or getattr(c.callback, "__name__", "")) == asked]
    if len(chosen) != 1:
        return full
    trimmed = copy.copy(full)
    trimmed.registered_commands = chosen
    trimmed.registered_groups = []
    return trimmed
