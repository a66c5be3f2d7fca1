"""Clock skew: offsets beyond tolerance, the verdicts they flip, and who gets the blame."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import NOW_NS, address, observe, outcome, request, silent
from tlsfleet.agent.model import Verdict
from tlsfleet.coordinator.diagnosis import clock
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome

DAY_MS = 86_400_000.0
NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
IP = "127.0.0.10"


def _chain(leaf: Issued, pki: LabPKI) -> tuple[bytes, bytes]:
    return (leaf.der, pki.intermediate.der)


def _run(observation: Observation, **overrides: float) -> list[Finding]:
    found = list(clock.findings(observation, DiagnosisSettings.for_request(observation.request, **overrides)))
    assert all(f.cause is Cause.CLOCK_SKEW for f in found)
    return found


def _fine(agent: str, chain: tuple[bytes, ...]) -> ProbeOutcome:
    return outcome(agent, [address(IP, chain)], offset_ms=3.0, error_ms=1.0)


def test_clock_ahead_that_expires_the_certificate_is_critical_for_that_vantage_only(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test", not_after=NOW + timedelta(days=1))
    chain = _chain(leaf, pki)
    skewed = outcome(
        "billing-1",
        [address(IP, chain, native=Verdict.EXPIRED, stores={"system": (Verdict.EXPIRED, Verdict.OK)})],
        offset_ms=2 * DAY_MS,
        error_ms=4.0,
    )
    found = _run(observe(skewed, _fine("web-1", chain), _fine("web-2", chain)))
    assert len(found) == 1
    f = found[0]
    assert f.severity is Severity.CRITICAL
    assert f.agents == ("billing-1",)
    assert f.addresses == (IP,)
    assert "billing-1's clock is 2.0 days ahead" in f.summary
    assert "the certificate 'api.example.test' expired on" in f.summary
    assert "at true time it is valid" in f.summary
    offsets = next(e for e in f.evidence if e.field.startswith("clock offset"))
    assert offsets.values == (("billing-1", "+172800000 ms ±4 ms (2.0 days ahead)"),)
    flips = next(e for e in f.evidence if e.field.startswith("verdict at host time"))
    assert flips.values == ((f"billing-1@{IP}", "system: expired / ok"),)
    assert "chronyc tracking" in f.fix and "timedatectl" in f.fix
    assert "date -u" in f.reproduce
    assert any(c.startswith(f"openssl verify -attime {NOW_NS // 10**9}") for c in f.reproduce)


def test_clock_behind_before_the_certificate_starts_is_critical(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test", not_before=NOW - timedelta(days=1))
    chain = _chain(leaf, pki)
    skewed = outcome(
        "batch-7",
        [address(IP, chain, native=Verdict.NOT_YET_VALID, stores={"certifi": (Verdict.NOT_YET_VALID, Verdict.OK)})],
        offset_ms=-3 * DAY_MS,
    )
    (f,) = _run(observe(skewed, _fine("web-1", chain)))
    assert f.severity is Severity.CRITICAL
    assert "batch-7's clock is 3.0 days behind" in f.summary
    assert "'api.example.test' is not valid until" in f.summary
    assert "certifi" in f.summary


def test_native_time_failure_explained_by_the_windows_counts_when_no_store_was_judged(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test", not_after=NOW + timedelta(days=1))
    chain = _chain(leaf, pki)
    skewed = outcome("billing-1", [address(IP, chain, native=Verdict.EXPIRED, stores={})], offset_ms=2 * DAY_MS)
    (f,) = _run(observe(skewed, _fine("web-1", chain)))
    assert f.severity is Severity.CRITICAL
    assert "expired on" in f.summary and "(stores: native)" in f.summary


def test_native_time_failure_not_explained_by_the_skew_is_not_critical(pki: LabPKI) -> None:
    # Expired at true time too: the skew does not cause it (validity's finding, not clock's).
    leaf = pki.issue_leaf("api.example.test", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1))
    chain = _chain(leaf, pki)
    skewed = outcome("billing-1", [address(IP, chain, native=Verdict.EXPIRED, stores={})], offset_ms=2 * DAY_MS)
    (f,) = _run(observe(skewed))
    assert f.severity is Severity.WARNING


def test_offset_beyond_tolerance_without_a_flip_is_a_warning(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    skewed = outcome("billing-2", [address(IP, chain)], offset_ms=-5 * 60_000.0)
    (f,) = _run(observe(skewed, _fine("web-1", chain)))
    assert f.severity is Severity.WARNING
    assert f.agents == ("billing-2",)
    assert "5.0 min behind" in f.summary
    assert "no verdict here flips" in f.summary
    assert f.addresses == ()


def test_clock_behind_on_a_host_that_also_lacks_the_root_is_critical_and_ranked_after_it(pki: LabPKI) -> None:
    # OpenSSL reports the missing root before any window, so no verdict flips; yet at the host's time the
    # certificate renewed an hour ago is not valid yet: once the root is installed, TLS still fails there.
    leaf = pki.issue_leaf("api.example.test", not_before=NOW - timedelta(hours=1))
    chain = _chain(leaf, pki)
    untrusted = (Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER)
    skewed = outcome(
        "batch-7",
        [address(IP, chain, native=Verdict.UNKNOWN_ISSUER, stores={"system": untrusted})],
        offset_ms=-2 * DAY_MS,
    )
    (f,) = _run(observe(skewed, _fine("web-1", chain)))
    assert f.severity is Severity.CRITICAL
    assert f.prediction, "the verdict the host reports is the trust one: that finding explains it first"
    assert "no verdict here flips" not in f.summary
    assert "'api.example.test' is not valid until" in f.summary
    assert "for another reason (unknown_issuer)" in f.summary
    assert f.addresses == (IP,)
    window = next(e for e in f.evidence if e.field.startswith("certificate window"))
    assert window.values[0][0] == f"batch-7@{IP}"


def test_clock_behind_on_a_host_failing_on_trust_with_the_windows_fine_is_a_warning(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test", not_before=NOW - timedelta(days=30))
    chain = _chain(leaf, pki)
    skewed = outcome("batch-7", [address(IP, chain, native=Verdict.UNKNOWN_ISSUER)], offset_ms=-2 * DAY_MS)
    (f,) = _run(observe(skewed, _fine("web-1", chain)))
    assert f.severity is Severity.WARNING
    assert "no verdict here flips" in f.summary


def test_clock_behind_that_hides_an_expired_certificate_is_a_warning_not_critical(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1))
    chain = _chain(leaf, pki)
    skewed = outcome(
        "legacy-1",
        [address(IP, chain, native=Verdict.OK, stores={"system": (Verdict.OK, Verdict.EXPIRED)})],
        offset_ms=-3 * DAY_MS,
    )
    others = outcome("web-1", [address(IP, chain, native=Verdict.EXPIRED)])
    (f,) = _run(observe(skewed, others))
    assert f.severity is Severity.WARNING
    assert "still looks valid" in f.summary and "expired on" in f.summary
    assert f.agents == ("legacy-1",)


@pytest.mark.parametrize(("offset_ms", "error_ms"), [(1_500.0, 1.0), (-1_999.0, 0.0), (2_500.0, 600.0)])
def test_no_finding_within_tolerance_including_the_error_bound(pki: LabPKI, offset_ms: float, error_ms: float) -> None:
    leaf = pki.issue_leaf("api.example.test", not_after=NOW + timedelta(seconds=1))
    chain = _chain(leaf, pki)
    # Even a flipped verdict does not make a vantage within tolerance skewed.
    near = outcome(
        "web-1",
        [address(IP, chain, native=Verdict.EXPIRED, stores={"system": (Verdict.EXPIRED, Verdict.OK)})],
        offset_ms=offset_ms,
        error_ms=error_ms,
    )
    assert _run(observe(near, _fine("web-2", chain))) == []


def test_tolerance_comes_from_settings(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    skewed = outcome("billing-2", [address(IP, chain)], offset_ms=5 * 60_000.0)
    observation = observe(skewed, _fine("web-1", chain))
    assert _run(observation, clock_tolerance_ms=10 * 60_000.0) == []
    assert len(_run(observation)) == 1


def test_healthy_fleet_and_silent_vantages_give_nothing(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    observation = observe(_fine("a", chain), _fine("b", chain), _fine("c", chain), silent("d"))
    assert _run(observation) == []


def test_each_skewed_vantage_gets_its_own_finding_and_no_other_vantage_is_named(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    observation = observe(
        outcome("a", [address(IP, chain)], offset_ms=10_000.0),
        outcome("b", [address(IP, chain)], offset_ms=-7_200_000.0),
        _fine("c", chain),
        _fine("d", chain),
    )
    found = _run(observation)
    assert sorted(f.agents for f in found) == [("a",), ("b",)]
    summaries = {f.agents[0]: f.summary for f in found}
    assert "10.0 s ahead" in summaries["a"]
    assert "2.0 h behind" in summaries["b"]
    assert not any("c" in f.agents or "d" in f.agents for f in found)


def test_every_remote_vantage_off_alike_blames_the_coordinator_once(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test", not_after=NOW + timedelta(days=1))
    chain = _chain(leaf, pki)
    flipped = {"system": (Verdict.EXPIRED, Verdict.OK)}
    local = outcome("local", [address(IP, chain)], offset_ms=0.0, error_ms=0.0)
    local = dataclasses.replace(local, vantage=dataclasses.replace(local.vantage, kind="local"))
    observation = observe(
        outcome("a", [address(IP, chain, native=Verdict.EXPIRED, stores=flipped)], offset_ms=2 * DAY_MS),
        outcome("b", [address(IP, chain, native=Verdict.EXPIRED, stores=flipped)], offset_ms=2 * DAY_MS + 800),
        outcome("c", [address(IP, chain, native=Verdict.EXPIRED, stores=flipped)], offset_ms=2 * DAY_MS - 500),
        local,
    )
    (f,) = _run(observation)
    assert f.severity is Severity.WARNING
    assert set(f.agents) == {"a", "b", "c"}
    assert "reads about 2.0 days ahead of the coordinator" in f.summary
    assert "coordinator's own clock is probably 2.0 days behind" in f.summary
    assert "tlsfleet coordinator" in f.fix


def test_fleet_behind_the_coordinator_says_the_coordinator_is_ahead(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    observation = observe(*(outcome(n, [address(IP, chain)], offset_ms=-600_000.0) for n in ("a", "b")))
    (f,) = _run(observation)
    assert "reads about 10.0 min behind the coordinator" in f.summary
    assert "probably 10.0 min ahead (or" in f.summary


@pytest.mark.parametrize(
    "offsets",
    [
        (2 * DAY_MS, -2 * DAY_MS, 2 * DAY_MS),  # not the same direction
        (2 * DAY_MS, 2 * DAY_MS, 0.0),  # one remote vantage is fine
        (2 * DAY_MS, DAY_MS, 2 * DAY_MS),  # not the same amount
    ],
)
def test_coordinator_is_not_blamed_unless_every_remote_vantage_agrees(pki: LabPKI, offsets: tuple[float, ...]) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    observation = observe(*(outcome(n, [address(IP, chain)], offset_ms=o) for n, o in zip("abc", offsets, strict=True)))
    found = _run(observation)
    assert found and all(len(f.agents) == 1 for f in found)
    assert not any("coordinator's own clock" in f.summary for f in found)


def test_a_single_remote_vantage_is_blamed_itself(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    (f,) = _run(observe(outcome("only", [address(IP, chain)], offset_ms=DAY_MS)))
    assert f.agents == ("only",) and "only's clock is 1.0 days ahead" in f.summary


def test_a_vantage_without_a_clock_estimate_is_skipped(pki: LabPKI) -> None:
    chain = _chain(pki.issue_leaf("api.example.test"), pki)
    unknown = dataclasses.replace(outcome("a", [address(IP, chain)], offset_ms=DAY_MS), clock=None)
    assert _run(observe(unknown, req=request())) == []


@pytest.mark.parametrize(
    ("offset_ms", "text"),
    [
        (850.0, "850 ms"),
        (-12_500.0, "12.5 s"),
        (300_000.0, "5.0 min"),
        (-11_520_000.0, "3.2 h"),
        (2 * DAY_MS, "2.0 days"),
    ],
)
def test_offsets_are_worded_in_the_unit_a_person_uses(offset_ms: float, text: str) -> None:
    assert clock.humane_offset(offset_ms) == text


def test_beyond_tolerance_subtracts_the_error_bound() -> None:
    settings = DiagnosisSettings(reference_time=NOW, clock_tolerance_ms=1_000.0)
    assert clock.beyond_tolerance(ClockEstimate(offset_ms=-1_500.0, error_ms=100.0), settings)
    assert not clock.beyond_tolerance(ClockEstimate(offset_ms=-1_500.0, error_ms=600.0), settings)
