"""The fleet page: the service's own HTML view of its reports, runs, agents and target histories.

Pure: report runs, run summaries and agent states in, one self-contained HTML document out (the HTML
report's inline CSS, no scripts, nothing fetched from anywhere). Every value from outside passes through
`html.escape`, and every list is capped, with the number left out said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..diagnosis.model import Severity
from ..diagnosis.wording import count
from ..outcomes import VantageState
from .changes import changes_between
from .history.store import RunSummary
from .report_model import AgentSnapshot, Change, ReportRun
from .reports.html import _CSS, _badge, _days, _e, render_html
from .reports.json_report import (
    DEFAULT_CRITICAL_DAYS,
    DEFAULT_WARNING_DAYS,
    duration_text,
    expiry_timeline,
    summarize_run,
    utc_text,
)

if TYPE_CHECKING:  # the link registry's wire code loads only where a service runs an agent link
    from ..fleet.link_registry import LinkedAgentInfo

__all__ = [
    "MAX_AGENTS",
    "MAX_CHANGES",
    "MAX_RUNS",
    "MAX_TARGETS",
    "AgentSighting",
    "LeafSighting",
    "ReportLine",
    "TargetHistory",
    "agent_sightings",
    "render_not_found",
    "render_overview",
    "render_report_page",
    "render_run_page",
    "render_target_page",
    "render_unavailable",
    "report_href",
    "report_line",
    "run_href",
    "slim_run",
    "target_history",
    "target_href",
]

MAX_RUNS = 50  # runs listed for a report, and runs a target's history reads
MAX_TARGETS = 200  # target links on a report page, names on a 404 page
MAX_AGENTS = 200  # rows of each agent table on the overview
MAX_CHANGES = 200  # changes on a target's history

_PAGE_CSS = """
nav.fleet { background: #1a2b4f; font-size: 14px; }
nav.fleet a { color: #fff; text-decoration: none; margin-right: 18px; display: inline-block; padding: 7px 0; }
nav.fleet a:hover { text-decoration: underline; }
p.more-rows { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
"""


@dataclass(frozen=True)
class ReportLine:
    """A configured report as the overview shows it: its latest run in a few facts (None: no run yet)."""

    name: str
    run_id: int | None = None
    finished_at: datetime | None = None
    abandoned: bool = False
    status: str = ""  # "critical", "warning", "info", "N failed handshakes" or "no findings"
    status_kind: str = ""  # the badge's class
    findings: tuple[tuple[Severity, int], ...] = ()
    targets: int = 0
    answered: int = 0
    vantages: int = 0


@dataclass(frozen=True)
class AgentSighting:
    """An agent as the latest run that asked it found it."""

    snapshot: AgentSnapshot
    report: str
    run_id: int | None
    at: datetime


@dataclass(frozen=True)
class LeafSighting:
    """One leaf certificate served for a target over the runs read."""

    sha256: str
    name: str  # the common name when there is one, else the full subject
    subject: str  # RFC 4514
    issuer: str
    not_after: datetime
    first_seen: datetime  # start of the first run that was served it
    last_seen: datetime  # start of the last run that was served it
    agents: tuple[str, ...]


@dataclass(frozen=True)
class TargetHistory:
    report: str
    target: str
    runs: int  # runs read
    probed: int  # of which probed the target
    leaves: tuple[LeafSighting, ...]  # soonest notAfter first
    changes: tuple[tuple[int | None, Change], ...]  # (run id, change), newest first


def run_href(run_id: int) -> str:
    return f"/runs/{run_id}"


def report_href(report: str) -> str:
    return f"/reports/{quote(report, safe='')}"


def target_href(report: str, target: str) -> str:
    return f"/targets/{quote(report, safe='')}/{quote(target, safe='')}"


def report_line(name: str, run: ReportRun | None) -> ReportLine:
    if run is None:
        return ReportLine(name)
    summary = summarize_run(run, ())
    worst = summary.worst
    if worst is not None:
        status, kind = str(worst), str(worst)
    elif summary.failed_handshakes:
        # Never a green "no findings" while a handshake failed, as in the HTML report.
        status, kind = count(len(summary.failed_handshakes), "failed handshake"), "critical"
    else:
        status, kind = "no findings", "ok"
    return ReportLine(
        name=name,
        run_id=run.run_id,
        finished_at=run.finished_at,
        abandoned=run.abandoned,
        status=status,
        status_kind=kind,
        findings=summary.findings,
        targets=summary.targets,
        answered=len(summary.answered),
        vantages=len(summary.answered) + len(summary.silent),
    )


def agent_sightings(runs: Sequence[ReportRun]) -> tuple[AgentSighting, ...]:
    """Each agent of the runs' snapshots as the most recent of them saw it, by name."""
    seen: dict[str, AgentSighting] = {}
    for run in runs:
        for snapshot in run.agents:
            known = seen.get(snapshot.name)
            if known is None or run.started_at > known.at:
                seen[snapshot.name] = AgentSighting(
                    replace(snapshot, stores=()), run.report, run.run_id, run.started_at
                )
    return tuple(seen[name] for name in sorted(seen))


def slim_run(run: ReportRun, target: str) -> ReportRun:
    """The run with only `target` (when it probed it) and no agent snapshots: what a target's history keeps."""
    return replace(run, targets=tuple(t for t in run.targets if t.target == target), agents=())


def target_history(report: str, target: str, runs: Sequence[ReportRun]) -> TargetHistory:
    """The leaves served for `target` and the changes between consecutive runs that probed it; `runs`
    oldest first (slimmed or not)."""
    leaves: dict[str, tuple[LeafSighting, dict[str, None]]] = {}
    changes: list[tuple[int | None, Change]] = []
    previous: ReportRun | None = None
    probed = 0
    for run in runs:
        slim = slim_run(run, target)
        if not slim.targets:
            continue
        probed += 1
        for entry in expiry_timeline(slim.targets[0], run.started_at):
            if entry.role != "leaf":
                continue
            known = leaves.get(entry.sha256)
            if known is None:
                first = LeafSighting(
                    entry.sha256,
                    entry.name,
                    entry.subject,
                    entry.issuer,
                    entry.not_after,
                    run.started_at,
                    run.started_at,
                    (),
                )
                leaves[entry.sha256] = (first, dict.fromkeys(entry.agents))
            else:
                leaves[entry.sha256] = (
                    replace(known[0], last_seen=run.started_at),
                    known[1] | dict.fromkeys(entry.agents),
                )
        # Without a first-seen lookup a change is dated by the run that saw it: right for past runs too.
        changes += [(run.run_id, c) for c in changes_between(previous, slim) if c.target == target]
        previous = slim
    ordered = sorted(
        (replace(sighting, agents=tuple(agents)) for sighting, agents in leaves.values()),
        key=lambda s: (s.not_after, s.sha256),
    )
    return TargetHistory(report, target, len(runs), probed, tuple(ordered), tuple(reversed(changes)))


# --- pages ------------------------------------------------------------------------------------------


def _document(title: str, body: str, report: str | None = None) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)} · tlsfleet</title>",
            f"<style>{_CSS}{_PAGE_CSS}</style>",
            "</head>",
            "<body>",
            _nav(report),
            body,
            "</body>",
            "</html>",
        ]
    )


