"""Validity windows judged at true time: expired, not yet valid and expiring-soon certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import NOW_NS, address, observe, outcome, request, silent
from tlsfleet.agent.model import Verdict
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.validity import findings
from tlsfleet.coordinator.diagnosis.wording import span
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

NAME = "api.example.test"
NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)


def _run(obs: Observation, **overrides: float) -> list[Finding]:
    return list(findings(obs, DiagnosisSettings.for_request(obs.request, **overrides)))


def _of(found: list[Finding], cause: Cause) -> list[Finding]:
    return [f for f in found if f.cause is cause]


def test_expired_leaf_served_everywhere_is_critical_and_named(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_before=NOW - timedelta(days=93), not_after=NOW - timedelta(days=3, hours=2))
    chain = (leaf.der, pki.intermediate.der)
    obs = observe(
        outcome(
            "a",
            [address("10.0.0.1", chain, native=Verdict.EXPIRED), address("10.0.0.2", chain, native=Verdict.EXPIRED)],
        ),
        outcome(
            "b",
            [address("10.0.0.1", chain, native=Verdict.EXPIRED), address("10.0.0.2", chain, native=Verdict.EXPIRED)],
        ),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRED
    assert finding.severity is Severity.CRITICAL
    assert f"CN={NAME}" in finding.summary and "leaf" in finding.summary
    assert "3 days ago" in finding.summary
    assert leaf.cert.not_valid_after_utc.strftime("%Y-%m-%d") in finding.summary
    assert finding.agents == ("a", "b")
    assert finding.addresses == ("10.0.0.1", "10.0.0.2")
    not_after = next(e for e in finding.evidence if e.field == "notAfter")
    assert {where for where, _ in not_after.values} == {"a@10.0.0.1", "a@10.0.0.2", "b@10.0.0.1", "b@10.0.0.2"}
    assert "Renew" in finding.fix
    assert any(str(int(NOW.timestamp())) in cmd for cmd in finding.reproduce)


def test_expired_on_some_addresses_only_is_not_a_server_wide_expiry(pki: LabPKI) -> None:
    old = pki.issue_leaf(NAME, not_before=NOW - timedelta(days=93), not_after=NOW - timedelta(days=3))
    new = pki.issue_leaf(NAME)
    obs = observe(
        outcome(
            "a",
            [
                address("10.0.0.1", (old.der, pki.intermediate.der), native=Verdict.EXPIRED),
                address("10.0.0.2", (new.der, pki.intermediate.der)),
            ],
        )
    )
    assert _of(_run(obs), Cause.EXPIRED) == []


def test_skewed_vantage_does_not_turn_a_valid_certificate_into_expired(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(
        outcome("good", [address("10.0.0.1", chain)]),
        # Its clock is a year ahead: everything it judges at its own time is expired, at true time it is fine.
        outcome(
            "ahead",
            [address("10.0.0.1", chain, native=Verdict.EXPIRED, stores={"system": (Verdict.EXPIRED, Verdict.OK)})],
            offset_ms=365 * 86400e3,
        ),
    )
    assert _run(obs) == []


def test_expired_certificate_is_server_side_even_when_a_slow_clock_accepts_it(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_before=NOW - timedelta(days=93), not_after=NOW - timedelta(days=2))
    chain = (leaf.der, pki.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", chain, native=Verdict.EXPIRED)]),
        outcome(
            "behind",
            [address("10.0.0.1", chain, native=Verdict.OK, stores={"system": (Verdict.OK, Verdict.EXPIRED)})],
            offset_ms=-5 * 86400e3,
        ),
    )
    [finding] = _of(_run(obs), Cause.EXPIRED)
    assert finding.severity is Severity.CRITICAL
    assert finding.agents == ("a", "behind")
    native = next(e for e in finding.evidence if e.field.startswith("native verdict"))
    assert ("behind@10.0.0.1", "ok") in native.values


def test_expired_intermediate_is_named(pki: LabPKI) -> None:
    old = pki.issue_intermediate("Acme Old Intermediate CA", not_after=NOW - timedelta(days=10))
    leaf = pki.issue_leaf(NAME, issuer=old)
    chain = (leaf.der, old.der)
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.EXPIRED)]))
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRED
    assert finding.severity is Severity.CRITICAL
    assert "intermediate" in finding.summary and "Acme Old Intermediate CA" in finding.summary
    assert "10 days ago" in finding.summary
    assert "intermediate" in finding.fix


def test_expired_extra_certificate_that_stores_route_around_is_a_warning(pki: LabPKI) -> None:
    stale = pki.issue_intermediate("Acme Stale Cross-sign", not_after=NOW - timedelta(days=30))
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der, stale.der)
    obs = observe(outcome("a", [address("10.0.0.1", chain)]), outcome("b", [address("10.0.0.1", chain)]))
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRED
    assert finding.severity is Severity.WARNING
    assert "another path" in finding.summary


def test_not_yet_valid_leaf_everywhere(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_before=NOW + timedelta(days=2, hours=1), not_after=NOW + timedelta(days=92))
    chain = (leaf.der, pki.intermediate.der)
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.NOT_YET_VALID)]))
    [finding] = _run(obs)
    assert finding.cause is Cause.NOT_YET_VALID
    assert finding.severity is Severity.CRITICAL
    assert "in 2 days" in finding.summary and "notBefore" in finding.summary
    assert _of(_run(obs), Cause.EXPIRING_SOON) == []


def test_expiring_within_warning_days_is_a_warning_listing_who_is_served_it(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=20, hours=1))
    chain = (leaf.der, pki.intermediate.der)
    obs = observe(outcome("a", [address("10.0.0.1", chain)]), outcome("b", [address("10.0.0.1", chain)]), silent("c"))
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRING_SOON
    assert finding.severity is Severity.WARNING
    assert "expires in 20 days" in finding.summary and f"CN={NAME}" in finding.summary
    assert finding.agents == ("a", "b")
    assert "all 2 vantages that got a chain are served it" in finding.summary


def test_expiring_within_critical_days_is_critical(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=5))
    obs = observe(outcome("a", [address("10.0.0.1", (leaf.der, pki.intermediate.der))]))
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRING_SOON
    assert finding.severity is Severity.CRITICAL


def test_expiring_soon_is_one_finding_per_certificate(pki: LabPKI) -> None:
    first = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=10))
    second = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=25))
    fresh = pki.issue_leaf(NAME)
    obs = observe(
        outcome("a", [address("10.0.0.1", (first.der, pki.intermediate.der))]),
        outcome("b", [address("10.0.0.1", (first.der, pki.intermediate.der))]),
        outcome("c", [address("10.0.0.2", (second.der, pki.intermediate.der))]),
        outcome("d", [address("10.0.0.3", (fresh.der, pki.intermediate.der))]),
    )
    found = _of(_run(obs), Cause.EXPIRING_SOON)
    assert [f.agents for f in found] == [("a", "b"), ("c",)]
    assert found[0].addresses == ("10.0.0.1",)
    assert "2 of 4 vantages" in found[0].summary
    assert "1 of 4 vantages" in found[1].summary


def test_expiring_intermediate_is_reported(pki: LabPKI) -> None:
    inter = pki.issue_intermediate("Acme Short Intermediate CA", not_after=NOW + timedelta(days=12))
    leaf = pki.issue_leaf(NAME, issuer=inter)
    obs = observe(outcome("a", [address("10.0.0.1", (leaf.der, inter.der))]))
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRING_SOON
    assert "intermediate" in finding.summary and "Acme Short Intermediate CA" in finding.summary
    assert "successor" in finding.fix


def test_expired_certificate_is_not_also_expiring_soon(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(hours=5))
    obs = observe(outcome("a", [address("10.0.0.1", (leaf.der, pki.intermediate.der), native=Verdict.EXPIRED)]))
    found = _run(obs)
    assert [f.cause for f in found] == [Cause.EXPIRED]
    assert "5 hours ago" in found[0].summary


def test_thresholds_come_from_settings(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=20))
    obs = observe(outcome("a", [address("10.0.0.1", (leaf.der, pki.intermediate.der))]))
    assert _run(obs, expiry_warning_days=10, expiry_critical_days=3) == []
    [finding] = _run(obs, expiry_warning_days=60, expiry_critical_days=21)
    assert finding.severity is Severity.CRITICAL


def test_healthy_observation_yields_nothing(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(*(outcome(n, [address("10.0.0.1", chain), address("10.0.0.2", chain)]) for n in ("a", "b", "c")))
    assert _run(obs) == []


def test_only_answering_vantages_are_named(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_before=NOW - timedelta(days=93), not_after=NOW - timedelta(days=1))
    obs = observe(
        outcome("a", [address("10.0.0.1", (leaf.der, pki.intermediate.der), native=Verdict.EXPIRED)]),
        silent("gone"),
    )
    [finding] = _run(obs)
    assert finding.agents == ("a",)
    assert "gone" not in finding.summary


def test_nothing_without_a_chain() -> None:
    obs = observe(outcome("a", [address("10.0.0.1", ())]), silent("b"))
    assert _run(obs) == []


def test_reference_time_not_agent_time_decides(pki: LabPKI) -> None:
    # Judged a week later, the same 20-day certificate is critical: only settings.reference_time moves.
    leaf = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=20))
    obs = observe(outcome("a", [address("10.0.0.1", (leaf.der, pki.intermediate.der))], req=request()))
    later = DiagnosisSettings(reference_time=NOW + timedelta(days=15))
    [finding] = list(findings(obs, later))
    assert finding.severity is Severity.CRITICAL
    assert "5 days" in finding.summary


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=40), "40 seconds"),
        (timedelta(minutes=5), "5 minutes"),
        (timedelta(hours=3), "3 hours"),
        (timedelta(days=12, hours=5), "12 days"),
        (timedelta(days=-1, hours=-1), "25 hours"),
    ],
)
def test_span_reads_like_a_person(delta: timedelta, text: str) -> None:
    assert span(delta) == text


def test_expired_certificate_a_proxy_resigns_on_one_host_is_still_the_servers_expiry(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=1))
    expired = (leaf.der, pki.intermediate.der)
    proxy = LabPKI("Corp Proxy")
    resigned = (proxy.issue_leaf(NAME).der, proxy.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", expired, native=Verdict.EXPIRED)]),
        outcome("b", [address("10.0.0.1", expired, native=Verdict.EXPIRED)]),
        outcome("proxied", [address("10.0.0.1", resigned)]),
    )
    [finding] = _of(_run(obs), Cause.EXPIRED)
    assert finding.severity is Severity.CRITICAL
    assert finding.agents == ("a", "b")
    assert f"(notAfter {leaf.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)" in finding.summary
    assert "all 2 vantages that got the server's chain are served it" in finding.summary
    assert "proxied gets a chain re-signed by another issuer on its path instead" in finding.summary
    assert finding.fix.startswith(f"Renew the certificate for {NAME}")


def test_expiring_soon_behind_one_hosts_proxy_is_still_the_servers_for_everyone_else(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=4))
    expiring = (leaf.der, pki.intermediate.der)
    proxy = LabPKI("Corp Proxy")
    resigned = (proxy.issue_leaf(NAME).der, proxy.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", expiring)]),
        outcome("b", [address("10.0.0.1", expiring)]),
        outcome("proxied", [address("10.0.0.1", resigned)]),
    )
    [finding] = _of(_run(obs), Cause.EXPIRING_SOON)
    assert finding.agents == ("a", "b")
    assert "all 2 vantages that got the server's chain are served it" in finding.summary
    assert "proxied gets a chain re-signed by another issuer on its path instead" in finding.summary
    assert "the others get another certificate" not in finding.summary


def test_expiring_on_one_backend_names_that_address_not_every_vantage(pki: LabPKI) -> None:
    stale = pki.issue_leaf(NAME, not_after=NOW + timedelta(days=4))
    fresh = pki.issue_leaf(NAME)
    rows = [
        address("10.0.0.1", (fresh.der, pki.intermediate.der)),
        address("10.0.0.2", (stale.der, pki.intermediate.der)),
    ]
    obs = observe(outcome("a", rows), outcome("b", rows))
    [finding] = _run(obs)
    assert finding.cause is Cause.EXPIRING_SOON
    assert finding.addresses == ("10.0.0.2",)
    assert "vantages that got a chain are served it" not in finding.summary
    assert "10.0.0.2 serves it (1 of 2 addresses; 10.0.0.1 serves another certificate) to all 2 vantages" in (
        finding.summary
    )


def test_expiring_where_vantages_and_addresses_cross_names_the_pairs(pki: LabPKI) -> None:
    stale = (pki.issue_leaf(NAME, not_after=NOW + timedelta(days=4)).der, pki.intermediate.der)
    fresh = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", stale), address("10.0.0.2", fresh)]),
        outcome("b", [address("10.0.0.1", fresh), address("10.0.0.2", stale)]),
    )
    [finding] = _run(obs)
    assert "it is served on a@10.0.0.1 and b@10.0.0.2 (2 of 4 vantage@address pairs;" in finding.summary
