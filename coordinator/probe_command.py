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

from tlsfleet.agent.model import Failure, ProbeOptions, ProbeRequest, TlsVersion, Verdict
from tlsfleet.coordinator import exit_codes
from tlsfleet.coordinator.vantage import ProbeOutcome, VantageState

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


def exit_code_for(outcomes: Sequence[ProbeOutcome]) -> int:
    """PROBLEM when any vantage saw the target fail; UNANSWERED when the rest is fine but some were silent."""
    problem = False
    for outcome in outcomes:
        if outcome.result is None:
            continue
        result = outcome.result
        if result.resolution.failure is not Failure.NONE or not result.addresses:
            problem = True
        for a in result.addresses:
            if a.connect_failure is not Failure.NONE or a.native.verdict is not Verdict.OK:
                problem = True
            if a.handshake.failure not in (Failure.NONE, Failure.CERT_VERIFY):
                problem = True
    if problem:
        return exit_codes.PROBLEM
    if any(o.state is not VantageState.OK for o in outcomes):
        return exit_codes.UNANSWERED
    return exit_codes.OK


async def _probe_fleet(args: ProbeArguments, request: ProbeRequest) -> tuple[ProbeOutcome, ...]:
    from tlsfleet.coordinator.fanout import probe_all
    from tlsfleet.coordinator.fleet import select_vantages

    # Channels belong to the event loop that uses them, so the vantages are built inside it.
    fleet = select_vantages(inventory_path=args.inventory, selector_text=args.agents, include_local=not args.no_local)
    try:
        return await probe_all(fleet.vantages, request, args.timeout)
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
        outcomes = asyncio.run(_probe_fleet(args, request))
    except (ProbeArgumentError, TargetError, InventoryError, SelectorError, CredentialError, FleetError) as error:
        typer.echo(f"error: {error}", err=True)
        return exit_codes.USAGE
    code = exit_code_for(outcomes)
    if args.json_output:
        from tlsfleet.coordinator.json_output import probe_report_json

        typer.echo(json.dumps(probe_report_json(request, outcomes, exit_code=code), indent=2))
    else:
        from tlsfleet.coordinator.matrix import build_matrix
        from tlsfleet.coordinator.render import make_console, print_matrix

        print_matrix(make_console(), request, outcomes, build_matrix(outcomes))
    return code
