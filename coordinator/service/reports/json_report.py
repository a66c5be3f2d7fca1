"""A report run as JSON for machines, and the facts every report format shows (summary, expiry timeline).

Pure: a ReportRun and its changes in, plain values out. The Markdown and HTML writers read the same
facts from here so that the three formats never disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.x509.oid import NameOID

from ....agent.documents import document
from ....agent.model import ProbeRequest
from ....agent.trust.certinfo import CertificateParseError, CertSummary, parse_der, summarize
from ...diagnosis.model import Severity
from ...json_output import finding_json, iso_from_ns, probe_outcome_json, trust_store_json
from ...matrix import row_is_fine
from ...outcomes import ProbeOutcome, VantageState
from ..report_model import AgentSnapshot, Change, ReportRun, TargetRun

__all__ = [
    "DEFAULT_CRITICAL_DAYS",
    "DEFAULT_WARNING_DAYS",
    "ExpiryEntry",
    "RunSummary",
    "change_json",
    "changes_by_target",
    "check_thresholds",
    "duration_text",
    "expiry_timeline",
    "failed_handshakes",
    "render_json",
    "summarize_run",
    "utc_text",
]

DEFAULT_WARNING_DAYS = 30.0
DEFAULT_CRITICAL_DAYS = 7.0
_ROLE_ORDER = {"leaf": 0, "intermediate": 1, "root": 2}


@dataclass(frozen=True)
class ExpiryEntry:
    """One distinct certificate served for a target, and how long it has left."""

    sha256: str
    role: str  # "leaf", "intermediate", or "root" (a self-issued CA the server sends along)
    name: str  # the common name when there is one, else the full subject
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    not_after: datetime
    days_left: float  # negative once expired
    status: str  # "expired", "critical", "warning" or "ok"
    agents: tuple[str, ...]  # the vantages that were served it


@dataclass(frozen=True)
class RunSummary:
    targets: int
    answered: tuple[str, ...]  # agents that answered
    silent: tuple[tuple[str, str, str], ...]  # (agent, state, error) of agents that did not
    findings: tuple[tuple[Severity, int], ...]  # most severe first, every severity listed
    changes: int
    failed_handshakes: tuple[tuple[str, str], ...] = ()  # (target, agent@address) that connected and did not verify

    @property
    def worst(self) -> Severity | None:
        return next((severity for severity, n in self.findings if n), None)


def check_thresholds(warning_days: float, critical_days: float) -> None:
    if not 0 <= critical_days <= warning_days:
        raise ValueError(
            f"expiry thresholds warning={warning_days} days, critical={critical_days} days are not accepted; "
            "they must satisfy 0 <= critical <= warning"
        )


def utc_text(at: datetime | None) -> str:
    if at is None:
        return "-"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summarize_run(run: ReportRun, changes: Sequence[Change]) -> RunSummary:
    answered: dict[str, None] = {}
    silent: dict[str, tuple[str, str, str]] = {}
    if run.agents:
        for agent in run.agents:
            if agent.state is VantageState.OK:
                answered[agent.name] = None
            else:
                silent[agent.name] = (agent.name, agent.state.value, agent.error)
    else:
        # Without snapshots an agent counts as answering when it answered any target.
        for target in run.targets:
            for outcome in target.observation.outcomes:
                name = outcome.vantage.name
                if outcome.state is VantageState.OK and outcome.result is not None:
                    answered[name] = None
                    silent.pop(name, None)
                elif name not in answered:
                    silent.setdefault(name, (name, outcome.state.value, outcome.error))
    counts = dict.fromkeys(sorted(Severity, reverse=True), 0)
    for target in run.targets:
        for finding in target.findings:
            counts[finding.severity] += 1
    return RunSummary(
        targets=len(run.targets),
        answered=tuple(answered),
        silent=tuple(silent.values()),
        findings=tuple(counts.items()),
        changes=len(changes),
        failed_handshakes=tuple((t.target, where) for t in run.targets for where in failed_handshakes(t)),
    )


def failed_handshakes(target: TargetRun) -> tuple[str, ...]:
    """agent@address of every row that connected but did not end in a verified handshake for every client
    view there: a report's status is never "none" while one of these exists."""
    return tuple(row.where for row in target.observation.rows if row.connected and not row_is_fine(row.address))


