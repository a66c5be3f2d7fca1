"""The reports' summary and status never show a green "none" while a handshake failed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.coordinator.diagnosis.handshakes import IP1, broken
from tests.outcomes import address, observe, outcome, request
from tlsfleet.agent.model import Failure
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.service.report_model import ReportRun, TargetRun
from tlsfleet.coordinator.service.reports import render_html, render_markdown
from tlsfleet.coordinator.service.reports.json_report import failed_handshakes, summarize_run

STARTED = datetime(2025, 3, 14, 9, 30, 0, tzinfo=UTC)
STALLED = broken(IP1, Failure.HANDSHAKE_TIMEOUT, error="no complete handshake within 3.6 s")


def _run(*targets: TargetRun) -> ReportRun:
    return ReportRun("edge", STARTED, STARTED + timedelta(seconds=4), targets=targets, agents=(), run_id=7)


def _stalled_target(*, with_findings: bool) -> TargetRun:
    observation = observe(outcome("a", [STALLED]), outcome("b", [STALLED]), req=request("api.example.test"))
    findings = diagnose(observation) if with_findings else ()
    return TargetRun("api.example.test:443", observation, tuple(findings), duration_ms=3700.0)


def test_a_stalled_target_is_counted_as_failed_handshakes() -> None:
    target = _stalled_target(with_findings=False)
    assert failed_handshakes(target) == (f"a@{IP1}", f"b@{IP1}")
    summary = summarize_run(_run(target), [])
    assert summary.failed_handshakes == (("api.example.test:443", f"a@{IP1}"), ("api.example.test:443", f"b@{IP1}"))


def test_html_status_is_never_a_green_none_while_a_handshake_failed() -> None:
    # Even with no finding at all (a rule that said nothing), the page says a handshake failed.
    page = render_html(_run(_stalled_target(with_findings=False)), [])
    assert '<span class="badge ok">no findings</span>' not in page
    assert '<span class="badge ok">none</span>' not in page
    assert page.count('<span class="badge critical">2 failed handshakes</span>') == 3  # header, overview, target
    assert re.search(r'<div class="card critical"><div class="num">2</div><div class="lbl">failed handshakes', page)


def test_html_status_with_the_findings_of_a_stall_is_critical() -> None:
    page = render_html(_run(_stalled_target(with_findings=True)), [])
    assert '<span class="badge critical">worst: critical</span>' in page
    assert "handshake_incomplete" in page and "no ServerHello within 3.6 s" in page


def test_a_healthy_target_stays_green() -> None:
    pki = LabPKI("Status")
    chain = (pki.issue_leaf("api.example.test").der, pki.intermediate.der)
    observation = observe(outcome("a", [address(IP1, chain)]), req=request("api.example.test"))
    target = TargetRun("api.example.test:443", observation, (), duration_ms=10.0)
    assert failed_handshakes(target) == ()
    page = render_html(_run(target), [])
    assert '<span class="badge ok">no findings</span>' in page and '<span class="badge ok">none</span>' in page
    assert re.search(r'<div class="card ok"><div class="num">0</div><div class="lbl">failed handshakes', page)


def _overview_status(markdown: str) -> str:
    [row] = [line for line in markdown.splitlines() if line.startswith("| api.example.test:443 |")]
    return row.split("|")[2].strip()


def test_markdown_says_none_only_for_a_target_without_failures() -> None:
    stalled = render_markdown(_run(_stalled_target(with_findings=False)), [])
    assert _overview_status(stalled) == "2 failed handshakes"
    assert "- Failed handshakes: 2" in stalled
    assert f"No findings, but 2 handshakes failed: a@{IP1}, b@{IP1}." in stalled
    assert _overview_status(render_markdown(_run(_stalled_target(with_findings=True)), [])) == "CRITICAL"
    pki = LabPKI("Status")
    chain = (pki.issue_leaf("api.example.test").der, pki.intermediate.der)
    healthy = observe(outcome("a", [address(IP1, chain)]), req=request("api.example.test"))
    page = render_markdown(_run(TargetRun("api.example.test:443", healthy, (), duration_ms=10.0)), [])
    assert _overview_status(page) == "none" and "Failed handshakes" not in page
    info = Finding(Cause.UNRELATED_CERTIFICATE, Severity.INFO, "a stale certificate is served too", ("a",))
    page = render_markdown(_run(TargetRun("api.example.test:443", healthy, (info,), duration_ms=10.0)), [])
    assert _overview_status(page) == "INFO"
