"""The CLI's all-clear ("No findings") is said only when nothing at warning or above was found and every
vantage completed and verified its handshake: findings from the real engine, printed by the real renderer."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console

from tests.coordinator.diagnosis.handshakes import IP1, broken
from tests.outcomes import address, observe, outcome
from tlsfleet.agent.model import Failure, NativeVerdict, Verdict
from tlsfleet.coordinator.cli.render import print_findings
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import Observation

ALL_CLEAR = "No findings"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf("api.example.test").der, pki.intermediate.der)


def _printed(findings: tuple[Finding, ...] | list[Finding]) -> str:
    out = io.StringIO()
    print_findings(Console(file=out, width=200), findings)
    return out.getvalue()


def _both(*addresses: object) -> Observation:
    return observe(*(outcome(agent, list(addresses)) for agent in ("a", "b")))  # type: ignore[arg-type]


def test_a_healthy_fleet_is_all_clear(chain: tuple[bytes, bytes]) -> None:
    assert _printed(diagnose(_both(address(IP1, chain)))).startswith(ALL_CLEAR)


def test_an_info_note_alone_is_listed_under_no_findings_at_warning_or_above() -> None:
    note = Finding(Cause.UNRELATED_CERTIFICATE, Severity.INFO, "a stale certificate is served too", ("a",))
    text = _printed([note])
    assert text.startswith("No findings at warning or above; 1 note") and "a stale certificate is served too" in text
    assert "every vantage that answered agrees and verifies" not in text


@pytest.mark.parametrize(
    ("verdict", "code"),
    [(Verdict.REVOKED, 23), (Verdict.OTHER, 50), (Verdict.INVALID, 68)],
    ids=["revoked", "unclassified", "weak-digest"],
)
def test_a_chain_every_vantage_rejects_is_never_all_clear(
    chain: tuple[bytes, bytes], verdict: Verdict, code: int
) -> None:
    rejected = replace(address(IP1, chain, native=verdict), native=NativeVerdict(verdict, verify_code=code))
    findings = diagnose(_both(rejected))
    assert any(f.severity >= Severity.WARNING for f in findings)
    assert ALL_CLEAR not in _printed(findings)


def test_a_handshake_that_never_completes_is_never_all_clear() -> None:
    findings = diagnose(_both(broken(IP1, Failure.HANDSHAKE_TIMEOUT, error="no complete handshake within 3.6 s")))
    assert ALL_CLEAR not in _printed(findings)
