"""What a report run announces: new findings once, expiry thresholds once per certificate, resolutions once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tests.coordinator.service.history.backends import HistoryDatabase
from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageState
from tlsfleet.coordinator.service.alerts import Alert, AlertKind, expiry_key, plan_alerts
from tlsfleet.coordinator.service.changes import changes_between
from tlsfleet.coordinator.service.history.store import key_of
from tlsfleet.coordinator.service.report_model import AgentSnapshot, Change, ChangeKind, ReportRun, TargetRun

REPORT = "prod-edge"
TARGET = "api.example.test:443"


class Announced:
    """The caller's side of the contract: keys open after delivery, closed by a delivered resolution."""

    def __init__(self) -> None:
        self.open: set[str] = set()

    def __call__(self, key: str) -> bool:
        return key in self.open

    def record(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            if alert.kind is AlertKind.RESOLVED:
                self.open.discard(alert.key)
            else:
                self.open.add(alert.key)


def untrusted(agents: Sequence[str] = ("a1", "a2"), severity: Severity = Severity.CRITICAL) -> Finding:
    return Finding(
        cause=Cause.PRIVATE_CA_NOT_TRUSTED,
        severity=severity,
        summary="The chain leads to 'Corp Root CA', which the system store on a1 and a2 lacks.",
        agents=tuple(agents),
        addresses=("10.0.0.5",),
        fix="Add 'Corp Root CA' to the system trust store on those hosts and run update-ca-certificates.",
        reproduce=("openssl s_client -connect 10.0.0.5:443 -servername api.example.test",),
    )


def target_run(
    findings: Sequence[Finding] = (),
    *,
    chain: Sequence[bytes] = (),
    outcomes: Sequence[ProbeOutcome] | None = None,
    target: str = TARGET,
) -> TargetRun:
    if outcomes is None:
        outcomes = [outcome(name, [address("10.0.0.5", chain, native=Verdict.OK)]) for name in ("a1", "a2", "a3")]
    return TargetRun(
        target=target, observation=observe(*outcomes, req=request()), findings=tuple(findings), duration_ms=3
    )


def report_run(*targets: TargetRun, at: datetime | None = None, abandoned: bool = False) -> ReportRun:
    at = at or datetime.now(UTC)
    agents = tuple(AgentSnapshot(name=n, address=f"{n}.test:7443", labels=(), state=VantageState.OK) for n in ("a1",))
    return ReportRun(
        report=REPORT,
        started_at=at,
        finished_at=at + timedelta(seconds=2),
        targets=targets,
        agents=agents,
        abandoned=abandoned,
    )


def plan(run: ReportRun, announced: Announced, *, previous: ReportRun | None = None, **kw: object) -> list[Alert]:
    options: dict[str, object] = {"min_severity": Severity.WARNING, **kw}
    return plan_alerts(run, [], already_announced=announced, previous=previous, **options)  # type: ignore[arg-type]


def test_a_new_finding_at_or_above_the_minimum_is_announced_with_what_where_and_fix() -> None:
    finding = untrusted()
    run = report_run(target_run([finding]))
    alerts = plan(run, Announced(), min_severity=Severity.CRITICAL)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind is AlertKind.FINDING
    assert alert.key == key_of(REPORT, TARGET, finding)
    assert alert.severity is Severity.CRITICAL
    assert alert.target == TARGET and alert.report == REPORT and alert.agents == ("a1", "a2")
    assert alert.cause == "private_ca_not_trusted"
    assert TARGET in alert.title and "Private CA" in alert.title
    assert "Corp Root CA" in alert.text and "Fix: Add 'Corp Root CA'" in alert.text
    assert "a1 and a2" in alert.text and "10.0.0.5" in alert.text
    assert "\n" not in alert.text


def test_findings_below_the_minimum_severity_are_not_announced() -> None:
    run = report_run(target_run([untrusted(severity=Severity.WARNING)]))
    assert plan(run, Announced(), min_severity=Severity.CRITICAL) == []
    assert len(plan(run, Announced(), min_severity=Severity.WARNING)) == 1


def test_a_finding_is_announced_exactly_once_while_it_persists() -> None:
    announced = Announced()
    first = report_run(target_run([untrusted()]))
    alerts = plan(first, announced)
    assert [a.kind for a in alerts] == [AlertKind.FINDING]
    announced.record(alerts)
    second = report_run(target_run([untrusted(agents=("a2", "a1"))]), at=first.started_at + timedelta(minutes=15))
    assert plan(second, announced, previous=first) == []
    third = report_run(target_run([untrusted()]), at=second.started_at + timedelta(minutes=15))
    assert plan(third, announced, previous=second) == []


def test_an_undelivered_alert_is_planned_again_next_run() -> None:
    announced = Announced()
    first = report_run(target_run([untrusted()]))
    assert len(plan(first, announced)) == 1  # not recorded: the webhook failed
    second = report_run(target_run([untrusted()]), at=first.started_at + timedelta(minutes=15))
    assert len(plan(second, announced, previous=first)) == 1


def test_finding_key_is_order_free_and_ignores_wording_but_not_identity() -> None:
    base = untrusted(("a1", "a2"))
    same = Finding(
        cause=base.cause,
        severity=Severity.WARNING,
        summary="reworded",
        agents=("a2", "a1"),
        addresses=base.addresses,
    )
    assert key_of(REPORT, TARGET, base) == key_of(REPORT, TARGET, same)
    assert key_of(REPORT, TARGET, base) != key_of(REPORT, TARGET, untrusted(("a1", "a2", "a3")))
    assert key_of(REPORT, TARGET, base) != key_of("other", TARGET, base)
    assert key_of(REPORT, TARGET, base) != key_of(REPORT, "login.example.test:443", base)
    clock = Finding(
        cause=Cause.CLOCK_SKEW, severity=base.severity, summary="", agents=base.agents, addresses=base.addresses
    )
    assert key_of(REPORT, TARGET, base) != key_of(REPORT, TARGET, clock)
    # The history store's key: announcements recorded there are the ones asked about here.
    assert key_of(REPORT, TARGET, base) == key_of(REPORT, TARGET, base)
    assert not key_of(REPORT, TARGET, base).startswith("expiry:")


def test_a_finding_that_goes_away_is_resolved_exactly_once_and_announced_again_if_it_returns() -> None:
    announced = Announced()
    t0 = datetime.now(UTC)
    first = report_run(target_run([untrusted()]), at=t0)
    announced.record(plan(first, announced))

    second = report_run(target_run([]), at=t0 + timedelta(minutes=15))
    gone = t0 + timedelta(minutes=10)  # first seen gone by a run in between, say
    changes = [
        Change(
            kind=ChangeKind.FINDING_RESOLVED,
            summary="Resolved on api.example.test:443 (critical, private ca not trusted): ...",
            target=TARGET,
            before=untrusted().summary,
            since=gone,
            cause=Cause.PRIVATE_CA_NOT_TRUSTED.value,
            severity="critical",
        )
    ]
    alerts = plan_alerts(second, changes, min_severity=Severity.CRITICAL, already_announced=announced, previous=first)
    assert len(alerts) == 1
    resolved = alerts[0]
    assert resolved.kind is AlertKind.RESOLVED
    assert resolved.key == key_of(REPORT, TARGET, untrusted())
    assert resolved.title.startswith("Resolved:")
    assert f"No longer seen since {gone:%Y-%m-%d %H:%M} UTC (checked from a1 and a2)" in resolved.text
    assert "Corp Root CA" in resolved.text
    announced.record(alerts)

    # The same pair of runs planned again (a retried pipeline step) resolves nothing twice.
    assert plan(second, announced, previous=first) == []
    third = report_run(target_run([]), at=t0 + timedelta(minutes=30))
    assert plan(third, announced, previous=second) == []

    back = report_run(target_run([untrusted()]), at=t0 + timedelta(minutes=45))
    again = plan(back, announced, previous=third)
    assert [a.kind for a in again] == [AlertKind.FINDING]


def test_a_finding_is_not_resolved_while_an_agent_that_saw_it_is_silent() -> None:
    announced = Announced()
    first = report_run(target_run([untrusted()]))
    announced.record(plan(first, announced))
    outcomes = [
        outcome("a1", [address("10.0.0.5", (), native=Verdict.OK)]),
        silent("a2"),
        outcome("a3", [address("10.0.0.5", (), native=Verdict.OK)]),
    ]
    second = report_run(target_run([], outcomes=outcomes), at=first.started_at + timedelta(minutes=15))
    assert plan(second, announced, previous=first) == []


def test_an_unannounced_finding_that_goes_away_raises_no_resolution() -> None:
    announced = Announced()
    first = report_run(target_run([untrusted(severity=Severity.WARNING)]))
    announced.record(plan(first, announced, min_severity=Severity.CRITICAL))
    second = report_run(target_run([]), at=first.started_at + timedelta(minutes=15))
    assert plan(second, announced, previous=first, min_severity=Severity.CRITICAL) == []


def test_targets_not_probed_this_run_resolve_nothing() -> None:
    announced = Announced()
    first = report_run(target_run([untrusted()]))
    announced.record(plan(first, announced))
    other = target_run([], target="login.example.test:443")
    abandoned = report_run(other, at=first.started_at + timedelta(minutes=15), abandoned=True)
    assert plan(abandoned, announced, previous=first) == []


def test_a_finding_that_widens_resolves_the_old_set_and_announces_the_new_one() -> None:
    announced = Announced()
    first = report_run(target_run([untrusted(("a1",))]))
    announced.record(plan(first, announced))
    second = report_run(target_run([untrusted(("a1", "a2"))]), at=first.started_at + timedelta(minutes=15))
    alerts = plan(second, announced, previous=first)
    assert sorted(a.kind.value for a in alerts) == ["finding", "resolved"]
    resolved = next(a for a in alerts if a.kind is AlertKind.RESOLVED)
    assert "still present with other agents" in resolved.text


def test_expiry_warning_then_critical_once_each(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    leaf = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=20))
    chain = (leaf.der, pki.intermediate.der)
    announced = Announced()

    first = report_run(target_run(chain=chain), at=t0)
    alerts = plan(first, announced)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind is AlertKind.EXPIRY and alert.severity is Severity.WARNING
    assert alert.key == expiry_key(REPORT, TARGET, fingerprint(leaf.der), 30)
    assert alert.agents == ("a1", "a2", "a3")
    assert "20 days" in alert.text and "30-day threshold" in alert.text and "leaf certificate" in alert.text
    announced.record(alerts)

    assert plan(report_run(target_run(chain=chain), at=t0 + timedelta(days=1)), announced, previous=first) == []

    late = report_run(target_run(chain=chain), at=t0 + timedelta(days=14))
    alerts = plan(late, announced, previous=first)
    assert [(a.kind, a.severity) for a in alerts] == [(AlertKind.EXPIRY, Severity.CRITICAL)]
    assert "7-day threshold" in alerts[0].text
    announced.record(alerts)
    assert plan(report_run(target_run(chain=chain), at=t0 + timedelta(days=15)), announced, previous=late) == []


