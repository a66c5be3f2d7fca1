"""What a report run should announce: new findings, certificates crossing an expiry threshold, and
findings that went away. Pure: the caller says what was already announced and queues the result.

The caller keeps the set of open keys: it adds an alert's key when a "finding" or "expiry" alert is
queued for delivery, and removes it when a "resolved" alert (which carries the finding's own key) is.
`already_announced(key)` answers from that set. So a finding is announced once while it persists, resolved
once when it goes, and announced again should it come back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ...agent.trust.certinfo import CertificateParseError, CertSummary, summarize
from ..diagnosis.model import Cause, Finding, Severity, cause_title
from ..diagnosis.wording import cert_name, common_name, name_list, span
from .history.store import key_of
from .report_model import Change, ChangeKind, ReportRun, TargetRun

__all__ = ["Alert", "AlertKind", "alert_from_payload", "alert_to_payload", "expiry_key", "plan_alerts"]


class AlertKind(StrEnum):
    FINDING = "finding"
    EXPIRY = "expiry"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    key: str  # stable across runs; a resolved alert carries the key of the finding it closes
    kind: AlertKind
    severity: Severity
    title: str  # short: what and where
    text: str  # one plain paragraph: what, where, the fix
    report: str
    target: str
    agents: tuple[str, ...]
    cause: str  # the finding's cause; "expiring_soon" for expiry alerts
    observed_at: datetime  # the run that raised it


def alert_to_payload(alert: Alert) -> str:
    """The alert as the outbox keeps it until delivered: JSON that `alert_from_payload` reads back."""
    return json.dumps(
        {
            "key": alert.key,
            "kind": alert.kind.value,
            "severity": str(alert.severity),
            "title": alert.title,
            "text": alert.text,
            "report": alert.report,
            "target": alert.target,
            "agents": list(alert.agents),
            "cause": alert.cause,
            "observed_at": alert.observed_at.isoformat(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def alert_from_payload(payload: str) -> Alert:
    """Raises ValueError when the payload is not one `alert_to_payload` wrote."""
    try:
        data = json.loads(payload)
        return Alert(
            key=str(data["key"]),
            kind=AlertKind(data["kind"]),
            severity=Severity[str(data["severity"]).upper()],
            title=str(data["title"]),
            text=str(data["text"]),
            report=str(data["report"]),
            target=str(data["target"]),
            agents=tuple(str(a) for a in data["agents"]),
            cause=str(data["cause"]),
            observed_at=datetime.fromisoformat(data["observed_at"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a queued alert ({type(error).__name__}: {error})") from None


def expiry_key(report: str, target: str, sha256: str, threshold_days: float) -> str:
    """Stable identity of one certificate crossing one expiry threshold. Prefixed, so it never equals a
    finding key (plain hex)."""
    text = json.dumps(["expiry", report, target, sha256.lower(), f"{threshold_days:g}"], separators=(",", ":"))
    return "expiry:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def plan_alerts(
    run: ReportRun,
    changes: Sequence[Change],
    *,
    min_severity: Severity,
    expiry_warning_days: float = 30.0,
    expiry_critical_days: float = 7.0,
    already_announced: Callable[[str], bool],
    previous: ReportRun | None = None,
) -> list[Alert]:
    """The alerts this run raises, in order: new findings, expiry crossings, resolutions.

    `previous` is the report's previous run: findings it had that this run no longer has are resolved, when
    they had been announced and every agent that saw them answered this time (an agent that went silent
    has not shown the problem gone), the rule `changes.changes_between` uses too. Without it, resolutions
    are not planned. `changes` (that function's output) date a resolution: "gone since".
    """
    if not 0 <= expiry_critical_days <= expiry_warning_days:
        raise ValueError(
            f"expiry thresholds {expiry_warning_days:g}/{expiry_critical_days:g} days are not accepted; "
            "0 <= critical days <= warning days"
        )
    if previous is not None and previous.report != run.report:
        raise ValueError(f"previous run is of report {previous.report!r}, not {run.report!r}; pass the same report's")
    planned: dict[str, Alert] = {}
    for alert in _finding_alerts(run, min_severity):
        if alert.key not in planned and not already_announced(alert.key):
            planned[alert.key] = alert
    for alert in _expiry_alerts(run, expiry_warning_days, expiry_critical_days):
        if alert.severity >= min_severity and alert.key not in planned and not already_announced(alert.key):
            planned[alert.key] = alert
    if previous is not None:
        for alert in _resolved_alerts(run, previous, changes):
            if alert.key not in planned and already_announced(alert.key):
                planned[alert.key] = alert
    return list(planned.values())


def _finding_alerts(run: ReportRun, min_severity: Severity) -> Iterator[Alert]:
    for target_run in run.targets:
        for finding in sorted(target_run.findings, key=lambda f: f.rank):
            # The expiry rule announces these per certificate and per threshold; a finding-level alert on
            # top would say the same thing twice and miss the escalation from warning to critical.
            if finding.cause is Cause.EXPIRING_SOON or finding.severity < min_severity:
                continue
            yield Alert(
                key=key_of(run.report, target_run.target, finding),
                kind=AlertKind.FINDING,
                severity=finding.severity,
                title=f"{cause_title(finding.cause)}: {target_run.target}",
                text=_finding_text(finding),
                report=run.report,
                target=target_run.target,
                agents=finding.agents,
                cause=finding.cause.value,
                observed_at=run.started_at,
            )


def _finding_text(finding: Finding) -> str:
    parts = [finding.summary.strip()]
    where = f"Seen from {name_list(finding.agents)}" if finding.agents else ""
    if finding.addresses:
        where += f" at {name_list(finding.addresses)}" if where else f"At {name_list(finding.addresses)}"
    if where:
        parts.append(where + ".")
    if finding.fix:
        parts.append(f"Fix: {finding.fix.strip()}")
    if finding.reproduce:
        parts.append(f"Reproduce: {finding.reproduce[0]}")
    return _one_paragraph(" ".join(parts))


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


@dataclass
class _Served:
    cert: CertSummary
    leaf: bool
    agents: dict[str, None]


def _served_certificates(target_run: TargetRun) -> Iterator[_Served]:
    """Every served certificate except roots, with the agents that were served it."""
    seen: dict[str, _Served] = {}
    for row in target_run.observation.rows_with_chain:
        for position, der in enumerate(row.address.chain):
            try:
                cert = summarize(der)
            except CertificateParseError:
                continue
            if position > 0 and cert.is_self_issued:
                continue  # a root: its expiry is the trust store's business, not the server's
            served = seen.setdefault(cert.sha256, _Served(cert, position == 0, {}))
            served.leaf = served.leaf or position == 0
            served.agents[row.agent] = None
    yield from sorted(seen.values(), key=lambda s: (s.cert.not_after, s.cert.sha256))


def _expiry_alerts(run: ReportRun, warning_days: float, critical_days: float) -> Iterator[Alert]:
    at = run.started_at
    for target_run in run.targets:
        for served in _served_certificates(target_run):
            left = served.cert.not_after - at
            if left < timedelta(0) or served.cert.not_before > at:
                continue  # expired or not yet valid: the diagnosis's own findings speak for these
            # Only the tightest threshold crossed: a certificate first seen at 5 days left gets the 7-day
            # alert, not the 30-day one as well.
            if left <= timedelta(days=critical_days):
                threshold, severity = critical_days, Severity.CRITICAL
            elif left <= timedelta(days=warning_days):
                threshold, severity = warning_days, Severity.WARNING
            else:
                continue
            yield _expiry_alert(run, target_run.target, served, left, threshold, severity)


def _expiry_alert(
    run: ReportRun, target: str, served: _Served, left: timedelta, threshold: float, severity: Severity
) -> Alert:
    cert = served.cert
    role = "leaf" if served.leaf else "intermediate"
    agents = tuple(served.agents)
    when = f"{cert.not_after:%Y-%m-%d %H:%M} UTC"
    fix = (
        "Renew it and deploy the new certificate on every server behind the name before then; if renewal is "
        "automated (ACME client, cert-manager), find out why it has not run."
        if served.leaf
        else "Get the CA's successor intermediate, serve it instead, and make sure the leaf is reissued under it."
    )
    text = (
        f"The {role} certificate {cert_name(cert)} (sha256 {cert.short_fingerprint}, issuer "
        f"'{common_name(cert.issuer)}') served for {target} expires {when}, in {span(left)}, within the "
        f"{threshold:g}-day threshold. Served to {name_list(agents)}. Fix: {fix}"
    )
    return Alert(
        key=expiry_key(run.report, target, cert.sha256, threshold),
        kind=AlertKind.EXPIRY,
        severity=severity,
        title=f"Certificate expires in {span(left)}: {target}",
        text=_one_paragraph(text),
        report=run.report,
        target=target,
        agents=agents,
        cause=Cause.EXPIRING_SOON.value,
        observed_at=run.started_at,
    )


def _resolved_alerts(run: ReportRun, previous: ReportRun, changes: Sequence[Change]) -> Iterator[Alert]:
    current = {t.target: t for t in run.targets}
    resolved_changes = {
        (c.target, c.cause, c.before): c for c in changes if c.kind is ChangeKind.FINDING_RESOLVED and c.since
    }
    for before in previous.targets:
        now = current.get(before.target)
        if now is None:
            continue  # not probed this time (abandoned run, or no longer configured): nothing is known
        current_keys = {key_of(run.report, now.target, f) for f in now.findings}
        answered = {o.vantage.name for o in now.observation.answered}
        for finding in before.findings:
            key = key_of(run.report, before.target, finding)
            if key in current_keys or not set(finding.agents) <= answered:
                continue
            successor = any(f.cause is finding.cause for f in now.findings)
            yield _resolved_alert(run, before.target, finding, key, successor, resolved_changes)


def _resolved_alert(
    run: ReportRun,
    target: str,
    finding: Finding,
    key: str,
    successor: bool,
    resolved_changes: dict[tuple[str, str, str], Change],
) -> Alert:
    change = resolved_changes.get((target, finding.cause.value, finding.summary))
    gone = change.since if change is not None and change.since is not None else run.started_at
    checked = f"checked from {name_list(finding.agents)}" if finding.agents else "checked"
    text = f"No longer seen since {gone:%Y-%m-%d %H:%M} UTC ({checked}): {finding.summary.strip()}"
    if successor:
        text += " The same cause is still present with other agents or addresses; it is announced on its own."
    return Alert(
        key=key,
        kind=AlertKind.RESOLVED,
        severity=finding.severity,
        title=f"Resolved: {cause_title(finding.cause)}: {target}",
        text=_one_paragraph(text),
        report=run.report,
        target=target,
        agents=finding.agents,
        cause=finding.cause.value,
        observed_at=run.started_at,
    )