def _nav(report: str | None = None, anchors: Sequence[tuple[str, str]] = ()) -> str:
    links = ['<a href="/">Fleet overview</a>']
    if report is not None:
        links.append(f'<a href="{_e(report_href(report))}">Report {_e(report)}</a>')
    links += [f'<a href="#{_e(anchor)}">{_e(text)}</a>' for text, anchor in anchors]
    return f'<nav class="fleet"><div class="wrap">{"".join(links)}</div></nav>'


def _header(kicker: str, title: str, meta: str = "") -> str:
    meta_html = f'<p class="meta">{_e(meta)}</p>' if meta else ""
    return (
        f'<header class="page"><div class="wrap"><div class="kicker">{_e(kicker)}</div>'
        f"<h1>{_e(title)}</h1>{meta_html}</div></header>"
    )


def _more(shown: int, total: int, what: str) -> str:
    return f'<p class="more-rows">+{total - shown} more {_e(what)} not shown</p>' if total > shown else ""


def _table(head: Sequence[str], rows: Sequence[str], css: str) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        f'<div class="scroll"><table class="{_e(css)}"><thead><tr>{th}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _counts(findings: Sequence[tuple[Severity, int]]) -> str:
    return ", ".join(f"{n} {s}" for s, n in findings if n) or "0"