def test_a_certificate_first_seen_close_to_expiry_gets_only_the_tightest_threshold(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    leaf = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=5))
    alerts = plan(report_run(target_run(chain=(leaf.der, pki.intermediate.der)), at=t0), Announced())
    assert [(a.kind, a.severity) for a in alerts] == [(AlertKind.EXPIRY, Severity.CRITICAL)]


def test_expiry_warnings_respect_the_minimum_severity(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    leaf = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=20))
    run = report_run(target_run(chain=(leaf.der, pki.intermediate.der)), at=t0)
    assert plan(run, Announced(), min_severity=Severity.CRITICAL) == []


def test_custom_thresholds_fresh_and_expired_certificates(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    fresh = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=80))
    assert plan(report_run(target_run(chain=(fresh.der,)), at=t0), Announced()) == []
    alerts = plan(
        report_run(target_run(chain=(fresh.der,)), at=t0), Announced(), expiry_warning_days=90, expiry_critical_days=10
    )
    assert [a.severity for a in alerts] == [Severity.WARNING]
    assert "90-day threshold" in alerts[0].text
    expired = pki.issue_leaf("api.example.test", not_before=t0 - timedelta(days=30), not_after=t0 - timedelta(days=1))
    assert plan(report_run(target_run(chain=(expired.der,)), at=t0), Announced()) == []


