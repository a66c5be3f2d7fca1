"""Tables for people: the comparison matrix and the agent list, rendered with rich."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ...agent.model import ProbeRequest, TrustStore
from ...agent.probe.targets import is_ip_literal
from ..diagnosis.model import Finding, Severity
from ..matrix import COLUMNS, Health, Matrix, MatrixRow, visible
from ..matrix_agreement import IDENTITY, Agreement, Shared, Standing, agreement, brief_cell, health
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageState

# Below this width the rows become one block per vantage: a table of many columns cannot be read at 80.
BLOCKS_BELOW = 100
WIDTH_WHEN_PIPED = 200
# Without colour a reader still needs to see which cells differ.
DIFF_MARK = " *"
_HEALTH_STYLE = {Health.GOOD: "green", Health.WARN: "yellow", Health.BAD: "red"}
# A value that is not a verdict: the odd one out stands out, a split is marked without picking a side.
_STANDING_STYLE = {Standing.ODD: "bold yellow", Standing.SPLIT: "yellow"}


def print_matrix(console: Console, request: ProbeRequest, outcomes: Sequence[ProbeOutcome], matrix: Matrix) -> None:
    """The caption, what every row shares (said once), then only what differs: as a table when it fits the
    terminal, else as one block per row."""
    plain = console.no_color or not console.is_terminal
    view = agreement(matrix)
    console.print(Text(visible(_caption(request, outcomes)), style="bold"), overflow="fold")
    for shared in view.shared:
        _print_shared(console, shared)
    if matrix.rows:
        table = _table(matrix, view, plain)
        if _fits(console, table):
            console.print(table)
        else:
            _print_blocks(console, matrix, view, plain)
    if plain and view.any_odd:
        console.print(f"{DIFF_MARK.strip()} differs from most rows")
    if plain and view.any_split:
        console.print(f"{DIFF_MARK.strip()} differs between the rows, with no majority")
    answered = sum(1 for o in outcomes if o.state is VantageState.OK)
    missing = [o for o in outcomes if o.state is not VantageState.OK]
    summary = f"{answered} of {len(outcomes)} vantage{'s' if len(outcomes) != 1 else ''} answered"
    if missing:
        summary += "; not seen from: " + ", ".join(f"{o.vantage.name} ({o.state})" for o in missing)
    console.print(Text(visible(summary)))


def _print_shared(console: Console, shared: Shared) -> None:
    """Told as "all 3 vantages: TLSv1.3 · chain 2 · ...", wrapped between facts rather than inside one."""
    lines = [Text()]
    lines[0].append(f"{shared.label}:", style="bold")
    for number, fact in enumerate(shared.facts):
        line = lines[-1]
        joined = f" {fact}" if number == 0 else f" · {fact}"
        if number and line.cell_len + cell_len(joined) > console.width:
            lines.append(Text(f"  · {fact}"))
        else:
            line.append(joined)
    for line in lines:
        console.print(line, overflow="fold")


def _styled(value: str, row: MatrixRow, key: str, standing: Standing, plain: bool) -> Text:
    mark = DIFF_MARK if plain and standing is not Standing.AGREES else ""
    verdict = health(row, key)
    if verdict is not Health.NONE:
        # A verdict is coloured by what it says, never by how many rows say it: a healthy minority is green.
        style = _HEALTH_STYLE[verdict] + (" bold" if standing is Standing.ODD else "")
    else:
        style = _STANDING_STYLE.get(standing, "")
    return Text(value + mark, style=style)


def _table(matrix: Matrix, view: Agreement, plain: bool) -> Table:
    table = Table(show_lines=False, expand=False, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for key in view.columns:
        table.add_column(_TITLES[key], overflow="fold")
    for index, row in enumerate(matrix.rows):
        cells = [_styled(brief_cell(row, key), row, key, view.standing(index, key), plain) for key in view.columns]
        table.add_row(*cells)
    return table


def _fits(console: Console, table: Table) -> bool:
    """The table unwrapped is no wider than the terminal (measured without the terminal's bound, which rich
    would clamp the measurement to), and the terminal is wide enough for a table at all."""
    unbounded = console.options.update(width=10 * WIDTH_WHEN_PIPED)
    return console.width >= BLOCKS_BELOW and console.measure(table, options=unbounded).maximum <= console.width


def _print_blocks(console: Console, matrix: Matrix, view: Agreement, plain: bool) -> None:
    """One block per row: its name (and labels, address), then a "key: value" line per column left."""
    heading = [key for key in view.columns if key in IDENTITY]
    for index, row in enumerate(matrix.rows):
        head = Text(row.cell("agent"), style="bold")
        for key in heading[1:]:
            if row.cell(key):
                head.append(f"  {row.cell(key)}", style="dim")
        console.print(head, overflow="fold")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for key in view.columns:
            value = brief_cell(row, key)
            if key in IDENTITY or not value:
                continue
            grid.add_row(f"  {_TITLES[key]}:", _styled(value, row, key, view.standing(index, key), plain))
        if grid.row_count:
            console.print(grid)


_TITLES = dict(COLUMNS)


def _caption(request: ProbeRequest, outcomes: Sequence[ProbeOutcome]) -> str:
    o = request.options
    name = o.sni or request.target.host
    # TLS clients send no address in SNI (RFC 6066 3); the agents do as they do.
    sni = "no SNI" if not o.send_sni else "no SNI: an IP address" if is_ip_literal(name) else f"SNI {name}"
    vantages = "1 vantage" if len(outcomes) == 1 else f"{len(outcomes)} vantages"
    return f"{request.target}  ({sni}, {vantages})"


def make_console() -> Console:
    """A console for tables: piped output gets a wide page instead of rich's 80 columns."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=WIDTH_WHEN_PIPED)
    return console


