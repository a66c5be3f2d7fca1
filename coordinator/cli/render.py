"""Tables for people: the comparison matrix and the agent list, rendered with rich."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ...agent.model import ProbeRequest, TrustStore
from ..diagnosis.model import Finding, Severity
from ..matrix import COLUMNS, Matrix
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageState

DIFF_STYLE = "bold red"
# Without colour a reader still needs to see which cells differ.
DIFF_MARK = " *"
WIDTH_WHEN_PIPED = 200


def print_matrix(console: Console, request: ProbeRequest, outcomes: Sequence[ProbeOutcome], matrix: Matrix) -> None:
    plain = console.no_color or not console.is_terminal
    table = Table(title=_caption(request, outcomes), title_justify="left", show_lines=False, expand=False)
    # A column nobody has a value for (no labels, no chain anywhere) only takes room.
    shown = [(key, title) for key, title in COLUMNS if any(row.cell(key) for row in matrix.rows)]
    for _key, title in shown:
        table.add_column(title, overflow="fold")
    for index, row in enumerate(matrix.rows):
        cells = []
        for key, _title in shown:
            value = row.cell(key)
            if (index, key) in matrix.differing:
                cells.append(Text(value + (DIFF_MARK if plain else ""), style=DIFF_STYLE))
            else:
                cells.append(Text(value, style="green" if key == "native" and row.ok else ""))
        table.add_row(*cells)
    console.print(table)
    if matrix.differing and plain:
        console.print("* differs from most rows")
    answered = sum(1 for o in outcomes if o.state is VantageState.OK)
    missing = [o for o in outcomes if o.state is not VantageState.OK]
    summary = f"{answered} of {len(outcomes)} vantage{'s' if len(outcomes) != 1 else ''} answered"
    if missing:
        summary += "; not seen from: " + ", ".join(f"{o.vantage.name} ({o.state})" for o in missing)
    console.print(summary)


def _caption(request: ProbeRequest, outcomes: Sequence[ProbeOutcome]) -> str:
    o = request.options
    sni = "no SNI" if not o.send_sni else f"SNI {o.sni or request.target.host}"
    vantages = "1 vantage" if len(outcomes) == 1 else f"{len(outcomes)} vantages"
    return f"{request.target}  ({sni}, {vantages})"


def make_console() -> Console:
    """A console for tables: piped output gets a wide page instead of rich's 80 columns."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=WIDTH_WHEN_PIPED)
    return console


def print_agents(console: Console, outcomes: Sequence[DescribeOutcome]) -> None:
    table = Table(title="agents", title_justify="left")
    titles = ("agent", "state", "address", "version", "labels", "clock offset", "host", "trust stores", "runtimes")
    for title in titles:
        table.add_column(title, overflow="fold")
    for o in outcomes:
        labels = ",".join(f"{k}={v}" for k, v in o.vantage.labels)
        state = Text(str(o.state), style="green" if o.state is VantageState.OK else "bold red")
        if o.description is None:
            table.add_row(o.vantage.name, state, o.vantage.address, "", labels, "", "", o.error, "")
            continue
        d = o.description
        facts = d.facts
        host = f"{facts.hostname} · {facts.os} · {facts.openssl_version}"
        stores = _stores_by_content(d.trust_stores)
        clock = f"{o.clock.offset_ms:+.0f} ms ±{o.clock.error_ms:.0f}" if o.clock else "?"
        row = (o.vantage.name, state, o.vantage.address, d.identity.version, labels, clock, host, stores)
        table.add_row(*row, _runtimes(facts.runtimes))
    console.print(table)


def _runtimes(runtimes: Sequence[tuple[str, str]]) -> str:
    """One line per runtime found on the host: what, where and why ("none found" when there is none)."""
    return "\n".join(f"{kind}: {where}" for kind, where in runtimes) or "none found"


def _stores_by_content(stores: Sequence[TrustStore]) -> str:
    """Stores with the same roots on one line: most hosts point several variables at one bundle."""
    groups: dict[tuple[int, str, str], list[str]] = {}
    for s in stores:
        groups.setdefault((s.root_count, s.fingerprint, s.error), []).append(s.name)
    parts = []
    for (count, fingerprint, error), names in groups.items():
        facts = f"{count} roots, {fingerprint[:8]}" if fingerprint else f"{count} roots"
        if error:
            facts += f", error: {error}"
        parts.append(f"{', '.join(names)} ({facts})")
    return "; ".join(parts)


_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.WARNING: "bold black on yellow",
    Severity.INFO: "bold",
}
MAX_EVIDENCE_VALUES = 8


def print_findings(console: Console, findings: Sequence[Finding]) -> None:
    """Most severe first; each with its evidence, the fix and a command to reproduce it."""
    if not findings:
        console.print(Text("No findings: every vantage that answered agrees and verifies.", style="green"))
        return
    console.print(Text(f"Findings ({len(findings)}), most severe first:", style="bold"))
    for number, finding in enumerate(findings, start=1):
        head = Text(f"{number}. ")
        head.append(f" {str(finding.severity).upper()} ", style=_SEVERITY_STYLE[finding.severity])
        head.append(f" {finding.cause}: ", style="bold")
        head.append(finding.summary)
        console.print(head)
        for evidence in finding.evidence:
            shown = [f"{where}={value}" for where, value in evidence.values[:MAX_EVIDENCE_VALUES]]
            more = len(evidence.values) - MAX_EVIDENCE_VALUES
            if more > 0:
                shown.append(f"... {more} more")
            console.print(Text(f"     {evidence.field}: " + "; ".join(shown), style="dim"))
        if finding.fix:
            console.print(Text(f"     fix: {finding.fix}"))
        for command in finding.reproduce:
            console.print(Text(f"     $ {command}", style="cyan"))
