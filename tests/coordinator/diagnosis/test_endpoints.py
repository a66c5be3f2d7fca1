"""DNS differences across vantages and inconsistent backends behind one name, kept apart."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import NOW_NS, address, observe, outcome, request, silent
from tlsfleet.agent.model import Failure, ProbeOptions, Verdict
from tlsfleet.coordinator.diagnosis import endpoints
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
HOST = "api.example.test"
INTERNAL, EXTERNAL = "127.0.0.5", "127.0.1.5"
B1, B2, B3 = "127.0.2.1", "127.0.2.2", "127.0.2.3"


class Certs:
    def __init__(self) -> None:
        pki = LabPKI("Acme")
        other = LabPKI("Stranger")
        self.new = (pki.issue_leaf(HOST).der, pki.intermediate.der)
        self.old = (
            pki.issue_leaf(HOST, not_before=NOW - timedelta(days=80), not_after=NOW + timedelta(days=10)).der,
            pki.intermediate.der,
        )
        self.expired = (
            pki.issue_leaf(HOST, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=2)).der,
            pki.intermediate.der,
        )
        self.untrusted = (other.issue_leaf(HOST).der, other.intermediate.der)
        self.leaf_only = (self.new[0],)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _run(observation: Observation) -> list[Finding]:
    return list(endpoints.findings(observation, DiagnosisSettings.for_request(observation.request)))


def _of(found: list[Finding], cause: Cause) -> list[Finding]:
    return [f for f in found if f.cause is cause]


# --- DNS difference -------------------------------------------------------------------------------


def test_internal_resolvers_sending_clients_to_a_stale_endpoint_is_critical(certs: Certs) -> None:
    observation = observe(
        outcome("billing-1", [address(INTERNAL, certs.expired, native=Verdict.EXPIRED)]),
        outcome("billing-2", [address(INTERNAL, certs.expired, native=Verdict.EXPIRED)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
        outcome("web-2", [address(EXTERNAL, certs.new)]),
    )
    found = _run(observation)
    (f,) = _of(found, Cause.DNS_DIFFERENCE)
    assert not _of(found, Cause.INCONSISTENT_BACKENDS)
    assert f.severity is Severity.CRITICAL
    assert set(f.agents) == {"billing-1", "billing-2", "web-1", "web-2"}
    assert set(f.addresses) == {INTERNAL, EXTERNAL}
    assert f"billing-1 and billing-2 resolve it to {INTERNAL}" in f.summary
    assert f"web-1 and web-2 resolve it to {EXTERNAL}" in f.summary
    assert "fails verification (expired)" in f.summary
    assert "billing-1 and billing-2 fail because of the answer they get" in f.summary
    resolved = next(e for e in f.evidence if e.field == "resolved addresses")
    assert ("billing-1", INTERNAL) in resolved.values and ("web-2", EXTERNAL) in resolved.values
    assert INTERNAL in f.fix
    assert f"getent ahosts {HOST}" in f.reproduce
    assert any(INTERNAL in c and "-servername" in c for c in f.reproduce)


def test_different_chains_that_all_verify_are_info_only(certs: Certs) -> None:
    observation = observe(
        outcome("billing-1", [address(INTERNAL, certs.old)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
    )
    (f,) = _run(observation)
    assert f.cause is Cause.DNS_DIFFERENCE and f.severity is Severity.INFO
    assert "depends on its resolver" in f.summary
    # The older certificate's endpoint is the one to fix.
    assert f"update the certificate on {INTERNAL}" in f.fix


def test_chains_that_differ_only_in_the_intermediate_sent_count_as_different(certs: Certs) -> None:
    observation = observe(
        outcome("billing-1", [address(INTERNAL, certs.leaf_only, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
    )
    (f,) = _run(observation)
    assert f.cause is Cause.DNS_DIFFERENCE and f.severity is Severity.CRITICAL


def test_split_horizon_serving_the_same_chain_is_info_only(certs: Certs) -> None:
    observation = observe(
        outcome("billing-1", [address(INTERNAL, certs.new)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
        outcome("web-2", [address(EXTERNAL, certs.new)]),
    )
    (f,) = _run(observation)
    assert f.cause is Cause.DNS_DIFFERENCE and f.severity is Severity.INFO
    assert "harmless" in f.summary


def test_a_vantage_that_fails_on_a_chain_others_verify_is_not_blamed_on_dns(certs: Certs) -> None:
    # billing-1 lacks the root (its own problem): billing-2 verifies the very same chain.
    observation = observe(
        outcome("billing-1", [address(INTERNAL, certs.old, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("billing-2", [address(INTERNAL, certs.old)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
    )
    (f,) = _run(observation)
    assert f.cause is Cause.DNS_DIFFERENCE and f.severity is Severity.WARNING


def test_a_stale_pin_is_critical_although_a_vantage_of_the_good_set_lacks_the_root(certs: Certs) -> None:
    # pinned-1's hosts file sends it to the expired backend; no-root, in the good set, lacks the private root:
    # its failure on a chain web-1 verifies is its own, and neither spoils that set nor is told as its verdict.
    observation = observe(
        outcome("pinned-1", [address(INTERNAL, certs.expired, native=Verdict.EXPIRED)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
        outcome("no-root", [address(EXTERNAL, certs.new, native=Verdict.UNKNOWN_ISSUER)]),
    )
    (f,) = _of(_run(observation), Cause.DNS_DIFFERENCE)
    assert f.severity is Severity.CRITICAL
    assert "pinned-1 fails because of the answer it gets" in f.summary, f.summary
    assert "unknown_issuer" not in f.summary, f.summary
    assert "verifies there, except on no-root, for a reason of its own;" in f.summary
    assert f"update the certificate on {INTERNAL} (the set pinned-1 resolves to)" in f.fix
    assert "entry that sends it there" in f.fix


def test_a_pinned_host_lacking_the_root_is_not_told_it_fails_because_of_its_answer(certs: Certs) -> None:
    # pinned-1 reaches the old backend, whose certificate is still valid and from the same CA: it would fail
    # on the current backend too. Its missing root is why (the trust rule's finding), not the answer it got.
    observation = observe(
        outcome("pinned-1", [address(INTERNAL, certs.old, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
        outcome("web-2", [address(EXTERNAL, certs.new)]),
    )
    (f,) = _of(_run(observation), Cause.DNS_DIFFERENCE)
    assert f.severity is Severity.WARNING
    assert "because of the answer" not in f.summary, f.summary
    assert "verifies there, except on pinned-1, for a reason of its own" in f.summary, f.summary


def test_a_pinned_host_lacking_the_root_on_an_expired_backend_still_fails_because_of_it(certs: Certs) -> None:
    # The missing root hides the expired leaf from the verdict; the leaf's window does not lie.
    observation = observe(
        outcome("pinned-1", [address(INTERNAL, certs.expired, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("web-1", [address(EXTERNAL, certs.new)]),
    )
    (f,) = _of(_run(observation), Cause.DNS_DIFFERENCE)
    assert f.severity is Severity.CRITICAL
    assert "fails verification (expired, unknown_issuer) there" in f.summary, f.summary
    assert "pinned-1 fails because of the answer it gets" in f.summary


def test_everyone_failing_is_not_blamed_on_dns(certs: Certs) -> None:
    observation = observe(
        outcome("billing-1", [address(INTERNAL, certs.expired, native=Verdict.EXPIRED)]),
        outcome("web-1", [address(EXTERNAL, certs.untrusted, native=Verdict.UNKNOWN_ISSUER)]),
    )
    (f,) = _run(observation)
    assert f.cause is Cause.DNS_DIFFERENCE and f.severity is Severity.WARNING


def test_one_address_set_everywhere_gives_no_dns_finding(certs: Certs) -> None:
    observation = observe(*(outcome(a, [address(EXTERNAL, certs.new)]) for a in ("a", "b", "c")))
    assert _run(observation) == []


def test_pinned_probe_gives_nothing(certs: Certs) -> None:
    base = request(HOST)
    pinned = replace(base, options=replace(base.options, pin_address=EXTERNAL))
    assert isinstance(pinned.options, ProbeOptions)
    observation = observe(
        outcome("a", [address(INTERNAL, certs.expired, native=Verdict.EXPIRED)], req=pinned),
        outcome("b", [address(EXTERNAL, certs.new)], req=pinned),
        req=pinned,
    )
    assert _run(observation) == []


def test_vantages_that_did_not_resolve_or_answer_are_left_out(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(EXTERNAL, certs.new)]),
        outcome("b", [address(EXTERNAL, certs.new)]),
        outcome("c", [], resolution_failure=Failure.DNS_ERROR),
        outcome("d", [address(INTERNAL, (), connect_failure=Failure.REFUSED)]),
        silent("e"),
    )
    assert _run(observation) == []


# --- inconsistent backends ------------------------------------------------------------------------


def test_backends_serving_different_valid_leaves_are_a_warning(certs: Certs) -> None:
    pool = [address(B1, certs.new), address(B2, certs.old)]
    observation = observe(outcome("a", pool), outcome("b", pool))
    found = _run(observation)
    (f,) = _of(found, Cause.INCONSISTENT_BACKENDS)
    assert not _of(found, Cause.DNS_DIFFERENCE)
    assert f.severity is Severity.WARNING
    assert set(f.addresses) == {B1, B2} and set(f.agents) == {"a", "b"}
    assert f"{B1} serves 'api.example.test' (sha256 " in f.summary
    assert "notAfter" in f.summary and "issuer 'Acme Intermediate CA'" in f.summary
    assert "half-finished deploy" in f.summary
    assert f"install the current certificate (and its chain) on {B2}" in f.fix
    assert len(f.reproduce) == 2


def test_a_backend_with_an_expired_leaf_is_critical(certs: Certs) -> None:
    pool = [address(B1, certs.new), address(B2, certs.expired, native=Verdict.EXPIRED), address(B3, certs.new)]
    (f,) = _of(_run(observe(outcome("a", pool))), Cause.INCONSISTENT_BACKENDS)
    assert f.severity is Severity.CRITICAL
    assert f"{B1}, {B3} serve" in f.summary
    assert f"{B2} serves" in f.summary and ", expired and failing verification (expired)" in f.summary
    assert f"on {B2}," in f.fix


def test_a_backend_that_fails_where_its_siblings_verify_is_critical(certs: Certs) -> None:
    pool = [address(B1, certs.new), address(B2, certs.untrusted, native=Verdict.UNKNOWN_ISSUER)]
    (f,) = _of(_run(observe(outcome("a", pool))), Cause.INCONSISTENT_BACKENDS)
    assert f.severity is Severity.CRITICAL
    assert "failing verification (unknown_issuer)" in f.summary


def test_a_vantage_failing_on_every_backend_does_not_make_it_critical(certs: Certs) -> None:
    # The vantage lacks the root for both (its own problem); neither leaf is out of its window.
    pool = [
        address(B1, certs.new, native=Verdict.UNKNOWN_ISSUER),
        address(B2, certs.old, native=Verdict.UNKNOWN_ISSUER),
    ]
    (f,) = _of(_run(observe(outcome("a", pool))), Cause.INCONSISTENT_BACKENDS)
    assert f.severity is Severity.WARNING


def test_a_vantage_lacking_the_root_does_not_paint_the_good_backend_as_failing(certs: Certs) -> None:
    # Every vantage sees both backends; one of them lacks the private root and fails on both: its verdicts
    # are its own, not the backends'. The good backend verifies, the stale one is expired, nothing more.
    pool = [address(B1, certs.new), address(B2, certs.expired, native=Verdict.EXPIRED)]
    lacking = [
        address(B1, certs.new, native=Verdict.UNKNOWN_ISSUER),
        address(B2, certs.expired, native=Verdict.UNKNOWN_ISSUER),
    ]
    observation = observe(outcome("a", pool), outcome("b", pool), outcome("no-root", lacking))
    (f,) = _of(_run(observation), Cause.INCONSISTENT_BACKENDS)
    assert f.severity is Severity.CRITICAL
    assert set(f.agents) == {"a", "b", "no-root"}
    assert "unknown_issuer" not in f.summary, f.summary
    assert ", expired and failing verification (expired)" in f.summary
    good = f.summary.split(f"{B1} serves ", 1)[1].split(";", 1)[0]
    assert "failing" not in good, good
    assert f"on {B2}," in f.fix


def test_vantages_of_one_address_set_that_each_reached_one_backend_are_compared(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(B1, certs.new)], resolved=[B1, B2]),
        outcome("b", [address(B2, certs.old)], resolved=[B2, B1]),
    )
    found = _run(observation)
    (f,) = _of(found, Cause.INCONSISTENT_BACKENDS)
    assert not _of(found, Cause.DNS_DIFFERENCE)
    assert set(f.agents) == {"a", "b"} and set(f.addresses) == {B1, B2}


def test_different_sets_each_consistent_are_dns_not_backends(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(B1, certs.new)]),
        outcome("b", [address(B2, certs.old)]),
    )
    found = _run(observation)
    assert _of(found, Cause.DNS_DIFFERENCE)
    assert not _of(found, Cause.INCONSISTENT_BACKENDS)


def test_an_address_that_serves_different_leaves_to_different_vantages_is_not_backends(certs: Certs) -> None:
    # Same single address, different leaves per vantage: a middlebox or SNI question, not the pool.
    observation = observe(
        outcome("a", [address(B1, certs.new)]),
        outcome("b", [address(B1, certs.untrusted, native=Verdict.UNKNOWN_ISSUER)]),
    )
    assert _run(observation) == []


def test_healthy_pool_gives_nothing(certs: Certs) -> None:
    pool = [address(B1, certs.new), address(B2, certs.new), address(B3, certs.new)]
    observation = observe(outcome("a", pool), outcome("b", pool), outcome("c", pool), silent("d"))
    assert _run(observation) == []
