"""The reports' summary and status never show a green "none" while a handshake failed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tests.coordinator.diagnosis.handshakes import IP1, broken
from tests.outcomes import address, observe, outcome, request
from tlsfleet.agent.model import Failure
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.service.report_model import ReportRun, TargetRun
from tlsfleet.coordinator.service.reports import render_html
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
