"""`tlsfleet probe`: build the request, fan it out, show the matrix, choose the exit code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from ...agent import exit_codes
from ...agent.command import fail
from ...agent.model import ProbeRequest
from ..diagnosis.model import Finding, Severity
from ..observation import DiagnosisSettings, Observation
from ..probing import ProbeArgumentError, build_request


@dataclass(frozen=True)
class ProbeArguments:
    target: str
    sni: str | None = None
    no_sni: bool = False
    alpn: tuple[str, ...] = ()
    tls_min: str | None = None
    tls_max: str | None = None
    address: str | None = None
    max_addresses: int = 8
    client_cert: str | None = None
    agents: str | None = None
    inventory: Path | None = None
    no_local: bool = False
    timeout: float = 10.0
    json_output: bool = False
    sni_variants: tuple[str | None, ...] = ()
    fail_on: str = "warning"
    save: Path | None = None
    clock_tolerance: float = 2.0  # seconds


def parse_sni_variants(text: str | None) -> tuple[str | None, ...]:
    """`none,www.example.com` -> (None, "www.example.com"); None stands for "send no SNI"."""
    if not text:
        return ()
    from ...agent.probe.targets import TargetError, normalize_host

    variants: list[str | None] = []
    for item in (part.strip() for part in text.split(",")):
        if item.lower() in ("none", "no-sni", "-"):
            variants.append(None)
            continue
        try:
            variants.append(normalize_host(item))
        except TargetError:
            raise ProbeArgumentError(
                f"--sni-variants item {item!r} is not accepted; use host names and 'none' (no SNI), comma-separated"
            ) from None
    return tuple(dict.fromkeys(variants))


async def _probe_fleet(args: ProbeArguments, request: ProbeRequest) -> Observation:
    from ..fleet.choose import select_vantages
    from ..probing import observe

    # Channels belong to the event loop that uses them, so the vantages are built inside it.
    fleet = select_vantages(inventory_path=args.inventory, selector_text=args.agents, include_local=not args.no_local)
    try:
        return await observe(fleet.vantages, request, args.timeout, args.sni_variants)
    finally:
        await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)


def run_probe(args: ProbeArguments) -> int:
    from ...agent.logs import configure_cli_logging

    configure_cli_logging()
    request = build_request(
        args.target,
        now_ns=time.time_ns(),
        timeout=args.timeout,
        sni=args.sni,
        no_sni=args.no_sni,
        alpn=args.alpn,
        tls_min=args.tls_min,
        tls_max=args.tls_max,
        address=args.address,
        max_addresses=args.max_addresses,
        client_cert=args.client_cert,
    )
    fail_on, settings = diagnosis_options(request, args.fail_on, args.clock_tolerance)
    observation = asyncio.run(_probe_fleet(args, request))
    if args.save is not None:
        from ..recording import save

        try:
            save(args.save, observation)
        except OSError as error:
            raise fail(f"cannot save the recording to {args.save}: {error.strerror or error}") from None
    return show_observation(observation, settings, fail_on=fail_on, json_output=args.json_output)


def diagnosis_options(
    request: ProbeRequest, fail_on: str, clock_tolerance_s: float
) -> tuple[Severity, DiagnosisSettings]:
    """--fail-on and --clock-tolerance, checked; ProbeArgumentError names what is accepted."""
    try:
        severity = Severity.parse(fail_on)
    except ValueError as error:
        raise ProbeArgumentError(f"--fail-on: {error}") from None
    if not 0 <= clock_tolerance_s <= 86_400:
        raise ProbeArgumentError(f"--clock-tolerance {clock_tolerance_s:g} is out of range; accepted: 0-86400 seconds")
    return severity, DiagnosisSettings.for_request(request, clock_tolerance_ms=clock_tolerance_s * 1000)


def show_observation(
    observation: Observation, settings: DiagnosisSettings, *, fail_on: Severity, json_output: bool
) -> int:
    """Diagnose, print the matrix and the findings (or JSON), and return the exit code."""
    from ..diagnosis.engine import diagnose

    findings = diagnose(observation, settings)
    code = exit_code_for(observation, findings, fail_on)
    if json_output:
        from ..json_output import probe_report_json

        typer.echo(json.dumps(probe_report_json(observation, findings, exit_code=code), indent=2))
        return code
    from ..matrix import build_matrix
    from .render import make_console, print_findings, print_matrix

    console = make_console()
    print_matrix(console, observation.request, observation.outcomes, build_matrix(observation.outcomes))
    for variant in observation.variants:
        console.print()
        print_matrix(console, variant.request, variant.outcomes, build_matrix(variant.outcomes))
    console.print()
    print_findings(console, findings)
    return code


def exit_code_for(observation: Observation, findings: Sequence[Finding], fail_on: Severity) -> int:
    """PROBLEM when a finding reaches `fail_on`; UNANSWERED when the rest is fine but some vantages were silent."""
    if any(f.severity >= fail_on for f in findings):
        return exit_codes.PROBLEM
    if observation.silent:
        return exit_codes.UNANSWERED
    return exit_codes.OK
