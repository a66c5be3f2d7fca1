"""TLS interception: another issuer at the same address on some vantages, and what is not interception."""

from __future__ import annotations

import pytest

from tests.outcomes import address, observe, outcome, silent
from tlsfleet.agent.model import Failure, Verdict
from tlsfleet.coordinator.diagnosis import interception
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

HOST = "api.example.test"
IP1, IP2 = "127.0.0.31", "127.0.0.32"


class Certs:
    def __init__(self) -> None:
        acme = LabPKI("Acme")
        proxy = LabPKI("Corp Proxy")
        rekeyed = LabPKI("Acme")  # same names as acme, new keys: a re-keyed CA, not a proxy
        self.acme_root_name = "Acme Root CA"
        self.server = (acme.issue_leaf(HOST).der, acme.intermediate.der)
        self.rotated = (acme.issue_leaf(HOST).der, acme.intermediate.der)
        self.proxy = (proxy.issue_leaf(HOST).der, proxy.intermediate.der)
        self.rekeyed = (rekeyed.issue_leaf(HOST).der, rekeyed.intermediate.der)
        other = LabPKI("Other Public")
        self.migrated = (other.issue_leaf(HOST).der, other.intermediate.der)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _run(observation: Observation) -> list[Finding]:
    found = list(interception.findings(observation, DiagnosisSettings.for_request(observation.request)))
    assert all(f.cause is Cause.TLS_INTERCEPTION for f in found)
    return found