def render_overview(
    reports: Sequence[ReportLine],
    agents: Sequence[AgentSighting],
    linked: Sequence[LinkedAgentInfo] | None,
    *,
    now: datetime,
) -> str:
    """`/`: the latest run of each report, the agents as the latest runs saw them, and the dial-out agents
    (`linked` None: this service runs no agent link)."""
    rows = []
    for line in reports:
        name = f'<a href="{_e(report_href(line.name))}">{_e(line.name)}</a>'
        if line.run_id is None:
            rows.append(f'<tr><td>{name}</td><td colspan="6" class="none">no runs yet</td></tr>')
            continue
        abandoned = " " + _badge("abandoned", "warning") if line.abandoned else ""
        rows.append(
            f"<tr><td>{name}</td><td>{_badge(line.status, line.status_kind)}{abandoned}</td>"
            f"<td>{_e(utc_text(line.finished_at))}</td><td>{_e(_counts(line.findings))}</td>"
            f"<td>{line.targets}</td><td>{line.answered} of {line.vantages}</td>"
            f'<td><a href="{_e(run_href(line.run_id))}">run {line.run_id}</a></td></tr>'
        )
    if rows:
        report_table = _table(
            ("report", "status", "finished", "findings", "targets", "vantages answered", "run"), rows, "reports"
        )
    else:
        report_table = '<p class="none">No report is configured.</p>'
    body = [
        _header("tlsfleet fleet", "Fleet overview", f"as of {utc_text(now)}"),
        '<main class="wrap">',
        f'<section class="block" id="reports"><h2>Reports ({len(reports)})</h2>'
        '<p class="sub">The latest run of each configured report.</p>'
        f"{report_table}</section>",
        _sightings(agents),
    ]
    if linked is not None:
        body.append(_linked(linked))
    body.append("</main>")
    return _document("Fleet overview", "\n".join(body))


def _sightings(agents: Sequence[AgentSighting]) -> str:
    if not agents:
        table = '<p class="none">No run has asked an agent yet.</p>'
    else:
        rows = []
        for s in agents[:MAX_AGENTS]:
            a = s.snapshot
            state = _badge("answered", "ok") if a.state is VantageState.OK else _badge(a.state.value, "silent")
            clock = "-" if a.clock_offset_ms is None else f"{a.clock_offset_ms:+.0f} ms"
            run = f'<a href="{_e(run_href(s.run_id))}">run {s.run_id}</a>' if s.run_id is not None else "-"
            rows.append(
                f"<tr><td>{_e(a.name)}</td><td>{state}</td><td class='mono'>{_e(a.address)}</td>"
                f"<td>{_e(', '.join(f'{k}={v}' for k, v in a.labels))}</td><td>{_e(a.version or '-')}</td>"
                f"<td>{_e(clock)}</td><td>{_e(s.report)}, {run}, {_e(utc_text(s.at))}</td><td>{_e(a.error)}</td></tr>"
            )
        table = _table(
            ("agent", "state", "address", "labels", "version", "clock offset", "last asked", "error"), rows, "agents"
        ) + _more(min(len(agents), MAX_AGENTS), len(agents), "agents")
    return (
        f'<section class="block" id="agents"><h2>Agents ({len(agents)})</h2>'
        '<p class="sub">Every vantage of the latest runs, as the most recent of them found it.</p>'
        f"{table}</section>"
    )


_LINK_BADGE = {"online": "ok", "stale": "warning", "offline": "silent"}


def _linked(linked: Sequence[LinkedAgentInfo]) -> str:
    if not linked:
        table = '<p class="none">No agent has dialled in yet.</p>'
    else:
        rows = [
            f"<tr><td>{_e(a.name)}</td><td>{_badge(a.state.value, _LINK_BADGE.get(a.state.value, 'silent'))}</td>"
            f"<td class='mono'>{_e(a.address)}</td><td>{_e(a.version or '-')}</td>"
            f"<td>{_e(', '.join(f'{k}={v}' for k, v in a.labels))}</td>"
            f"<td>{_e(duration_text(max(a.silent_s, 0.0)))}</td></tr>"
            for a in linked[:MAX_AGENTS]
        ]
        table = _table(("agent", "link", "address", "version", "labels", "silent for"), rows, "linked") + _more(
            min(len(linked), MAX_AGENTS), len(linked), "agents"
        )
    states = {state: sum(1 for a in linked if a.state.value == state) for state in _LINK_BADGE}
    sub = ", ".join(f"{n} {state}" for state, n in states.items())
    return (
        f'<section class="block" id="dial-out"><h2>Dial-out agents ({len(linked)})</h2>'
        f'<p class="sub">Agents holding a stream to this coordinator: {_e(sub)}.</p>{table}</section>'
    )