def test_an_expiring_intermediate_is_announced_as_such_and_a_renewed_leaf_is_a_new_certificate(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    short = pki.issue_intermediate("Short-lived Intermediate CA", not_after=t0 + timedelta(days=3))
    leaf = pki.issue_leaf("api.example.test", issuer=short, not_after=t0 + timedelta(days=2))
    alerts = plan(report_run(target_run(chain=(leaf.der, short.der, pki.root.der)), at=t0), Announced())
    texts = sorted(a.text.split(" certificate ")[0] for a in alerts)
    assert texts == ["The intermediate", "The leaf"]  # and no alert for the served root
    assert len({a.key for a in alerts}) == 2

    announced = Announced()
    old = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=20))
    announced.record(plan(report_run(target_run(chain=(old.der,)), at=t0), announced))
    renewed = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=25))
    assert len(plan(report_run(target_run(chain=(renewed.der,)), at=t0), announced)) == 1


def test_expiring_soon_findings_are_left_to_the_expiry_rule(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    leaf = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=5))
    finding = Finding(cause=Cause.EXPIRING_SOON, severity=Severity.CRITICAL, summary="expires", agents=("a1",))
    alerts = plan(report_run(target_run([finding], chain=(leaf.der,)), at=t0), Announced())
    assert [a.kind for a in alerts] == [AlertKind.EXPIRY]


