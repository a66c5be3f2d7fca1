"""A report run as one self-contained HTML page: inline CSS, no scripts, fonts, images or links out.

Certificate subjects, agent errors and labels come from outside; every value passes through `html.escape`
before it reaches the page, attributes included.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .... import __version__
from ...diagnosis.model import Finding, Severity
from ...diagnosis.wording import count
from ...matrix import COLUMNS, visible
from ...outcomes import VantageState
from ..report_model import AgentSnapshot, Change, ReportRun, TargetRun
from .json_report import (
    DEFAULT_CRITICAL_DAYS,
    DEFAULT_WARNING_DAYS,
    ExpiryEntry,
    RunSummary,
    changes_by_target,
    check_thresholds,
    duration_text,
    expiry_timeline,
    failed_handshakes,
    summarize_run,
    utc_text,
)
from .markdown import ESCAPED_KEPT

__all__ = ["DIFF_MARK", "render_html"]

# Shown in every differing matrix cell, so the difference survives print, grayscale and colour blindness.
DIFF_MARK = "≠"
# More agents than this and the vantage list starts folded: the findings matter more than the roll call.
_OPEN_AGENT_LIST = 12

_CSS = """
:root {
  --ink: #1d2430; --muted: #5b6576; --line: #dde2ea; --paper: #ffffff; --wash: #f5f7fa;
  --crit: #b71c1c; --crit-bg: #fdecea; --warn: #8a5300; --warn-bg: #fff3dc; --info: #0d47a1;
  --info-bg: #e8f0fd; --ok: #1b5e20; --ok-bg: #e7f5e9; --accent: #243b6b;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--wash); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 0.88em; }
.wrap { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header.page { background: var(--accent); color: #fff; padding: 22px 0 18px; }
header.page .kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; opacity: .8; }
header.page .wrap { position: relative; }
header.page .status { position: absolute; right: 24px; top: 4px; }
header.page .status .badge { font-size: 13px; padding: 3px 12px; }
header.page h1 { margin: 2px 0 4px; font-size: 28px; font-weight: 650; }
header.page h1 .run { font-weight: 400; opacity: .85; font-size: 20px; }
header.page .meta { margin: 0; opacity: .9; font-size: 14px; }
.banner { margin: 12px 0 0; padding: 8px 12px; border-radius: 6px; background: var(--warn-bg); color: var(--warn);
  font-weight: 600; }
main { padding: 20px 0 40px; }
section.block { background: var(--paper); border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px;
  margin: 0 0 20px; }
h2 { margin: 0 0 6px; font-size: 21px; overflow-wrap: anywhere; }
h3 { margin: 22px 0 8px; font-size: 16px; color: var(--accent); border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
.sub { color: var(--muted); font-size: 13.5px; margin: 0 0 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 4px 0 16px; }
.card { flex: 1 1 150px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
  background: var(--wash); min-width: 140px; }
.card .num { font-size: 26px; font-weight: 700; line-height: 1.2; }
.card .lbl { color: var(--muted); font-size: 13px; }
.card .more { font-size: 12.5px; color: var(--muted); margin-top: 2px; overflow-wrap: anywhere;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
.card.critical { background: var(--crit-bg); border-color: #f3b8b3; } .card.critical .num { color: var(--crit); }
.card.warning { background: var(--warn-bg); border-color: #f1d29a; } .card.warning .num { color: var(--warn); }
.card.info { background: var(--info-bg); border-color: #b9cdf3; } .card.info .num { color: var(--info); }
.card.ok .num { color: var(--ok); }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--line);
  overflow-wrap: anywhere; word-break: break-word; }
th { background: var(--wash); font-weight: 600; color: var(--muted); font-size: 12.5px; white-space: nowrap; }
tbody tr:hover td { background: #fafbfd; }
.scroll { overflow-x: auto; }
a { color: var(--accent); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 11.5px; font-weight: 700;
  letter-spacing: .04em; text-transform: uppercase; border: 1px solid transparent; white-space: nowrap; }
.badge.critical, .badge.expired { background: var(--crit); color: #fff; }
.badge.warning { background: #f0a020; color: #231500; }
.badge.info { background: var(--info-bg); color: var(--info); border-color: #b9cdf3; }
.badge.ok, .badge.none { background: var(--ok-bg); color: var(--ok); border-color: #bfe0c3; }
.badge.silent { background: #eceff3; color: var(--muted); border-color: var(--line); }
.badge.kind { background: #eef1f7; color: var(--accent); border-color: #d3dae8; text-transform: none;
  letter-spacing: 0; font-weight: 600; }
.finding { border: 1px solid var(--line); border-left: 5px solid var(--muted); border-radius: 8px; padding: 10px 14px;
  margin: 0 0 12px; background: var(--paper); }
.finding.critical { border-left-color: var(--crit); } .finding.warning { border-left-color: #f0a020; }
.finding.info { border-left-color: var(--info); }
.finding .head { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.finding .cause { color: var(--muted); }
.finding .summary { margin: 6px 0 8px; font-size: 15px; overflow-wrap: anywhere; }
.finding dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0 0 6px;
  font-size: 13.5px; }
.finding dt { color: var(--muted); } .finding dd { margin: 0; overflow-wrap: anywhere; }
details.agents { margin-top: 14px; } details.agents > summary { cursor: pointer; font-weight: 600;
  color: var(--accent); margin-bottom: 6px; }
.finding details { margin: 4px 0; font-size: 13.5px; } .finding summary { cursor: pointer; color: var(--muted); }
pre { background: #0f1724; color: #e6edf3; padding: 10px 12px; border-radius: 6px; margin: 4px 0 2px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.lbl-small { color: var(--muted); font-size: 12.5px; margin-top: 6px; }
table.matrix td { font-size: 12.5px; }
table.matrix td.c-agent, table.matrix td.c-address, table.matrix td.c-tls, table.matrix td.c-fingerprint,
table.matrix td.c-chain, table.matrix td.c-clock { white-space: nowrap; }
table.matrix td.c-native, table.matrix td.c-stores { min-width: 10em; }
table.matrix td.diff { background: var(--crit-bg); color: var(--crit); font-weight: 700; }
table.matrix td.diff .mark { display: inline-block; margin-right: 4px; padding: 0 4px; border-radius: 4px;
  background: var(--crit); color: #fff; font-size: 11px; }
table.matrix td.good { color: var(--ok); font-weight: 600; }
table.matrix tr.down td { color: var(--muted); }
.legend { color: var(--muted); font-size: 12.5px; margin: 6px 0 0; }
.legend .mark { display: inline-block; padding: 0 4px; border-radius: 4px; background: var(--crit); color: #fff;
  font-size: 11px; }
.none { color: var(--muted); font-style: italic; margin: 4px 0; }
.arrow { color: var(--muted); padding: 0 4px; }
.before { color: var(--muted); } .after { font-weight: 600; }
table.expiry td.role, table.expiry td.when { white-space: nowrap; }
table.expiry td.days { white-space: nowrap; text-align: right; font-variant-numeric: tabular-nums; }
table.expiry td.barcell { width: 34%; min-width: 160px; }
.track { position: relative; height: 14px; background: #edf0f5; border-radius: 7px; margin-top: 4px; }
.bar { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 7px; min-width: 4px; }
.bar.ok { background: #43a047; } .bar.warning { background: #f0a020; }
.bar.critical, .bar.expired { background: var(--crit); }
.tick { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #7a8596; opacity: .7; }
.cert-name { font-weight: 600; }
.cert-meta { color: var(--muted); font-size: 12px; }
footer { color: var(--muted); font-size: 12.5px; padding: 0 0 30px; }
@media print { header.page { background: none; color: var(--ink); } section.block { break-inside: avoid; } }
"""


def _e(value: object) -> str:
    return _escaped(str(value))


@lru_cache(maxsize=ESCAPED_KEPT)  # as markdown.escape: the same few words, thousands of times
def _escaped(text: str) -> str:
    # Control characters are shown as escapes too: the file is also read with cat, less and grep.
    return html.escape(visible(text), quote=True)


def render_html(
    run: ReportRun,
    changes: Sequence[Change],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> str:
    """The whole report as one HTML document (a str), readable without network access or JavaScript."""
    check_thresholds(expiry_warning_days, expiry_critical_days)
    summary = summarize_run(run, changes)
    per_target, other_changes = changes_by_target(run, changes)
    thresholds = (expiry_warning_days, expiry_critical_days)
    timelines = {
        t.target: expiry_timeline(
            t, run.started_at, warning_days=expiry_warning_days, critical_days=expiry_critical_days
        )
        for t in run.targets
    }
    run_label = f"run {run.run_id}" if run.run_id is not None else "unsaved run"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(run.report)} · {_e(run_label)} · tlsfleet report</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(run, run_label, summary),
        '<main class="wrap">',
        _summary(run, summary, per_target, timelines),
    ]
    if other_changes:
        parts += [
            '<section class="block" id="fleet-changes">',
            "<h2>Fleet changes since the previous run</h2>",
            '<p class="sub">Changes that concern agents rather than one target.</p>',
            _changes(other_changes, with_target=True),
            "</section>",
        ]
    for index, target in enumerate(run.targets):
        parts.append(_target(index, target, per_target[target.target], timelines[target.target], thresholds))
    parts += [
        "</main>",
        '<footer class="wrap">',
        f"tlsfleet {_e(__version__)} · report {_e(run.report)}, {_e(run_label)} · expiry thresholds: "
        f"warning at {expiry_warning_days:g} days, critical at {expiry_critical_days:g} days · "
        f"{DIFF_MARK} marks a matrix cell that differs from most rows",
        "</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _header(run: ReportRun, run_label: str, summary: RunSummary) -> str:
    banner = ""
    if run.abandoned:
        banner = '<p class="banner">Abandoned: the run stopped before every target was probed.</p>'
    note = f'<p class="meta">{_e(run.note)}</p>' if run.note else ""
    worst = summary.worst
    if worst is not None:
        status = _badge(f"worst: {worst}", str(worst))
    elif summary.failed_handshakes:
        # Never a green "no findings" while a handshake failed, whatever the rules made of it.
        status = _badge(f"{count(len(summary.failed_handshakes), 'failed handshake')}", "critical")
    else:
        status = _badge("no findings", "ok")
    return (
        '<header class="page"><div class="wrap">'
        f'<div class="kicker">tlsfleet report</div><div class="status">{status}</div>'
        f'<h1>{_e(run.report)} <span class="run">{_e(run_label)}</span></h1>'
        f'<p class="meta">Started {_e(utc_text(run.started_at))} · finished {_e(utc_text(run.finished_at))} · '
        f"took {_e(duration_text(run.duration_s))}</p>{note}{banner}"
        "</div></header>"
    )


def _summary(
    run: ReportRun,
    summary: RunSummary,
    per_target: dict[str, list[Change]],
    timelines: dict[str, tuple[ExpiryEntry, ...]],
) -> str:
    total = len(summary.answered) + len(summary.silent)
    silent = ", ".join(f"{name} ({state})" for name, state, _error in summary.silent)
    cards = [
        _card(str(summary.targets), "targets"),
        _card(
            f"{len(summary.answered)} / {total}",
            "vantages answered",
            f"silent: {silent}" if silent else ("all answered" if total else "no vantage"),
            "warning" if summary.silent else "ok",
        ),
    ]
    for severity, n in summary.findings:
        cards.append(_card(str(n), f"{severity} finding{'s' if n != 1 else ''}", kind=str(severity) if n else ""))
    failed = summary.failed_handshakes
    cards.append(
        _card(
            str(len(failed)),
            f"failed handshake{'s' if len(failed) != 1 else ''}",
            ", ".join(f"{where} ({target})" for target, where in failed) if failed else "every handshake verified",
            "critical" if failed else "ok",
        )
    )
    cards.append(_card(str(summary.changes), "changes since previous run"))
    soonest = min(
        ((entry, target) for target, entries in timelines.items() for entry in entries if entry.role != "root"),
        key=lambda pair: pair[0].not_after,
        default=None,
    )
    if soonest is not None:
        entry, target = soonest
        kind = {"expired": "critical", "critical": "critical", "warning": "warning"}.get(entry.status, "ok")
        cards.append(_card(_days(entry.days_left), "soonest expiry", f"{entry.role} of {target}", kind))
    rows = []
    for index, t in enumerate(run.targets):
        badge = _status_badge(t, none="none")
        soon = next((e for e in timelines[t.target] if e.role != "root"), None)
        rows.append(
            "<tr>"
            f'<td><a href="#target-{index}">{_e(t.target)}</a></td>'
            f"<td>{badge}</td>"
            f"<td>{_count_findings(t.findings)}</td>"
            f"<td>{len(t.observation.answered)} of {len(t.observation.outcomes)}</td>"
            f"<td>{len(per_target[t.target])}</td>"
            f"<td>{_e(_days(soon.days_left)) + ' ' + _badge(soon.status, soon.status) if soon else '-'}</td>"
            "</tr>"
        )
    overview = ""
    if rows:
        overview = (
            '<div class="scroll"><table class="overview"><thead><tr><th>target</th><th>status</th>'
            "<th>findings</th><th>vantages answered</th><th>changes</th><th>soonest expiry</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return (
        '<section class="block" id="summary"><h2>Summary</h2>'
        f'<div class="cards">{"".join(cards)}</div>{overview}{_agents(run.agents)}</section>'
    )


def _status_badge(target: TargetRun, *, none: str) -> str:
    """The target's worst finding; without findings, "failed handshake" when one failed, and only then the green
    `none`."""
    if target.findings:
        worst = min(target.findings, key=lambda f: f.rank).severity
        return _badge(str(worst), str(worst))
    failed = failed_handshakes(target)
    if failed:
        return _badge(count(len(failed), "failed handshake"), "critical")
    return _badge(none, "ok")


def _count_findings(findings: Sequence[Finding]) -> str:
    if not findings:
        return "0"
    counts = {s: sum(1 for f in findings if f.severity is s) for s in sorted(Severity, reverse=True)}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def _card(number: str, label: str, more: str = "", kind: str = "") -> str:
    # The card clamps long text to two lines; the title keeps all of it a hover away.
    more_html = f'<div class="more" title="{_e(more)}">{_e(more)}</div>' if more else ""
    return (
        f'<div class="card {_e(kind)}"><div class="num">{_e(number)}</div>'
        f'<div class="lbl">{_e(label)}</div>{more_html}</div>'
    )


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {_e(kind)}">{_e(text)}</span>'


def _agents(agents: Sequence[AgentSnapshot]) -> str:
    if not agents:
        return ""
    rows = []
    for a in agents:
        state = _badge("answered", "ok") if a.state is VantageState.OK else _badge(a.state.value, "silent")
        clock = "-" if a.clock_offset_ms is None else f"{a.clock_offset_ms:+.0f} ms"
        if a.clock_offset_ms is not None and a.clock_error_ms is not None:
            clock += f" ±{a.clock_error_ms:.0f}"
        rows.append(
            f"<tr><td>{_e(a.name)}</td><td>{state}</td><td class='mono'>{_e(a.address)}</td>"
            f"<td>{_e(', '.join(f'{k}={v}' for k, v in a.labels))}</td><td>{_e(a.version or '-')}</td>"
            f"<td>{_e(clock)}</td><td>{_e(', '.join(s.name for s in a.stores) or '-')}</td>"
            f"<td>{_e(a.error)}</td></tr>"
        )
    opened = " open" if len(agents) <= _OPEN_AGENT_LIST else ""
    return (
        f'<details class="agents"{opened}><summary>Vantages ({len(agents)})</summary>'
        '<div class="scroll"><table class="agents"><thead><tr><th>agent</th><th>state</th><th>address</th>'
        "<th>labels</th><th>version</th><th>clock offset</th><th>trust stores</th><th>error</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div></details>"
    )


def _target(
    index: int,
    target: TargetRun,
    changes: Sequence[Change],
    timeline: Sequence[ExpiryEntry],
    thresholds: tuple[float, float],
) -> str:
    observation = target.observation
    badge = _status_badge(target, none="no findings")
    silent = ", ".join(f"{o.vantage.name} ({o.state})" for o in observation.silent)
    sub = (
        f"Probed as {observation.target} from {count(len(observation.outcomes), 'vantage')}, "
        f"{len(observation.answered)} answered, in {target.duration_ms / 1000:.1f} s"
        + (f"; silent: {silent}" if silent else "")
    )
    findings = (
        "".join(_finding(f) for f in sorted(target.findings, key=lambda f: f.rank))
        if target.findings
        else '<p class="none">No findings.</p>'
    )
    changed = _changes(changes, with_target=False) if changes else '<p class="none">No changes.</p>'
    return (
        f'<section class="block target" id="target-{index}">'
        f"<h2>{_e(target.target)} {badge}</h2>"
        f'<p class="sub">{_e(sub)}</p>'
        f"<h3>Findings</h3>{findings}"
        f"<h3>Changes since the previous run</h3>{changed}"
        f"<h3>Comparison matrix</h3>{_matrix(target)}"
        f"<h3>Certificate expiry</h3>{_timeline(timeline, *thresholds)}"
        "</section>"
    )


def _finding(finding: Finding) -> str:
    severity = str(finding.severity)
    facts = []
    if finding.agents:
        facts.append(("Vantages", ", ".join(finding.agents)))
    if finding.addresses:
        facts.append(("Addresses", ", ".join(finding.addresses)))
    if finding.fix:
        facts.append(("Fix", finding.fix))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    evidence = ""
    if finding.evidence:
        rows = "".join(
            f"<tr><td>{_e(e.field)}</td><td>{_e(where)}</td><td class='mono'>{_e(value)}</td></tr>"
            for e in finding.evidence
            for where, value in e.values
        )
        evidence = (
            f"<details><summary>Evidence ({len(finding.evidence)} field{'s' if len(finding.evidence) != 1 else ''})"
            "</summary><table><thead><tr><th>field</th><th>where</th><th>value</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>"
        )
    reproduce = ""
    if finding.reproduce:
        reproduce = (
            '<div class="lbl-small">Reproduce on an affected host</div>'
            f"<pre><code>{_e(chr(10).join(finding.reproduce))}</code></pre>"
        )
    return (
        f'<article class="finding {_e(severity)}">'
        f'<div class="head">{_badge(severity, severity)}<code class="cause">{_e(finding.cause.value)}</code></div>'
        f'<p class="summary">{_e(finding.summary)}</p>'
        f"{f'<dl>{dl}</dl>' if dl else ''}{evidence}{reproduce}</article>"
    )


def _changes(changes: Iterable[Change], *, with_target: bool) -> str:
    rows = []
    for c in changes:
        kind = _badge(c.kind.value, "kind") + (" " + _badge(c.severity, c.severity) if c.severity else "")
        before_after = ""
        if c.before or c.after:
            before_after = (
                f'<span class="before">{_e(c.before or "-")}</span><span class="arrow">→</span>'
                f'<span class="after">{_e(c.after or "-")}</span>'
            )
        target = f"<td>{_e(c.target or '-')}</td>" if with_target else ""
        rows.append(
            f"<tr><td>{kind}</td><td>{_e(c.summary)}</td>{target}<td>{_e(c.agent or '-')}</td>"
            f"<td class='mono'>{before_after}</td><td>{_e(utc_text(c.since))}</td></tr>"
        )
    target_head = "<th>target</th>" if with_target else ""
    return (
        '<div class="scroll"><table class="changes"><thead><tr><th>kind</th><th>change</th>'
        f"{target_head}<th>agent</th><th>before → after</th><th>since</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _matrix(target: TargetRun) -> str:
    matrix = target.matrix
    if not matrix.rows:
        return '<p class="none">No vantage probed this target.</p>'
    shown = [(key, title) for key, title in COLUMNS if any(row.cell(key) for row in matrix.rows)]
    head = "".join(f"<th>{_e(title)}</th>" for _key, title in shown)
    body = []
    for index, row in enumerate(matrix.rows):
        cells = []
        for key, _title in shown:
            value = row.cell(key)
            text = _e(value)
            if key == "labels":
                # Labels are joined without spaces; let the browser break after each one.
                text = text.replace(",", ",<wbr>")
            classes = [f"c-{key}"]
            # An empty cell that differs only says "nothing here", which the row's other cells explain.
            if (index, key) in matrix.differing and value:
                classes.append("diff")
                text = f'<span class="mark">{DIFF_MARK}</span>{text}'
            elif key == "native" and row.ok:
                classes.append("good")
            title = ' title="differs from most rows"' if "diff" in classes else ""
            cells.append(f'<td class="{" ".join(classes)}"{title}>{text}</td>')
        # Rows without a handshake (agent silent, connect failed) are context, not data: greyed.
        row_class = "" if row.ok or row.cell("tls") else ' class="down"'
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    legend = ""
    if matrix.differing:
        legend = f'<p class="legend"><span class="mark">{DIFF_MARK}</span> differs from most rows</p>'
    return (
        f'<div class="scroll"><table class="matrix"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{legend}"
    )


def _days(days_left: float) -> str:
    if days_left < 0:
        return f"expired {-days_left:.0f} d ago" if days_left <= -1 else "expired today"
    if days_left < 1:
        return f"{days_left * 24:.0f} h"
    return f"{days_left:.0f} d"


def _timeline(entries: Sequence[ExpiryEntry], warning_days: float, critical_days: float) -> str:
    if not entries:
        return '<p class="none">No certificate was served.</p>'
    # Linear over a horizon a few times the warning threshold: leaves (months) stay distinguishable,
    # and CAs (years) simply fill the bar.
    horizon = max(4 * warning_days, 1.0)
    ticks = "".join(
        f'<span class="tick" title="{_e(label)} at {days:g} days" style="left:{min(days / horizon, 1) * 100:.2f}%">'
        "</span>"
        for days, label in ((critical_days, "critical"), (warning_days, "warning"))
    )
    rows = []
    for e in entries:
        width = max(0.0, min(e.days_left / horizon, 1.0)) * 100
        served = ", ".join(e.agents)
        rows.append(
            "<tr>"
            f'<td class="role">{_e(e.role)}</td>'
            f'<td><div class="cert-name" title="{_e(e.subject)}">{_e(e.name)}</div>'
            f'<div class="cert-meta">sha256 {_e(e.sha256[:16])} · issuer {_e(e.issuer)} · served to {_e(served)}'
            "</div></td>"
            f'<td class="when">{_e(utc_text(e.not_after))}</td>'
            f'<td class="days">{_e(_days(e.days_left))}</td>'
            f"<td>{_badge(e.status, e.status)}</td>"
            f'<td class="barcell"><div class="track"><div class="bar {_e(e.status)}" style="width:{width:.2f}%">'
            f"</div>{ticks}</div></td>"
            "</tr>"
        )
    return (
        '<div class="scroll"><table class="expiry"><thead><tr><th>role</th><th>certificate</th><th>notAfter</th>'
        f"<th>left</th><th>status</th><th>time left (full bar: {horizon:g} days or more)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f'<p class="legend">Marks on the bars: critical at {critical_days:g} days, warning at {warning_days:g} days. '
        "Days are counted from the start of the run.</p>"
    )
