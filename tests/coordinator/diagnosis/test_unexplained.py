"""The engine's guard: an address whose OpenSSL clients fail is never left without a finding, whatever the
rules know. Tested with the rules taken away, so that every failure is one no rule explains."""

from __future__ import annotations

import pytest

from tests.judged import NAME, der, judged, store
from tests.outcomes import observe
from tlsfleet.coordinator.diagnosis import engine
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI

PKI = LabPKI("Guard")
ELSEWHERE = LabPKI("Elsewhere")
CHAIN = (der(PKI.issue_leaf(NAME).cert), PKI.intermediate.der)


def _trusting(agent: str, ip: str = "10.0.0.1"):  # -> ProbeOutcome
    return judged(agent, CHAIN, [store("system", [PKI.root.cert])], ip=ip)


def _untrusting(agent: str, ip: str = "10.0.0.1"):  # -> ProbeOutcome
    return judged(agent, CHAIN, [store("system", [ELSEWHERE.root.cert])], ip=ip)


def test_a_failure_no_rule_explains_is_critical_and_names_what_the_agent_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "RULES", ())
    [finding] = engine.diagnose(observe(_trusting("ok-1"), _untrusting("edge-2", ip="10.0.0.2")))
    assert finding.cause is Cause.UNTRUSTED_CHAIN and finding.severity is Severity.CRITICAL
    assert finding.agents == ("edge-2",) and finding.addresses == ("10.0.0.2",)
    assert "(unknown_issuer, verify code 20)" in finding.summary
    assert finding.reproduce[0].startswith("openssl s_client -connect 10.0.0.2:443")


def test_a_healthy_fleet_gets_nothing_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "RULES", ())
    assert engine.diagnose(observe(_trusting("ok-1"), _trusting("ok-2", ip="10.0.0.2"))) == ()


def test_a_failure_a_rule_named_at_warning_is_left_to_that_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    def naming(observation, settings):  # type: ignore[no-untyped-def]
        yield Finding(Cause.PRIVATE_CA_NOT_TRUSTED, Severity.WARNING, "named", agents=("edge-2",))

    monkeypatch.setattr(engine, "RULES", (naming,))
    [finding] = engine.diagnose(observe(_untrusting("edge-2")))
    assert finding.summary == "named"