def test_vantages_rejecting_a_proxy_issued_chain_are_critical(certs: Certs) -> None:
    observation = observe(
        outcome("office-1", [address(IP1, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("office-2", [address(IP1, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("dc-1", [address(IP1, certs.server)]),
        outcome("dc-2", [address(IP1, certs.server)]),
        outcome("dc-3", [address(IP1, certs.server)]),
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert f.agents == ("office-1", "office-2")
    assert f.addresses == (IP1,)
    assert "issued by 'Corp Proxy Intermediate CA'" in f.summary
    assert "not by 'Acme Intermediate CA'" in f.summary
    assert "dc-1, dc-2 and dc-3 (3 vantages)" in f.summary
    assert "reject it (unknown_issuer)" in f.summary
    assert "HTTPS_PROXY" in f.fix and "NO_PROXY" in f.fix
    issuers = next(e for e in f.evidence if e.field == "leaf issuer")
    assert (f"office-1@{IP1}", "CN=Corp Proxy Intermediate CA") in issuers.values
    assert (f"dc-1@{IP1}", "CN=Acme Intermediate CA") in issuers.values
    tops = next(e for e in f.evidence if e.field == "served chain leads to")
    assert (f"office-1@{IP1}", "'Corp Proxy Root CA'") in tops.values
    assert "env | grep -i _proxy" in f.reproduce


def test_vantages_that_trust_the_proxy_ca_are_a_warning(certs: Certs) -> None:
    observation = observe(
        outcome("office-1", [address(IP1, certs.proxy), address(IP2, certs.proxy)]),
        outcome("dc-1", [address(IP1, certs.server), address(IP2, certs.server)]),
        outcome("dc-2", [address(IP1, certs.server), address(IP2, certs.server)]),
    )
    (f,) = _run(observation)
    assert f.severity is Severity.WARNING
    assert f.agents == ("office-1",)
    assert f.addresses == (IP1, IP2)
    assert "not the server's" in f.summary


def test_a_skewed_host_that_trusts_the_proxy_fails_on_its_clock_not_on_the_proxy_ca(certs: Certs) -> None:
    # office-1 trusts the proxy's CA; its clock puts the proxy's fresh leaf before its start. The store verifies
    # the proxy chain at true time: the clock explains the failure, and installing the CA would change nothing.
    clocked = address(
        IP1, certs.proxy, native=Verdict.NOT_YET_VALID, stores={"system": (Verdict.NOT_YET_VALID, Verdict.OK)}
    )
    observation = observe(
        outcome("office-1", [clocked], offset_ms=-2 * 86_400_000.0),
        outcome("dc-1", [address(IP1, certs.server)]),
        outcome("dc-2", [address(IP1, certs.server)]),
    )
    (f,) = _run(observation)
    assert f.severity is Severity.WARNING
    assert f.agents == ("office-1",)
    assert "reject it" not in f.summary, f.summary
    assert "fails there only because of the clock of office-1" in f.summary
    assert "add its root CA" not in f.fix and "they already trust its root CA" in f.fix


def test_a_skewed_host_without_the_proxy_ca_is_still_critical(certs: Certs) -> None:
    untrusted = (Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER)
    rejected = address(IP1, certs.proxy, native=Verdict.UNKNOWN_ISSUER, stores={"system": untrusted})
    observation = observe(
        outcome("office-1", [rejected], offset_ms=-2 * 86_400_000.0),
        outcome("dc-1", [address(IP1, certs.server)]),
        outcome("dc-2", [address(IP1, certs.server)]),
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert "reject it (unknown_issuer)" in f.summary and "add its root CA" in f.fix


def test_a_rotated_leaf_from_the_same_issuer_is_not_interception(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(IP1, certs.rotated)]),
        outcome("b", [address(IP1, certs.server)]),
        outcome("c", [address(IP1, certs.server)]),
    )
    assert _run(observation) == []


def test_a_rekeyed_issuer_with_the_same_name_is_not_interception(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(IP1, certs.rekeyed, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("b", [address(IP1, certs.server)]),
        outcome("c", [address(IP1, certs.server)]),
    )
    assert _run(observation) == []


def test_an_untrusted_foreign_issuer_at_an_address_only_its_resolver_chose_is_interception(certs: Certs) -> None:
    # a's resolver alone sends the name to IP2, where another CA's chain answers that a rejects.
    observation = observe(
        outcome("a", [address(IP2, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("b", [address(IP1, certs.server)]),
        outcome("c", [address(IP1, certs.server)]),
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert f.agents == ("a",) and f.addresses == (IP2,)
    assert f"resolver sends {HOST} to {IP2} instead of {IP1}" in f.summary


def test_other_issuers_at_addresses_everyone_resolved_are_not_interception(certs: Certs) -> None:
    # Every vantage resolved both addresses: what IP2 serves is a backend matter, not a resolver's choice.
    both = (IP1, IP2)
    refused = address(IP1, connect_failure=Failure.REFUSED)
    observation = observe(
        outcome("a", [refused, address(IP2, certs.proxy, native=Verdict.UNKNOWN_ISSUER)], resolved=both),
        outcome("b", [address(IP1, certs.server), address(IP2, connect_failure=Failure.REFUSED)], resolved=both),
        outcome("c", [address(IP1, certs.server), address(IP2, connect_failure=Failure.REFUSED)], resolved=both),
    )
    assert _run(observation) == []


def test_a_pool_half_migrated_to_another_ca_is_not_interception(certs: Certs) -> None:
    # 'a' sees the new CA at one address and the old at the other: a proxy would re-sign both.
    observation = observe(
        outcome("a", [address(IP1, certs.migrated), address(IP2, certs.server)]),
        outcome("b", [address(IP1, certs.server), address(IP2, certs.server)]),
        outcome("c", [address(IP1, certs.server), address(IP2, certs.migrated)]),
    )
    assert _run(observation) == []


def test_a_tie_names_both_sides_without_deciding(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(IP1, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("b", [address(IP1, certs.server)]),
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert set(f.agents) == {"a", "b"}
    assert "'Corp Proxy Intermediate CA'" in f.summary and "'Acme Intermediate CA'" in f.summary
    assert "on one side" in f.summary


def test_everyone_seeing_the_same_issuer_gives_nothing_even_when_all_fail(certs: Certs) -> None:
    observation = observe(
        *(outcome(a, [address(IP1, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]) for a in ("a", "b", "c"))
    )
    assert _run(observation) == []


def test_healthy_fleet_gives_nothing(certs: Certs) -> None:
    observation = observe(
        *(outcome(a, [address(IP1, certs.server), address(IP2, certs.server)]) for a in ("a", "b", "c")),
        silent("d"),
    )
    assert _run(observation) == []


def test_silent_vantages_do_not_count_towards_either_side(certs: Certs) -> None:
    observation = observe(
        outcome("office-1", [address(IP1, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("dc-1", [address(IP1, certs.server)]),
        outcome("dc-2", [address(IP1, certs.server)]),
        silent("office-2"),
    )
    (f,) = _run(observation)
    assert f.agents == ("office-1",)
    assert "office-2" not in f.summary


def test_a_steered_untrusted_proxy_chain_is_told_as_interception_alone(certs: Certs) -> None:
    """The proxy's chain is trusted nowhere, but the interception explains why its vantages reject it."""
    observation = observe(
        outcome("a", [address(IP2, certs.proxy, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("b", [address(IP1, certs.server)]),
        outcome("c", [address(IP1, certs.server)]),
    )
    found = [f for f in diagnose(observation) if f.severity >= Severity.WARNING]
    causes = [f.cause for f in found]
    assert causes[0] is Cause.TLS_INTERCEPTION and Cause.UNTRUSTED_CHAIN not in causes, causes
