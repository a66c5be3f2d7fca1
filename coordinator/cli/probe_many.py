"""`tlsfleet probe A B C` and `--targets-file FILE`: every target from every vantage, a summary of targets
and their worst finding first, then each target's matrix and findings; the exit code is the worst."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ...agent import exit_codes
from ...agent.bounded_read import FileTooLarge, read_capped_text
from ...agent.command import fail, run_coroutine
from ...agent.errors import UsageError
from ..diagnosis.model import Finding, Severity
from ..observation import Observation
from ..probing import ProbeArgumentError
from .probe import ProbeArguments, diagnosis_options, exit_code_for, print_observation, probe_fleet_many, request_for

if TYPE_CHECKING:
    from rich.table import Table

MAX_TARGETS = 1000
MAX_TARGETS_FILE_BYTES = 1024 * 1024
# Worst first: a finding at --fail-on outranks silent vantages, which outrank a clean run.
_EXIT_ORDER = (exit_codes.PROBLEM, exit_codes.UNANSWERED, exit_codes.OK)


class TargetsFileError(ProbeArgumentError):
    """A --targets-file that cannot be read or holds something that is not a target."""


def read_targets_file(path: Path) -> tuple[str, ...]:
    """One target per line; blank lines and `#` comments (whole lines or after a target) are skipped."""
    try:
        text = read_capped_text(path.expanduser(), MAX_TARGETS_FILE_BYTES)
    except FileNotFoundError:
        raise TargetsFileError(f"--targets-file {path} does not exist") from None
    except FileTooLarge:
        raise TargetsFileError(f"--targets-file {path} is larger than {MAX_TARGETS_FILE_BYTES // 1024} KiB") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TargetsFileError(f"--targets-file {path} cannot be read: {error}") from None
    targets = []
    for number, line in enumerate(text.splitlines(), start=1):
        target = line.split("#", 1)[0].strip()
        if not target:
            continue
        if any(c.isspace() for c in target):
            raise TargetsFileError(f"--targets-file {path} line {number}: {target!r} is not one target; one per line")
        targets.append(target)
    return tuple(targets)


def worst_exit(codes: Sequence[int]) -> int:
    return next((code for code in _EXIT_ORDER if code in codes), exit_codes.OK)


def run_probe_many(args: ProbeArguments) -> int:
    from .cli_logging import configure_cli_logging

    configure_cli_logging()
    targets = tuple(dict.fromkeys(args.targets))
    if not targets:
        raise fail("no target given: name one or more, or --targets-file FILE")
    if len(targets) > MAX_TARGETS:
        raise fail(f"{len(targets)} targets is more than {MAX_TARGETS} at once; split them")
    for option, given in (("--save", args.save), ("--address", args.address), ("--sni", args.sni)):
        if given is not None:
            raise fail(f"{option} applies to one target; give one target, or leave {option} out")
    now_ns = time.time_ns()
    requests = []
    for target in targets:
        try:
            requests.append(request_for(args, target, now_ns))
        except UsageError as error:  # a bad target among many: say which
            raise fail(str(error) if target in str(error) else f"target {target!r}: {error}") from None
    settings = [diagnosis_options(r, args.fail_on, args.clock_tolerance) for r in requests]
    from .progress import TargetProgress, showing

    done = TargetProgress(len(requests))
    try:
        with showing(done, enabled=not args.json_output):
            observations = run_coroutine(probe_fleet_many(args, requests))
    except KeyboardInterrupt:
        typer.echo(done.interrupted(), err=True)
        return exit_codes.INTERRUPTED
    from ..diagnosis.engine import diagnose

    results = []
    for observation, (fail_on, setting) in zip(observations, settings, strict=True):
        findings = diagnose(observation, setting)
        results.append((observation, findings, exit_code_for(observation, findings, fail_on)))
    code = worst_exit([c for _, _, c in results])
    if args.json_output:
        from ...agent.documents import document
        from ..json_output import probe_report_json

        reports = [probe_report_json(o, f, exit_code=c) for o, f, c in results]
        typer.echo(json.dumps(document("probes", {"exit_code": code, "targets": reports}), indent=2))
        return code
    from .render import make_console

    console = make_console()
    console.print(summary_table(results))
    for observation, findings, _ in results:
        console.print()
        console.rule(str(observation.request.target), align="left")
        print_observation(console, observation, findings, notes=args.notes)
    return code


_WORST_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def summary_table(results: Sequence[tuple[Observation, Sequence[Finding], int]]) -> Table:
    """Targets x worst finding, worst first, so the one to look at is on top."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(results)} targets", title_justify="left")
    for title in ("target", "worst", "top finding", "findings", "answered"):
        table.add_column(title, overflow="fold")

    def rank(item: tuple[Observation, Sequence[Finding], int]) -> tuple[int, int]:
        _, findings, code = item
        return (-max((int(f.severity) for f in findings), default=-1), _EXIT_ORDER.index(code))

    for observation, findings, _ in sorted(results, key=rank):
        top = findings[0] if findings else None
        worst = Text(str(top.severity).upper(), style=_WORST_STYLE[top.severity]) if top else Text("none", "green")
        answered = f"{len(observation.answered)}/{len(observation.outcomes)}"
        table.add_row(str(observation.request.target), worst, top.cause if top else "", str(len(findings)), answered)
    return table