def test_a_certificate_served_to_some_agents_names_only_those(pki: LabPKI) -> None:
    t0 = datetime.now(UTC)
    leaf = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=6))
    good = pki.issue_leaf("api.example.test", not_after=t0 + timedelta(days=80))
    outcomes = [
        outcome("a1", [address("10.0.0.5", (leaf.der,))]),
        outcome("a2", [address("10.0.0.6", (good.der,))]),
    ]
    alerts = plan(report_run(target_run(outcomes=outcomes), at=t0), Announced())
    assert [a.agents for a in alerts] == [("a1",)]


def test_thresholds_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="critical days <= warning days"):
        plan(report_run(target_run()), Announced(), expiry_warning_days=5, expiry_critical_days=10)


def test_the_history_store_and_the_change_diff_keep_the_contract(history_db: HistoryDatabase) -> None:
    """Announcements kept in the real history (SQLite, then PostgreSQL); resolutions dated by the real diff."""
    t0 = datetime.now(UTC)
    runs = [
        report_run(target_run([untrusted()]), at=t0),
        report_run(target_run([untrusted()]), at=t0 + timedelta(minutes=15)),
        report_run(target_run([]), at=t0 + timedelta(minutes=30)),
        report_run(target_run([]), at=t0 + timedelta(minutes=45)),
        report_run(target_run([untrusted()]), at=t0 + timedelta(minutes=60)),
    ]
    with history_db.open() as history:
        kinds: list[list[str]] = []
        previous: ReportRun | None = None
        for run in runs:
            history.save_run(run)
            changes = changes_between(previous, run)
            alerts = plan_alerts(
                run, changes, min_severity=Severity.CRITICAL, already_announced=history.announced, previous=previous
            )
            for alert in alerts:
                history.mark_announced(alert.key, run.started_at, resolved=alert.kind is AlertKind.RESOLVED)
            kinds.append([a.kind.value for a in alerts])
            previous = run
    assert kinds == [["finding"], [], ["resolved"], [], ["finding"]]


def test_a_previous_run_of_another_report_is_refused() -> None:
    run = report_run(target_run())
    other = ReportRun(report="other", started_at=run.started_at, finished_at=run.finished_at, targets=(), agents=())
    with pytest.raises(ValueError, match="previous run is of report 'other'"):
        plan(run, Announced(), previous=other)
