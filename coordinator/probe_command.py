"""`tlsfleet probe`: build the request, fan it out, show the matrix, choose the exit code."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from tlsfleet.agent.model import ProbeOptions, ProbeRequest, TlsVersion
from tlsfleet.coordinator import exit_codes
from tlsfleet.coordinator.diagnosis.model import Finding, Severity
from tlsfleet.coordinator.diagnosis.observation import DiagnosisSettings, Observation

MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = 300.0
_VERSIONS = {"1.0": TlsVersion.TLS1_0, "1.1": TlsVersion.TLS1_1, "1.2": TlsVersion.TLS1_2, "1.3": TlsVersion.TLS1_3}


class ProbeArgumentError(ValueError):
    """A probe option that is not accepted; the message names it and what is."""


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
    agents: str | None = None
    inventory: Path | None = None
    no_local: bool = False
    timeout: float = 10.0
    json_output: bool = False
    sni_variants: tuple[str | None, ...] = ()
    fail_on: str = "warning"
    save: Path | None = None
    clock_tolerance: float = 2.0  # seconds


def build_request(args: ProbeArguments, *, now_ns: int) -> ProbeRequest:
    """Validate the arguments into a request; the coordinator's clock is the reference time."""
    from tlsfleet.agent.request_limits import RequestError, validate_request
    from tlsfleet.agent.targets import parse_target

    if args.sni is not None and args.no_sni:
        raise ProbeArgumentError("--sni and --no-sni contradict each other; give one of them")
    if not MIN_TIMEOUT_S <= args.timeout <= MAX_TIMEOUT_S:
        raise ProbeArgumentError(
            f"--timeout {args.timeout:g} is out of range; accepted: {MIN_TIMEOUT_S:g}-{MAX_TIMEOUT_S:g} seconds"
        )
    target = parse_target(args.target)
    # Each phase may use most of the deadline, but all three together must fit inside it.
    phase = min(5.0, args.timeout * 0.9 / 2)
    options = ProbeOptions(
        sni=args.sni,
        send_sni=not args.no_sni,
        alpn=args.alpn,
        min_version=_version(args.tls_min, "--tls-min"),
        max_version=_version(args.tls_max, "--tls-max"),
        pin_address=args.address,
        max_addresses=args.max_addresses,
        resolve_timeout=min(3.0, args.timeout * 0.9 / 3),
        connect_timeout=min(3.0, phase),
        handshake_timeout=phase,
        reference_time_ns=now_ns,
    )
    try:
        return validate_request(ProbeRequest(target=target, options=options, request_id=uuid.uuid4().hex[:16]))
    except RequestError as error:
        raise ProbeArgumentError(str(error)) from None


def _version(text: str | None, flag: str) -> TlsVersion | None:
    if text is None:
        return None
    version = _VERSIONS.get(text.removeprefix("TLSv").removeprefix("tls"))
    if version is None:
        raise ProbeArgumentError(f"{flag} {text!r} is not a TLS version; accepted: 1.0, 1.1, 1.2, 1.3")
    return version


def parse_sni_variants(text: str | None) -> tuple[str | None, ...]:
    """`none,www.example.com` -> (None, "www.example.com"); None stands for "send no SNI"."""
    if not text:
        return ()
    from tlsfleet.agent.targets import TargetError, normalize_host

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
    from tlsfleet.coordinator.fleet import select_vantages
    from tlsfleet.coordinator.probing import observe

    # Channels belong to the event loop that uses them, so the vantages are built inside it.
    fleet = select_vantages(inventory_path=args.inventory, selector_text=args.agents, include_local=not args.no_local)
    try:
        return await observe(fleet.vantages, request, args.timeout, args.sni_variants)
    finally:
        await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)


def run_probe(args: ProbeArguments) -> int:
    from tlsfleet.agent.fleet_credentials import CredentialError
    from tlsfleet.agent.logs import configure_cli_logging
    from tlsfleet.agent.targets import TargetError
    from tlsfleet.coordinator.fleet import FleetError
    from tlsfleet.coordinator.inventory import InventoryError
    from tlsfleet.coordinator.selector import SelectorError

    configure_cli_logging()
    try:
        request = build_request(args, now_ns=time.time_ns())
        fail_on, settings = diagnosis_options(request, args.fail_on, args.clock_tolerance)
        observation = asyncio.run(_probe_fleet(args, request))
    except (ProbeArgumentError, TargetError, InventoryError, SelectorError, CredentialError, FleetError) as error:
        typer.echo(f"error: {error}", err=True)
        return exit_codes.USAGE
    if args.save is not None:
        from tlsfleet.coordinator.recording import save

        try:
            save(args.save, observation)
        except OSError as error:
            typer.echo(f"error: cannot save the recording to {args.save}: {error.strerror or error}", err=True)
            return exit_codes.USAGE
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
    from tlsfleet.coordinator.diagnosis.engine import diagnose

    findings = diagnose(observation, settings)
    code = exit_code_for(observation, findings, fail_on)
    if json_output:
        from tlsfleet.coordinator.json_output import probe_report_json

        typer.echo(json.dumps(probe_report_json(observation, findings, exit_code=code), indent=2))
        return code
    from tlsfleet.coordinator.matrix import build_matrix
    from tlsfleet.coordinator.render import make_console, print_findings, print_matrix

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