_AGENT_TITLES = (
    "agent",
    "state",
    "address",
    "version",
    "labels",
    "clock offset",
    "host",
    "trust stores",
    "runtimes",
    "probe policy",
)
_AGENT_HEAD = 6  # agent .. clock offset: one line per agent; the rest are facts of some length


def print_agents(console: Console, outcomes: Sequence[DescribeOutcome]) -> None:
    """One row per agent when the table fits the terminal, else one block per agent: its head line, then a
    "key: value" line for each of its host's facts."""
    rows = [tuple(_text(cell) for cell in _agent_cells(o)) for o in outcomes]
    table = Table(title="agents", title_justify="left")
    for title in _AGENT_TITLES:
        table.add_column(title, overflow="fold")
    for cells in rows:
        table.add_row(*cells)
    if _fits(console, table):
        console.print(table)
        return
    console.print(Text("agents", style="bold"))
    for cells in rows:
        head = Text(str(cells[0]), style="bold")
        for cell in cells[1:_AGENT_HEAD]:
            if str(cell):
                head.append("  ")
                head.append(cell if isinstance(cell, Text) else Text(cell))
        console.print(head, overflow="fold")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for title, cell in zip(_AGENT_TITLES[_AGENT_HEAD:], cells[_AGENT_HEAD:], strict=True):
            if str(cell):
                grid.add_row(f"  {title}:", cell)
        if grid.row_count:
            console.print(grid)


def _text(cell: str | Text) -> Text:
    """An agent's strings as text to show: escaped, and never read as rich markup ("[bold]" stays as sent)."""
    if isinstance(cell, Text):
        return cell
    return Text(visible(cell))


def _agent_cells(o: DescribeOutcome) -> tuple[str | Text, ...]:
    labels = ",".join(f"{k}={v}" for k, v in o.vantage.labels)
    state = Text(str(o.state), style="green" if o.state is VantageState.OK else "bold red")
    if o.description is None:
        return (o.vantage.name, state, o.vantage.address, "", labels, "", "", o.error, "", "")
    d = o.description
    facts = d.facts
    host = f"{facts.hostname} · {facts.os} · {facts.openssl_version}"
    clock = f"{o.clock.offset_ms:+.0f} ms ±{o.clock.error_ms:.0f}" if o.clock else "?"
    return (
        o.vantage.name,
        state,
        o.vantage.address,
        d.identity.version,
        labels,
        clock,
        host,
        _stores_by_content(d.trust_stores),
        _runtimes(facts.runtimes),
        "\n".join(d.probe_policy) or "-",
    )


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
        roots = f"{count} root{'' if count == 1 else 's'}"
        facts = f"{roots}, {fingerprint[:8]}" if fingerprint else roots
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
# A finding's summary or evidence line quotes what servers and agents sent (a chain of thousands of
# certificates names each): a terminal gets this much of each, --json and the reports all of it.
MAX_LINE_CHARS = 4000


def print_findings(console: Console, findings: Sequence[Finding], *, note_details: bool = False) -> None:
    """Most severe first; each with its evidence, the fix and a command to reproduce it. Notes alone (a healthy
    result) are one line each unless `note_details`."""
    if not findings:
        console.print(Text("No findings: every vantage that answered agrees and verifies.", style="green"))
        return
    brief = False
    if all(f.severity is Severity.INFO for f in findings):
        # Healthy is quiet: notes for the record are not findings that anyone fails by.
        notes = f"{len(findings)} note{'s' if len(findings) != 1 else ''}"
        brief = not note_details
        hint = " (--notes shows their evidence and fixes)" if brief else ""
        console.print(Text(f"No findings at warning or above; {notes} for the record{hint}:", style="green"))
    else:
        console.print(Text(f"Findings ({len(findings)}), most severe first:", style="bold"))
    for number, finding in enumerate(findings, start=1):
        head = Text()
        head.append(f" {str(finding.severity).upper()} ", style=_SEVERITY_STYLE[finding.severity])
        head.append(f" {finding.cause}: ", style="bold")
        head.append(_clipped(finding.summary))
        console.print(_hanging(f"{number}. ", head))
        if brief:
            continue
        for evidence in finding.evidence:
            shown = [f"{where}={value}" for where, value in evidence.values[:MAX_EVIDENCE_VALUES]]
            more = len(evidence.values) - MAX_EVIDENCE_VALUES
            if more > 0:
                shown.append(f"... {more} more")
            line = _clipped(f"{evidence.field}: " + "; ".join(shown))
            console.print(_hanging(" " * 5, Text(line, style="dim")))
        if finding.fix:
            console.print(_hanging(" " * 5, Text(_clipped(f"fix: {finding.fix}"))))
        for command in finding.reproduce:
            # Whole, on a line of its own: a line break rich put inside it would break it when copied.
            console.print(Text(visible(f"     $ {command}"), style="cyan"), soft_wrap=True)


def _clipped(text: str) -> str:
    shown = visible(text)
    if len(shown) <= MAX_LINE_CHARS:
        return shown
    return f"{shown[:MAX_LINE_CHARS]}... ({len(shown) - MAX_LINE_CHARS} more characters in --json)"


def _hanging(prefix: str, text: Text) -> Table:
    """`prefix` then `text`, the lines `text` wraps into indented under its first: a finding reads as a block."""
    grid = Table.grid()
    grid.add_column(width=cell_len(prefix), no_wrap=True)
    grid.add_column()
    grid.add_row(prefix, text)
    return grid
