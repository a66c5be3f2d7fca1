"""The `tlsfleet` command line.

Heavy imports (grpc, cryptography, rich) happen inside commands so that `tlsfleet --help` starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ... import __version__
from ...agent.cli import app as agent_app
from ...agent.command import CommandGroup, run_main
from .coordinator import coordinator_app
from .pki import app as pki_app
from .report import report_app

EXIT_CODES_HELP = (
    "Exit codes: 0 no finding at or above --fail-on and every vantage answered; 1 a finding at or above "
    "--fail-on (default warning); 2 bad input or configuration (target, option, inventory, selector, "
    "credentials, recording); 3 no such finding, but some vantages did not answer; 70 an internal error."
)
FailOnOption = Annotated[
    str,
    typer.Option("--fail-on", help="Exit 1 when a finding reaches this severity: info, warning or critical."),
]
ClockToleranceOption = Annotated[
    float, typer.Option("--clock-tolerance", help="Clock offset (seconds) beyond which a host is called skewed.")
]

app = typer.Typer(
    name="tlsfleet",
    help="One TLS handshake, seen from every host at once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)
app.add_typer(agent_app, name="agent", help="Run a tlsfleet agent on this host.")
app.add_typer(pki_app, name="pki", help="Create the fleet CA and issue agent and coordinator certificates.")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(report_app, name="report")


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


@app.command(epilog=EXIT_CODES_HELP)
def probe(
    target: Annotated[str, typer.Argument(help="HOST, HOST:PORT, [IPv6]:PORT or https://HOST[:PORT]/")],
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
    save: Annotated[
        Path | None, typer.Option("--save", help="Keep the raw results in FILE for `tlsfleet diagnose FILE`.")
    ] = None,
) -> None:
    """Probe TARGET from every selected vantage, compare what each one sees, and name the cause."""
    from .probe import ProbeArguments, parse_sni_variants, run_probe

    variants = parse_sni_variants(sni_variants)
    code = run_probe(
        ProbeArguments(
            target=target,
            sni=sni,
            no_sni=no_sni,
            alpn=tuple(alpn or ()),
            tls_min=tls_min,
            tls_max=tls_max,
            address=address,
            max_addresses=max_addresses,
            client_cert=client_cert,
            agents=agents,
            inventory=inventory,
            no_local=no_local,
            timeout=timeout,
            json_output=json_output,
            sni_variants=variants,
            fail_on=fail_on,
            save=save,
            clock_tolerance=clock_tolerance,
        )
    )
    raise typer.Exit(code)


@app.command(epilog=EXIT_CODES_HELP)
def diagnose(
    recording: Annotated[Path, typer.Argument(help="A file written by `tlsfleet probe --save FILE`.")],
    fail_on: FailOnOption = "warning",
    clock_tolerance: ClockToleranceOption = 2.0,
    json_output: JsonOption = False,
) -> None:
    """Diagnose a saved recording offline: the same matrix and findings as when it was probed."""
    from .diagnose import run_diagnose

    raise typer.Exit(run_diagnose(recording, fail_on=fail_on, clock_tolerance=clock_tolerance, json_output=json_output))


@app.command(epilog="Exit codes: 0 every agent answered; 2 bad input or configuration; 3 some agents did not answer.")
def agents(
    agents: AgentsOption = None,
    inventory: InventoryOption = None,
    no_local: NoLocalOption = False,
    timeout: TimeoutOption = 5.0,
    json_output: JsonOption = False,
) -> None:
    """Show each agent's state, version, labels, clock offset and trust stores."""
    from .agents import run_agents

    raise typer.Exit(
        run_agents(agents=agents, inventory=inventory, no_local=no_local, timeout=timeout, json_output=json_output)
    )


@app.command()
def demo() -> None:
    """A throwaway lab of real hosts with real faults on loopback, probed and diagnosed."""
    from .demo import run_demo

    raise typer.Exit(run_demo())


def main() -> None:
    """Console entry point `tlsfleet`."""
    run_main(app)
