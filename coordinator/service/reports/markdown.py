"""A report run as Markdown: for a wiki, a ticket or a chat message.

Certificate names and agent errors come from outside, so every value is escaped: a subject such as
`<script>` or `a|b` shows as text and cannot break a table or inject HTML where the Markdown is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from ...diagnosis.model import Finding
from ...diagnosis.wording import count
from ...matrix import COLUMNS, visible
from ..report_model import Change, ReportRun, TargetRun
from .json_report import (
    DEFAULT_CRITICAL_DAYS,
    DEFAULT_WARNING_DAYS,
    RunSummary,
    changes_by_target,
    check_thresholds,
    duration_text,
    expiry_timeline,
    failed_handshakes,
    summarize_run,
    utc_text,
)

__all__ = ["escape", "render_markdown"]

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that start markup.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#!~])")
_BREAKS = re.compile(r"[\r\n\t\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")


# A report says the same few words (agent names, verdicts, store names) thousands of times.
ESCAPED_KEPT = 4096


@lru_cache(maxsize=ESCAPED_KEPT)
def escape(text: str) -> str:
    """Plain text safe inside a Markdown paragraph or table cell: one line, no markup, and no control character
    a terminal showing the file would act on (each is shown as its escape)."""
    return _SPECIAL.sub(r"\\\1", _BREAKS.sub(" ", visible(text)))


def _code_block(lines: Sequence[str], language: str = "sh") -> list[str]:
    body = "\n".join(_BREAKS.sub(" ", visible(line)) for line in lines)
    # A fence longer than any backtick run inside cannot be closed by the content.
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", body, fence]


def render_markdown(
    run: ReportRun,
    changes: Sequence[Change],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> str:
    """The whole report: title, summary, then per target its matrix, findings, changes and certificates."""
    check_thresholds(expiry_warning_days, expiry_critical_days)
    summary = summarize_run(run, changes)
    per_target, other_changes = changes_by_target(run, changes)
    run_label = f"run {run.run_id}" if run.run_id is not None else "unsaved run"
    out = [
        f"# tlsfleet report {escape(run.report)}, {run_label}",
        "",
        f"Started {utc_text(run.started_at)}, finished {utc_text(run.finished_at)}, "
        f"took {duration_text(run.duration_s)}.",
        "",
    ]
    if run.abandoned:
        out += ["**Abandoned:** the run stopped before every target was probed.", ""]
    if run.note:
        out += [f"Note: {escape(run.note)}", ""]
    out += _summary(summary, run)
    if other_changes:
        out += ["## Fleet changes since the previous run", "", *_changes(other_changes, with_target=True), ""]
    for target in run.targets:
        out += _target(target, per_target[target.target], run, expiry_warning_days, expiry_critical_days)
    return "\n".join(out).rstrip("\n") + "\n"


def _summary(summary: RunSummary, run: ReportRun) -> list[str]:
    findings = ", ".join(f"{n} {severity}" for severity, n in summary.findings)
    silent = ", ".join(f"{escape(name)} ({state})" for name, state, _error in summary.silent)
    lines = [
        "## Summary",
        "",
        f"- Targets: {summary.targets}",
        f"- Vantages: {len(summary.answered)} answered, {len(summary.silent)} silent"
        + (f" ({silent})" if silent else ""),
        f"- Findings: {findings}",
        f"- Changes since the previous run: {summary.changes}",
    ]
    if summary.failed_handshakes:
        lines.append(f"- Failed handshakes: {len(summary.failed_handshakes)}")
    lines.append("")
    if run.targets:
        lines += ["| target | worst | findings | vantages answered |", "| --- | --- | --- | --- |"]
        for t in run.targets:
            worst = _worst(t)
            answered = f"{len(t.observation.answered)} of {len(t.observation.outcomes)}"
            lines.append(f"| {escape(t.target)} | {worst} | {len(t.findings)} | {answered} |")
        lines.append("")
    return lines


def _worst(target: TargetRun) -> str:
    """The target's worst finding; without findings, how many handshakes failed, and only then "none"."""
    if target.findings:
        return str(min(target.findings, key=lambda f: f.rank).severity).upper()
    failed = failed_handshakes(target)
    return count(len(failed), "failed handshake") if failed else "none"


