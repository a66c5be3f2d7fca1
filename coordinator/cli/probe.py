"""`tlsfleet probe`: build the request, fan it out, show the matrix, choose the exit code."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...agent import exit_codes
from ...agent.command import fail, run_coroutine
from ...agent.model import ProbeRequest
from ..diagnosis.model import Finding, Severity
from ..observation import DiagnosisSettings, Observation
from ..outcomes import ProbeOutcome
from ..probing import ProbeArgumentError, build_request

if TYPE_CHECKING:
    from rich.console import Console

    from .progress import VantageProgress


@dataclass(frozen=True)
class ProbeArguments:
    """`tlsfleet probe`'s arguments, checked and gathered (probe_command.py)."""

    targets: tuple[str, ...]  # one or more; `tlsfleet probe A B C` and --targets-file
    sni: str | None = None
    no_sni: bool = False
    alpn: tuple[str, ...] = ()
    tls_min: str | None = None
    tls_max: str | None = None
    address: str | None = None
    max_addresses: int = 8
    client_cert: str | None = None
    coordinator: str | None = None  # [NAME@]HOST:PORT of a coordinator service its dial-in agents are asked through
    starttls: str | None = None  # None: inferred from the port
    via_proxy: bool = False
    agents: str | None = None
    inventory: Path | None = None
    no_local: bool = False
    timeout: float = 10.0
    json_output: bool = False
    sni_variants: tuple[str | None, ...] = ()
    fail_on: str = "warning"
    save: Path | None = None
    clock_tolerance: float = 2.0  # seconds
    notes: bool = False  # a healthy result's notes in full


# Each variant is one more fan-out to every vantage, within the same deadline.
MAX_SNI_VARIANTS = 16


def parse_sni_variants(text: str | None) -> tuple[str | None, ...]:
    """`none,www.example.com` -> (None, "www.example.com"); None stands for "send no SNI"."""
    if not text:
        return ()
    from ...agent.probe.targets import TargetError, ip_sni_problem, normalize_host

    variants: list[str | None] = []
    for item in (part.strip() for part in text.split(",")):
        if item.lower() in ("none", "no-sni", "-"):
            variants.append(None)
            continue
        if problem := ip_sni_problem(item, "--sni-variants item"):
            raise ProbeArgumentError(problem)
        try:
            variants.append(normalize_host(item))
        except TargetError:
            raise ProbeArgumentError(
                f"--sni-variants item {item!r} is not accepted; use host names and 'none' (no SNI), comma-separated"
            ) from None
    unique = tuple(dict.fromkeys(variants))
    if len(unique) > MAX_SNI_VARIANTS:
        raise ProbeArgumentError(
            f"--sni-variants names {len(unique)} variants; at most {MAX_SNI_VARIANTS} are accepted"
        )
    return unique


# Targets probed at once by `tlsfleet probe A B C`: each fans out to every vantage, so this bounds the
# connections an agent sees from one command.
TARGETS_AT_ONCE = 8


async def probe_fleet(args: ProbeArguments, request: ProbeRequest) -> Observation:
    """Fan `request` out to the vantages `args` selects (through a coordinator's relay when asked)."""
    [observation] = await probe_fleet_many(args, [request])
    return observation


async def probe_fleet_many(args: ProbeArguments, requests: Sequence[ProbeRequest]) -> list[Observation]:
    """Each request fanned out to the same vantages, built once, at most TARGETS_AT_ONCE at a time; the
    observations in the order of `requests`."""
    from ..fleet.choose import select_vantages
    from ..probing import observe

    # Channels belong to the event loop that uses them, so the vantages are built inside it.
    relay = None
    if args.coordinator:  # $TLSFLEET_COORDINATOR arrives here too, through the option
        from ..fleet.relay import relay_for

        relay = await relay_for(args.coordinator, args.inventory, args.timeout)  # the deadline caps the listing
    try:
        fleet = select_vantages(
            inventory_path=args.inventory,
            selector_text=args.agents,
            include_local=not args.no_local,
            linked=relay.candidates if relay is not None else (),
            names_must_exist=True,
        )
        bound = asyncio.Semaphore(TARGETS_AT_ONCE)

        async def one(request: ProbeRequest) -> Observation:
            async with bound:
                return await observe(fleet.vantages, request, args.timeout, args.sni_variants)

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)
    finally:
        if relay is not None:
            await relay.close()