def changes_by_target(run: ReportRun, changes: Sequence[Change]) -> tuple[dict[str, list[Change]], list[Change]]:
    """Changes of each target of the run, and the rest (agent-wide, or about a target no longer probed)."""
    known: dict[str, list[Change]] = {t.target: [] for t in run.targets}
    others: list[Change] = []
    for change in changes:
        if change.target in known:
            known[change.target].append(change)
        else:
            others.append(change)
    return known, others


def expiry_timeline(
    target: TargetRun,
    now: datetime,
    *,
    warning_days: float = DEFAULT_WARNING_DAYS,
    critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> tuple[ExpiryEntry, ...]:
    """Every distinct certificate served for the target, soonest notAfter first."""
    check_thresholds(warning_days, critical_days)
    seen: dict[str, tuple[CertSummary, str, dict[str, None]]] = {}
    names: dict[str, str] = {}
    for row in target.observation.rows_with_chain:
        for position, der in enumerate(row.address.chain):
            try:
                cert = summarize(der)
            except CertificateParseError:
                continue
            role = "leaf" if position == 0 else ("root" if cert.is_self_issued and cert.is_ca else "intermediate")
            if cert.sha256 in seen:
                known_cert, known_role, agents = seen[cert.sha256]
                # A certificate someone is served as a leaf is a leaf, wherever else it appears.
                seen[cert.sha256] = (known_cert, "leaf" if role == "leaf" else known_role, agents)
            else:
                agents = {}
                seen[cert.sha256] = (cert, role, agents)
                names[cert.sha256] = _display_name(der, cert)
            agents[row.agent] = None
    entries = []
    for cert, role, agents in seen.values():
        name = names[cert.sha256]
        days_left = (cert.not_after - now).total_seconds() / 86400
        if days_left < 0:
            status = "expired"
        elif days_left <= critical_days:
            status = "critical"
        elif days_left <= warning_days:
            status = "warning"
        else:
            status = "ok"
        entries.append(
            ExpiryEntry(
                sha256=cert.sha256,
                role=role,
                name=name,
                subject=cert.subject,
                issuer=cert.issuer,
                not_after=cert.not_after,
                days_left=days_left,
                status=status,
                agents=tuple(agents),
            )
        )
    # Same notAfter (a lab PKI, a CA issued with its root): the served order, leaf first, reads best.
    return tuple(sorted(entries, key=lambda e: (e.not_after, _ROLE_ORDER[e.role], e.sha256)))


def _display_name(der: bytes, cert: CertSummary) -> str:
    """The CN when there is one: a person recognizes it, not the full DN."""
    names = parse_der(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode(errors="replace")
    return cert.subject or "-"


def render_json(
    run: ReportRun,
    changes: Sequence[Change],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> dict[str, Any]:
    """The run as a JSON-ready dict: metadata, summary, agents, per target findings, vantages and expiry."""
    head = _head(run, changes, expiry_warning_days, expiry_critical_days)
    targets = [_target_json(t, run.started_at, expiry_warning_days, expiry_critical_days) for t in run.targets]
    return {**head, "targets": targets}


def iter_json(
    run: ReportRun,
    changes: Sequence[Change],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> Iterator[str]:
    """The same document as `render_json`, as text, one target at a time: a fleet-sized report is tens of
    megabytes, and building it whole would set the coordinator's peak memory. One line per top-level key
    and per target, each compact: json's C encoder, which `indent` turns off, takes a tenth of the time for
    200 targets x 10 agents, and `jq` or any reader takes the document the same."""
    head = _head(run, changes, expiry_warning_days, expiry_critical_days)
    yield "{\n" + "".join(f"  {_compact(key)}: {_compact(value)},\n" for key, value in head.items()) + '  "targets": ['
    for index, target in enumerate(run.targets):
        document = _target_json(target, run.started_at, expiry_warning_days, expiry_critical_days)
        yield ("," if index else "") + "\n    " + _compact(document)
    yield "\n  ]\n}\n"


def _compact(value: Any) -> str:
    # json escapes C0 controls itself; C1 controls and bidirectional overrides (which terminals and viewers of
    # the file would act on) are escaped the same way here, the same string to any JSON reader.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if text.isascii() and "\x7f" not in text:  # nearly every report: two scans in C, a fraction of the pattern's
        return text
    return _UNESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_UNESCAPED = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _head(run: ReportRun, changes: Sequence[Change], expiry_warning_days: float, expiry_critical_days: float) -> dict:
    """Everything but the targets."""
    check_thresholds(expiry_warning_days, expiry_critical_days)
    summary = summarize_run(run, changes)
    return document(
        "report",
        {
            "report": run.report,
            "run_id": run.run_id,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "duration_s": round(run.duration_s, 3),
            "abandoned": run.abandoned,
            "note": run.note,
            "expiry_thresholds_days": {"warning": expiry_warning_days, "critical": expiry_critical_days},
            "summary": {
                "targets": summary.targets,
                "agents_answered": list(summary.answered),
                "agents_silent": [{"agent": n, "state": s, "error": e} for n, s, e in summary.silent],
                "findings": {str(severity): n for severity, n in summary.findings},
                "worst": str(summary.worst) if summary.worst is not None else None,
                "changes": summary.changes,
            },
            "agents": [_agent_json(a) for a in run.agents],
            "changes": [change_json(c) for c in changes],
        },
    )


def _target_json(target: TargetRun, now: datetime, warning: float, critical: float) -> dict[str, Any]:
    observation = target.observation
    request = observation.request
    return {
        "target": target.target,
        "probed": str(request.target),
        "request": _request_json(request),
        "reference_time": iso_from_ns(request.options.reference_time_ns),
        "duration_ms": round(target.duration_ms, 3),
        "answered": len(observation.answered),
        "silent": len(observation.silent),
        "findings": [finding_json(f) for f in target.findings],
        "expiry": [
            {
                "sha256": e.sha256,
                "role": e.role,
                "subject": e.subject,
                "issuer": e.issuer,
                "not_after": _iso(e.not_after),
                "days_left": round(e.days_left, 2),
                "status": e.status,
                "agents": list(e.agents),
            }
            for e in expiry_timeline(target, now, warning_days=warning, critical_days=critical)
        ],
        "vantages": [_vantage_json(o) for o in observation.outcomes],
        "variants": [
            {
                "label": v.label,
                "request": _request_json(v.request),
                "vantages": [_vantage_json(o) for o in v.outcomes],
            }
            for v in observation.variants
        ],
    }


def _vantage_json(outcome: ProbeOutcome) -> dict[str, Any]:
    """A vantage's results for one target, without its trust-store list: that is the same for every target
    and stands once per agent under "agents"."""
    data = probe_outcome_json(outcome)
    if data["result"] is not None:
        data["result"].pop("trust_stores", None)
    return data


def _request_json(request: ProbeRequest) -> dict[str, Any]:
    o = request.options
    return {
        "target": str(request.target),
        "sni": o.sni,
        "send_sni": o.send_sni,
        "alpn": list(o.alpn),
        "min_version": o.min_version.value if o.min_version else None,
        "max_version": o.max_version.value if o.max_version else None,
        "pin_address": o.pin_address,
    }


def _agent_json(agent: AgentSnapshot) -> dict[str, Any]:
    return {
        "agent": agent.name,
        "address": agent.address,
        "labels": dict(agent.labels),
        "state": agent.state.value,
        "error": agent.error,
        "version": agent.version,
        "clock_offset_ms": agent.clock_offset_ms,
        "clock_error_ms": agent.clock_error_ms,
        "stores": [trust_store_json(s) for s in agent.stores],
    }


def change_json(change: Change) -> dict[str, Any]:
    return {
        "kind": change.kind.value,
        "summary": change.summary,
        "target": change.target,
        "agent": change.agent,
        "before": change.before,
        "after": change.after,
        "since": _iso(change.since),
        "severity": change.severity,
        "cause": change.cause,
    }