def _runs_table(runs: Sequence[RunSummary], current: int | None) -> str:
    if not runs:
        return '<p class="none">no runs yet</p>'
    rows = []
    for r in runs[:MAX_RUNS]:
        mark = " " + _badge("shown", "kind") if r.run_id == current else ""
        abandoned = _badge("abandoned", "warning") if r.abandoned else ""
        findings = ((Severity.CRITICAL, r.critical), (Severity.WARNING, r.warning), (Severity.INFO, r.info))
        took = duration_text((r.finished_at - r.started_at).total_seconds())
        rows.append(
            f'<tr><td><a href="{_e(run_href(r.run_id))}">run {r.run_id}</a>{mark}</td>'
            f"<td>{_e(utc_text(r.started_at))}</td><td>{_e(took)}"
            f"</td><td>{r.targets}</td><td>{_e(_counts(findings))}</td><td>{abandoned}{_e(r.note)}</td></tr>"
        )
    return _table(("run", "started", "took", "targets", "findings", "note"), rows, "runs")


def _target_links(report: str, targets: Sequence[str]) -> str:
    if not targets:
        return '<p class="none">No target.</p>'
    items = "".join(f'<li><a href="{_e(target_href(report, t))}">{_e(t)}</a></li>' for t in targets[:MAX_TARGETS])
    return f"<ul>{items}</ul>" + _more(min(len(targets), MAX_TARGETS), len(targets), "targets")


def _within_report(document: str, report: str, sections: str, anchors: Sequence[tuple[str, str]]) -> str:
    """The HTML report with the fleet navigation (and links to `anchors` in `sections`) on top, and
    `sections` after its own."""
    head, marker, rest = document.partition("<body>\n")
    main, end, tail = rest.rpartition("</main>")
    if not marker or not end:
        raise ValueError("the HTML report has no <body> or </main> to extend")
    head = head.replace("</style>", _PAGE_CSS + "</style>", 1)
    return f"{head}{marker}{_nav(report, anchors)}\n{main}{sections}{end}{tail}"


