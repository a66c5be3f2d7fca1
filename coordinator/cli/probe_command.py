"""`tlsfleet probe` as the command line gave it (app.py with typer, or launch.py with probe_argv.py without):
its options checked and gathered, one target or many, the exit code."""

from __future__ import annotations

from pathlib import Path

from ...agent.command import fail
from .probe import ProbeArguments, parse_sni_variants, run_probe


def probe_command(
    *,
    target: list[str] | None,
    targets_file: Path | None,
    sni: str | None,
    no_sni: bool,
    alpn: list[str] | None,
    tls_min: str | None,
    tls_max: str | None,
    address: str | None,
    max_addresses: int,
    client_cert: str | None,
    starttls: str | None,
    via_proxy: bool,
    coordinator: str | None,
    agents: str | None,
    inventory: Path | None,
    no_local: bool,
    timeout: float,
    json_output: bool,
    sni_variants: str | None,
    fail_on: str,
    clock_tolerance: float,
    notes: bool,
    save: Path | None,
) -> int:
    """`tlsfleet probe` with its options as the command line gave them (app.py, or probe_argv.py without
    typer); the exit code."""
    variants = parse_sni_variants(sni_variants)
    targets = tuple(target or ())
    if targets_file or len(targets) > 1:  # one target, the usual case, needs none of the many-target path
        from .probe_many import read_targets_file

        targets += read_targets_file(targets_file) if targets_file else ()
    if not targets:
        raise fail("no target given: name one or more, or --targets-file FILE")
    arguments = ProbeArguments(
        targets=targets,
        coordinator=coordinator,
        sni=sni,
        no_sni=no_sni,
        alpn=tuple(alpn or ()),
        tls_min=tls_min,
        tls_max=tls_max,
        address=address,
        max_addresses=max_addresses,
        client_cert=client_cert,
        starttls=starttls,
        via_proxy=via_proxy,
        agents=agents,
        inventory=inventory,
        no_local=no_local,
        timeout=timeout,
        json_output=json_output,
        sni_variants=variants,
        fail_on=fail_on,
        save=save,
        clock_tolerance=clock_tolerance,
        notes=notes,
    )
    if len(targets) == 1:
        return run_probe(arguments)
    from .probe_many import run_probe_many

    return run_probe_many(arguments)