def _target(target: TargetRun, changes: Sequence[Change], run: ReportRun, warning: float, critical: float) -> list[str]:
    observation = target.observation
    lines = [
        f"## {escape(target.target)}",
        "",
        f"Probed as {escape(observation.target)} from {count(len(observation.outcomes), 'vantage')} "
        f"({len(observation.answered)} answered) in {target.duration_ms / 1000:.1f} s.",
        "",
        "### Comparison",
        "",
        *_matrix(target),
        "",
        "### Findings",
        "",
    ]
    if target.findings:
        for finding in sorted(target.findings, key=lambda f: f.rank):
            lines += _finding(finding)
    elif failed_handshakes(target):
        failed = failed_handshakes(target)
        lines += [f"No findings, but {count(len(failed), 'handshake')} failed: {escape(', '.join(failed))}.", ""]
    else:
        lines += ["No findings.", ""]
    lines += ["### Changes since the previous run", ""]
    lines += [*_changes(changes, with_target=False), ""] if changes else ["None.", ""]
    entries = expiry_timeline(target, run.started_at, warning_days=warning, critical_days=critical)
    if entries:
        lines += [
            "### Certificate expiry",
            "",
            "| role | certificate | notAfter | days left | status | served to |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for e in entries:
            status = f"**{e.status}**" if e.status != "ok" else e.status
            lines.append(
                f"| {e.role} | {escape(e.name)} ({e.sha256[:12]}) | {utc_text(e.not_after)} | "
                f"{e.days_left:.1f} | {status} | {escape(', '.join(e.agents))} |"
            )
        lines.append("")
    return lines


def _matrix(target: TargetRun) -> list[str]:
    matrix = target.matrix
    if not matrix.rows:
        return ["No vantage probed this target."]
    shown = [(key, title) for key, title in COLUMNS if any(row.cell(key) for row in matrix.rows)]
    lines = ["| " + " | ".join(escape(title) for _key, title in shown) + " |", "|" + " --- |" * len(shown)]
    for index, row in enumerate(matrix.rows):
        cells = []
        for key, _title in shown:
            value = escape(row.cell(key))
            # An empty cell that differs only says "nothing here", which the row's other cells explain.
            cells.append(f"**{value}**" if (index, key) in matrix.differing and value else value)
        lines.append("| " + " | ".join(cells) + " |")
    if matrix.differing:
        lines += ["", "Cells in **bold** differ from most rows."]
    return lines


def _finding(finding: Finding) -> list[str]:
    lines = [
        f"#### {str(finding.severity).upper()}: `{finding.cause.value}`",
        "",
        escape(finding.summary),
        "",
    ]
    facts = []
    if finding.agents:
        facts.append(f"- Vantages: {escape(', '.join(finding.agents))}")
    if finding.addresses:
        facts.append(f"- Addresses: {escape(', '.join(finding.addresses))}")
    for evidence in finding.evidence:
        values = "; ".join(f"{where}: {value}" for where, value in evidence.values)
        facts.append(f"- {escape(evidence.field)}: {escape(values)}")
    if finding.fix:
        facts.append(f"- Fix: {escape(finding.fix)}")
    if facts:
        lines += [*facts, ""]
    if finding.reproduce:
        lines += ["Reproduce on an affected host:", "", *_code_block(finding.reproduce), ""]
    return lines


def _changes(changes: Sequence[Change], *, with_target: bool) -> list[str]:
    head = ["kind", "change"] + (["target"] if with_target else []) + ["agent", "before", "after", "since"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in changes:
        kind = c.kind.value + (f" ({c.severity})" if c.severity else "")
        cells = [escape(kind), escape(c.summary)]
        if with_target:
            cells.append(escape(c.target) or "-")
        cells += [escape(c.agent) or "-", escape(c.before), escape(c.after), utc_text(c.since)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