def render_report_page(
    report: str,
    latest: ReportRun | None,
    changes: Sequence[Change],
    runs: Sequence[RunSummary],
    targets: Sequence[str],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> str:
    """`/reports/NAME`: the latest run as the HTML report renders it, its recent runs, and a history link
    per target (`targets`: the configured ones, then any other the latest run probed)."""
    history = (
        f'<section class="block" id="recent-runs"><h2>Recent runs of {_e(report)}</h2>'
        f"{_runs_table(runs, latest.run_id if latest else None)}</section>"
        f'<section class="block" id="target-history"><h2>Target history</h2>'
        f'<p class="sub">Expiry timeline and changes of each target over the last {MAX_RUNS} runs.</p>'
        f"{_target_links(report, targets)}</section>"
    )
    if latest is None:
        body = "\n".join(
            [
                _header("tlsfleet report", report, "no runs yet: the first run has not finished"),
                f'<main class="wrap">{history}</main>',
            ]
        )
        return _document(f"Report {report}", body, report)
    document = render_html(
        latest, changes, expiry_warning_days=expiry_warning_days, expiry_critical_days=expiry_critical_days
    )
    return _within_report(
        document, report, history, (("Recent runs", "recent-runs"), ("Target history", "target-history"))
    )


def render_run_page(
    run: ReportRun,
    changes: Sequence[Change],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> str:
    """`/runs/ID`: one stored run as the HTML report renders it, with a history link per target."""
    document = render_html(
        run, changes, expiry_warning_days=expiry_warning_days, expiry_critical_days=expiry_critical_days
    )
    links = (
        f'<section class="block" id="target-history"><h2>Target history</h2>'
        f"{_target_links(run.report, [t.target for t in run.targets])}</section>"
    )
    return _within_report(document, run.report, links, (("Target history", "target-history"),))


def render_target_page(
    history: TargetHistory,
    *,
    now: datetime,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> str:
    """`/targets/NAME/TARGET`: the leaves served over the runs read, soonest notAfter first, and the
    changes between those runs, newest first."""
    if history.leaves:
        rows = []
        for leaf in history.leaves[:MAX_TARGETS]:
            days_left = (leaf.not_after - now).total_seconds() / 86400
            status = (
                "expired"
                if days_left < 0
                else "critical"
                if days_left <= expiry_critical_days
                else "warning"
                if days_left <= expiry_warning_days
                else "ok"
            )
            rows.append(
                f'<tr><td><div class="cert-name" title="{_e(leaf.subject)}">{_e(leaf.name)}</div>'
                f'<div class="cert-meta">sha256 {_e(leaf.sha256[:16])} · issuer {_e(leaf.issuer)} · '
                f"served to {_e(', '.join(leaf.agents))}</div></td>"
                f"<td>{_e(utc_text(leaf.first_seen))}</td><td>{_e(utc_text(leaf.last_seen))}</td>"
                f"<td>{_e(utc_text(leaf.not_after))}</td><td class='days'>{_e(_days(days_left))}</td>"
                f"<td>{_badge(status, status)}</td></tr>"
            )
        leaves = _table(
            ("leaf certificate", "first seen", "last seen", "notAfter", "left", "status"), rows, "expiry"
        ) + _more(min(len(history.leaves), MAX_TARGETS), len(history.leaves), "certificates")
    elif history.probed:
        leaves = '<p class="none">No leaf certificate was served in these runs.</p>'
    else:
        leaves = '<p class="none">no runs yet: no kept run probed this target.</p>'
    if history.changes:
        rows = []
        for run_id, c in history.changes[:MAX_CHANGES]:
            run = f'<a href="{_e(run_href(run_id))}">run {run_id}</a>' if run_id is not None else "-"
            before_after = (
                f'<span class="before">{_e(c.before or "-")}</span><span class="arrow">→</span>'
                f'<span class="after">{_e(c.after or "-")}</span>'
                if c.before or c.after
                else ""
            )
            rows.append(
                f"<tr><td>{run}</td><td>{_e(utc_text(c.since))}</td><td>{_badge(c.kind.value, 'kind')}</td>"
                f"<td>{_e(c.summary)}</td><td>{_e(c.agent or '-')}</td><td class='mono'>{before_after}</td></tr>"
            )
        changed = _table(("run", "when", "kind", "change", "agent", "before → after"), rows, "changes") + _more(
            min(len(history.changes), MAX_CHANGES), len(history.changes), "changes"
        )
    else:
        changed = '<p class="none">No changes between these runs.</p>'
    meta = (
        f"report {history.report} · {count(history.probed, 'run')} of the last {history.runs} probed this target · "
        f"days left as of {utc_text(now)}"
    )
    body = "\n".join(
        [
            _header("tlsfleet target history", history.target, meta),
            '<main class="wrap">',
            f'<section class="block" id="expiry"><h2>Leaf certificates served</h2>{leaves}</section>',
            f'<section class="block" id="changes"><h2>Changes, newest first</h2>{changed}</section>',
            "</main>",
        ]
    )
    return _document(f"{history.target} · {history.report}", body, history.report)


def render_not_found(what: str, known_label: str, known: Sequence[tuple[str, str]]) -> str:
    """A 404 page: what was asked for does not exist (`what`, one sentence), and links to what does
    (`known`: (text, href) pairs, capped)."""
    if known:
        items = "".join(f'<li><a href="{_e(href)}">{_e(text)}</a></li>' for text, href in known[:MAX_TARGETS])
        listing = f"<p>{_e(known_label)}:</p><ul>{items}</ul>" + _more(
            min(len(known), MAX_TARGETS), len(known), "entries"
        )
    else:
        listing = f'<p class="none">{_e(known_label)}: none.</p>'
    body = "\n".join(
        [
            _header("tlsfleet · 404 not found", "Not found"),
            f'<main class="wrap"><section class="block" id="not-found"><h2>{_e(what)}</h2>{listing}</section></main>',
        ]
    )
    return _document("Not found", body)


def render_unavailable(reason: str) -> str:
    """The page when the history cannot be read (503) or the page failed (500): the reason, one line."""
    body = "\n".join(
        [
            _header("tlsfleet", "Not available"),
            f'<main class="wrap"><section class="block" id="unavailable"><h2>{_e(reason)}</h2></section></main>',
        ]
    )
    return _document("Not available", body)