def run_probe(args: ProbeArguments) -> int:
    from .cli_logging import configure_cli_logging

    configure_cli_logging()
    [target] = args.targets  # several: probe_many.run_probe_many
    request = request_for(args, target, time.time_ns())
    fail_on, settings = diagnosis_options(request, args.fail_on, args.clock_tolerance)
    from .progress import VantageProgress, showing

    answered = VantageProgress(request)
    try:
        with showing(answered, enabled=not args.json_output):
            observation = run_coroutine(probe_fleet(args, request))
    except KeyboardInterrupt:
        return show_interrupted(request, answered, json_output=args.json_output)
    if args.save is not None:
        from ..recording import save

        try:
            save(args.save, observation)
        except OSError as error:
            raise fail(f"cannot save the recording to {args.save}: {error.strerror or error}") from None
    return show_observation(observation, settings, fail_on=fail_on, json_output=args.json_output, notes=args.notes)


def show_interrupted(request: ProbeRequest, answered: VantageProgress, *, json_output: bool) -> int:
    """Ctrl-C: the matrix of the vantages that answered so far, and how many that is."""
    if not json_output and answered.outcomes:
        from ..matrix import build_matrix
        from .render import make_console, print_matrix

        outcomes = [o for o in answered.outcomes if isinstance(o, ProbeOutcome)]
        print_matrix(make_console(), request, outcomes, build_matrix(outcomes))
    print(answered.interrupted(), file=sys.stderr)
    return exit_codes.INTERRUPTED


def request_for(args: ProbeArguments, target: str, now_ns: int) -> ProbeRequest:
    """The request for one target with the options of `args`; ProbeArgumentError or TargetError."""
    return build_request(
        target,
        now_ns=now_ns,
        timeout=args.timeout,
        sni=args.sni,
        no_sni=args.no_sni,
        alpn=args.alpn,
        tls_min=args.tls_min,
        tls_max=args.tls_max,
        address=args.address,
        max_addresses=args.max_addresses,
        client_cert=args.client_cert,
        starttls=args.starttls,
        via_proxy=args.via_proxy,
    )


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
    observation: Observation, settings: DiagnosisSettings, *, fail_on: Severity, json_output: bool, notes: bool = False
) -> int:
    """Diagnose, print the matrix and the findings (or JSON), and return the exit code."""
    from ..diagnosis.engine import diagnose

    findings = diagnose(observation, settings)
    code = exit_code_for(observation, findings, fail_on)
    if json_output:
        from ..json_output import probe_report_json

        print(json.dumps(probe_report_json(observation, findings, exit_code=code), indent=2))
        return code
    from .render import make_console

    print_observation(make_console(), observation, findings, notes=notes)
    return code


def print_observation(
    console: Console, observation: Observation, findings: Sequence[Finding], *, notes: bool = False
) -> None:
    """The matrix (and one per SNI variant), then the findings."""
    from ..matrix import build_matrix
    from .render import print_findings, print_matrix

    print_matrix(console, observation.request, observation.outcomes, build_matrix(observation.outcomes))
    for variant in observation.variants:
        console.print()
        print_matrix(console, variant.request, variant.outcomes, build_matrix(variant.outcomes))
    console.print()
    print_findings(console, findings, note_details=notes)


def exit_code_for(observation: Observation, findings: Sequence[Finding], fail_on: Severity) -> int:
    """PROBLEM when a finding reaches `fail_on`; UNANSWERED when the rest is fine but some vantages were silent."""
    if any(f.severity >= fail_on for f in findings):
        return exit_codes.PROBLEM
    if observation.silent:
        return exit_codes.UNANSWERED
    return exit_codes.OK
