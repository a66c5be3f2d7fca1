"""Judgement across rules, from recorded outcomes: interception told from evidence rather than from equal
addresses, the explanation before the prediction, the coordinator's own clock, malformed extensions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from tests.outcomes import NOW_NS, address, observe, outcome, request
from tlsfleet.agent.model import TrustStore, Verdict
from tlsfleet.coordinator.diagnosis import endpoints, interception, names, sni, timebase, validity
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.extensions import covers, malformed_extensions, readable_copy
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.lab.scenarios import malformed_key_usage_leaf
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation, Variant

HOST = "api.example.test"
NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
DAY_MS = 86_400_000.0
SERVER, PROXY = "10.0.0.1", "10.9.9.9"


class Certs:
    def __init__(self) -> None:
        self.acme = LabPKI("Acme")
        self.proxy = LabPKI("Corp Proxy")
        self.public = LabPKI("Other Public")
        self.server = (self.acme.issue_leaf(HOST).der, self.acme.intermediate.der)
        self.region = (self.acme.issue_leaf(HOST).der, self.acme.intermediate.der)
        self.intercepted = (self.proxy.issue_leaf(HOST).der, self.proxy.intermediate.der)
        self.other_ca = (self.public.issue_leaf(HOST).der, self.public.intermediate.der)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _store(fingerprint: str) -> tuple[TrustStore, ...]:
    return (TrustStore("ssl_cert_file", "file", "/etc/ssl/bundle.pem", 140, fingerprint),)


def _of(found: tuple[Finding, ...] | list[Finding], cause: Cause) -> list[Finding]:
    return [f for f in found if f.cause is cause]


def _settings(observation: Observation) -> DiagnosisSettings:
    return DiagnosisSettings.for_request(observation.request)


# --- interception from evidence --------------------------------------------------------------------------


def test_resolver_steered_interception_that_fails_is_named_and_the_dns_difference_said_beside(certs: Certs) -> None:
    observation = observe(
        outcome("dc-1", [address(SERVER, certs.server)]),
        outcome("dc-2", [address(SERVER, certs.server)]),
        outcome("office", [address(PROXY, certs.intercepted, native=Verdict.UNKNOWN_ISSUER)]),
    )
    found = diagnose(observation)
    top = found[0]
    assert (top.cause, top.severity, top.agents) == (Cause.TLS_INTERCEPTION, Severity.CRITICAL, ("office",))
    assert f"resolver sends {HOST} to {PROXY} instead of {SERVER}" in top.summary
    assert "'Corp Proxy Intermediate CA'" in top.summary and "reject it (unknown_issuer)" in top.summary
    assert top.reproduce[0] == f"getent ahosts {HOST}"
    assert any(e.field == "resolved addresses" for e in top.evidence)
    (dns,) = _of(found, Cause.DNS_DIFFERENCE)
    assert dns.severity is Severity.WARNING, "the route, beside the cause, never above it"
    assert "TLS interception finding" in dns.summary and "this DNS answer is how it reaches them" in dns.summary


def test_resolver_steered_interception_trusted_only_where_its_ca_was_installed_is_a_warning(certs: Certs) -> None:
    observation = observe(
        outcome(
            "dc-1", [address(SERVER, certs.server, stores={"ssl_cert_file": Verdict.OK})], trust_stores=_store("a" * 64)
        ),
        outcome(
            "dc-2", [address(SERVER, certs.server, stores={"ssl_cert_file": Verdict.OK})], trust_stores=_store("a" * 64)
        ),
        outcome(
            "office",
            [address(PROXY, certs.intercepted, stores={"ssl_cert_file": Verdict.OK})],
            trust_stores=_store("b" * 64),
        ),
    )
    found = diagnose(observation)
    top = found[0]
    assert (top.cause, top.severity, top.agents) == (Cause.TLS_INTERCEPTION, Severity.WARNING, ("office",))
    assert "installed on these hosts only" in top.summary
    trusted_by = next(e for e in top.evidence if e.field == "trusted by")
    assert trusted_by.values == ((f"office@{PROXY}", "ssl_cert_file (root set sha256 bbbbbbbbbbbb)"),)
    (dns,) = _of(found, Cause.DNS_DIFFERENCE)
    assert dns.severity is Severity.INFO


def test_per_region_certificates_from_the_same_issuer_behind_geo_dns_are_not_interception(certs: Certs) -> None:
    observation = observe(
        outcome("eu-1", [address(SERVER, certs.server)]),
        outcome("eu-2", [address(SERVER, certs.server)]),
        outcome("us-1", [address(PROXY, certs.region)], trust_stores=_store("b" * 64)),
    )
    assert list(interception.findings(observation, _settings(observation))) == []
    found = diagnose(observation)
    assert [f for f in found if f.severity >= Severity.WARNING] == []
    assert [f.cause for f in found] == [Cause.DNS_DIFFERENCE]


def test_another_ca_that_every_vantage_would_trust_is_not_interception(certs: Certs) -> None:
    # The region's certificate comes from another CA, trusted through the same root set every host has.
    shared = _store("a" * 64)
    ok = {"ssl_cert_file": Verdict.OK}
    observation = observe(
        outcome("eu-1", [address(SERVER, certs.server, stores=ok)], trust_stores=shared),
        outcome("eu-2", [address(SERVER, certs.server, stores=ok)], trust_stores=shared),
        outcome("us-1", [address(PROXY, certs.other_ca, stores=ok)], trust_stores=shared),
    )
    assert list(interception.findings(observation, _settings(observation))) == []


def test_a_trusted_foreign_issuer_without_store_identities_is_not_claimed(certs: Certs) -> None:
    observation = observe(
        outcome("eu-1", [address(SERVER, certs.server)]),
        outcome("eu-2", [address(SERVER, certs.server)]),
        outcome("us-1", [address(PROXY, certs.intercepted)]),
    )
    assert list(interception.findings(observation, _settings(observation))) == []


def test_as_many_vantages_on_each_side_of_a_resolver_split_decide_nothing(certs: Certs) -> None:
    observation = observe(
        outcome("a", [address(SERVER, certs.server)]),
        outcome("b", [address(PROXY, certs.intercepted, native=Verdict.UNKNOWN_ISSUER)]),
    )
    assert list(interception.findings(observation, _settings(observation))) == []
    (dns,) = list(endpoints.findings(observation, _settings(observation)))
    assert dns.cause is Cause.DNS_DIFFERENCE and "interception" not in dns.summary


def test_a_pinned_probe_is_never_resolver_steered(certs: Certs) -> None:
    req = request()
    req = type(req)(target=req.target, options=type(req.options)(pin_address=SERVER, reference_time_ns=NOW_NS))
    observation = observe(
        outcome("a", [address(SERVER, certs.server)], req=req),
        outcome("b", [address(SERVER, certs.server)], req=req),
        outcome("c", [address(PROXY, certs.intercepted, native=Verdict.UNKNOWN_ISSUER)], req=req),
        req=req,
    )
    assert list(interception.findings(observation, _settings(observation))) == []


# --- the explanation before the prediction ---------------------------------------------------------------


def test_a_clock_ahead_past_a_36_hour_certificate_outranks_its_expiry(certs: Certs) -> None:
    leaf = certs.acme.issue_leaf(HOST, not_after=NOW + timedelta(hours=36))
    chain = (leaf.der, certs.acme.intermediate.der)
    flipped = {"system": (Verdict.EXPIRED, Verdict.OK)}
    observation = observe(
        outcome("web-1", [address(SERVER, chain)], offset_ms=3.0),
        outcome("web-2", [address(SERVER, chain)], offset_ms=-2.0),
        outcome("ahead", [address(SERVER, chain, native=Verdict.EXPIRED, stores=flipped)], offset_ms=3 * DAY_MS),
    )
    found = diagnose(observation)
    assert (found[0].cause, found[0].severity, found[0].agents) == (Cause.CLOCK_SKEW, Severity.CRITICAL, ("ahead",))
    (expiring,) = _of(found, Cause.EXPIRING_SOON)
    assert expiring.severity is Severity.CRITICAL and expiring.prediction
    assert len(expiring.agents) == 3 and found.index(expiring) > 0


def test_a_failure_now_outranks_a_wider_prediction_of_the_same_severity() -> None:
    soon = Finding(Cause.EXPIRING_SOON, Severity.WARNING, "s", ("a", "b", "c", "d"), prediction=True)
    now = Finding(Cause.HOSTNAME_MISMATCH, Severity.WARNING, "s", ("a",))
    worse = Finding(Cause.EXPIRING_SOON, Severity.CRITICAL, "s", ("a",), prediction=True)
    assert sorted([soon, now, worse], key=lambda f: f.rank) == [worse, now, soon]


# --- the coordinator's own clock -------------------------------------------------------------------------


def _fleet_behind(
    chain: tuple[bytes, ...], by_days: float, verdicts: dict[str, tuple[Verdict, Verdict]]
) -> Observation:
    """Three agents that agree with each other and read `by_days` behind the coordinator."""
    return observe(
        *(
            outcome(n, [address(SERVER, chain, stores=verdicts)], offset_ms=-by_days * DAY_MS + i * 300.0)
            for i, n in enumerate(("a", "b", "c"))
        )
    )


def test_a_coordinator_clock_40_days_ahead_claims_no_server_expiry(certs: Certs) -> None:
    leaf = certs.acme.issue_leaf(HOST, not_after=NOW + timedelta(days=20))
    chain = (leaf.der, certs.acme.intermediate.der)
    observation = _fleet_behind(chain, 40, {"system": (Verdict.OK, Verdict.EXPIRED)})
    ahead = DiagnosisSettings(reference_time=NOW + timedelta(days=40))
    found = diagnose(observation, ahead)
    assert not _of(found, Cause.EXPIRED)
    assert (found[0].cause, set(found[0].agents)) == (Cause.CLOCK_SKEW, {"a", "b", "c"})
    assert "coordinator's own clock is probably 40.0 days ahead" in found[0].summary
    (soon,) = _of(found, Cause.EXPIRING_SOON)
    assert soon.severity is Severity.WARNING and "expires in 20 days" in soon.summary
    assert soon.evidence[-1].values[0][0] == "fleet"


def test_a_coordinator_clock_behind_claims_no_not_yet_valid(certs: Certs) -> None:
    leaf = certs.acme.issue_leaf(HOST, not_before=NOW - timedelta(days=10))
    chain = (leaf.der, certs.acme.intermediate.der)
    observation = _fleet_behind(chain, -30, {"system": (Verdict.OK, Verdict.NOT_YET_VALID)})
    behind = DiagnosisSettings(reference_time=NOW - timedelta(days=30))
    assert list(validity.findings(observation, behind)) == []


def test_a_server_expiry_is_still_claimed_at_the_fleets_time(certs: Certs) -> None:
    leaf = certs.acme.issue_leaf(HOST, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=2))
    chain = (leaf.der, certs.acme.intermediate.der)
    observation = _fleet_behind(chain, 40, {"system": (Verdict.EXPIRED, Verdict.EXPIRED)})
    (expired,) = list(validity.findings(observation, DiagnosisSettings(reference_time=NOW + timedelta(days=40))))
    assert expired.cause is Cause.EXPIRED and "expired 2 days ago" in expired.summary
    assert "judged at the fleet's time" in expired.summary


def test_judgement_time_follows_the_clock_rules_choice(certs: Certs) -> None:
    chain = certs.server
    ahead = DiagnosisSettings(reference_time=NOW + timedelta(days=40))
    agreeing = _fleet_behind(chain, 40, {})
    assert timebase.coordinator_offset_ms(agreeing, ahead) is not None
    assert abs((timebase.judgement_time(agreeing, ahead) - NOW).total_seconds()) < 5
    one_off = observe(outcome("a", [address(SERVER, chain)], offset_ms=DAY_MS), outcome("b", [address(SERVER, chain)]))
    assert timebase.judgement_time(one_off, _settings(one_off)) == _settings(one_off).reference_time


# --- malformed extensions --------------------------------------------------------------------------------


def _leaf_with(pki: LabPKI, san: x509.ExtensionType | x509.UnrecognizedExtension, ku: bytes | None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(san, critical=False)
    )
    if ku is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, ku), critical=True)
    return Issued(builder.sign(pki.intermediate.key, hashes.SHA256()), key)


def test_a_malformed_key_usage_is_named_and_never_a_name_mismatch(certs: Certs) -> None:
    leaf = malformed_key_usage_leaf(certs.acme, HOST)
    chain = (leaf.der, certs.acme.intermediate.der)
    (bad,) = malformed_extensions(leaf.der)
    assert (bad.name, bad.oid, bad.critical) == ("keyUsage", "2.5.29.15", True)
    observation = observe(*(outcome(n, [address(SERVER, chain)]) for n in ("a", "b")))
    found = diagnose(observation)
    assert not _of(found, Cause.HOSTNAME_MISMATCH)
    top = found[0]
    assert (top.cause, top.severity, top.agents) == (Cause.MALFORMED_CERTIFICATE, Severity.WARNING, ("a", "b"))
    assert "malformed keyUsage (critical) extension" in top.summary and "OpenSSL still accepts it" in top.summary
    assert any("keyUsage 2.5.29.15: error parsing" in v for _w, v in top.evidence[0].values)


def test_a_malformed_certificate_that_native_clients_reject_is_critical(certs: Certs) -> None:
    leaf = _leaf_with(certs.acme, x509.SubjectAlternativeName([x509.DNSName(HOST)]), b"\x04\x01\x00")
    chain = (leaf.der, certs.acme.intermediate.der)
    observation = observe(*(outcome(n, [address(SERVER, chain, native=Verdict.UNKNOWN_ISSUER)]) for n in "ab"))
    found = list(names.findings(observation, _settings(observation)))
    assert [(f.cause, f.severity) for f in found] == [(Cause.MALFORMED_CERTIFICATE, Severity.CRITICAL)]
    assert "reject the chain (unknown_issuer)" in found[0].summary


def test_names_are_read_past_a_malformed_extension(certs: Certs) -> None:
    wrong = _leaf_with(certs.acme, x509.SubjectAlternativeName([x509.DNSName("www.example.test")]), b"\x04\x01\x00")
    view = readable_copy(wrong.der)
    assert view is not None
    assert x509.load_der_x509_certificate(view).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert covers(wrong.der, HOST) is False and covers(wrong.der, "www.example.test") is True
    observation = observe(outcome("a", [address(SERVER, (wrong.der, certs.acme.intermediate.der))]))
    mismatch = _of(list(names.findings(observation, _settings(observation))), Cause.HOSTNAME_MISMATCH)
    assert len(mismatch) == 1 and "www.example.test" in mismatch[0].summary, "a real mismatch is still one"


def test_an_unreadable_subject_alt_name_is_not_judged_as_a_mismatch(certs: Certs) -> None:
    garbage_san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x04\x01\x00")
    leaf = _leaf_with(certs.acme, garbage_san, None)
    observation = observe(outcome("a", [address(SERVER, (leaf.der, certs.acme.intermediate.der))]))
    found = list(names.findings(observation, _settings(observation)))
    assert [f.cause for f in found] == [Cause.MALFORMED_CERTIFICATE]
    assert "the names it covers cannot be read" in found[0].summary
    assert covers(leaf.der, HOST) is None


def test_sni_reads_names_past_a_malformed_extension(certs: Certs) -> None:
    good = malformed_key_usage_leaf(certs.acme, HOST)
    default = certs.acme.issue_leaf("default.example.test")
    no_sni = request(send_sni=False)
    observation = observe(
        outcome("a", [address(SERVER, (default.der, certs.acme.intermediate.der))], req=no_sni),
        req=no_sni,
        variants=[
            Variant(
                f"SNI {HOST}", request(), (outcome("a", [address(SERVER, (good.der, certs.acme.intermediate.der))]),)
            )
        ],
    )
    (f,) = list(sni.findings(observation, _settings(observation)))
    assert f.severity is Severity.CRITICAL, "the SNI certificate covers the name, malformed keyUsage or not"


# --- one finding per audience ----------------------------------------------------------------------------


def test_a_leaf_and_its_intermediate_expiring_for_the_same_vantages_are_one_finding(certs: Certs) -> None:
    inter = certs.acme.issue_intermediate("Acme Short CA", not_after=NOW + timedelta(days=12))
    leaf = certs.acme.issue_leaf(HOST, issuer=inter, not_after=NOW + timedelta(days=5))
    observation = observe(*(outcome(n, [address(SERVER, (leaf.der, inter.der))]) for n in "ab"))
    (f,) = list(validity.findings(observation, _settings(observation)))
    assert f.severity is Severity.CRITICAL and f.prediction
    assert "The leaf certificate" in f.summary and "1 more certificate in the same served chain expires" in f.summary
    assert "Renew it before" in f.fix and "intermediates" in f.fix


def test_clock_findings_say_whether_they_explain_a_failure_now(certs: Certs) -> None:
    leaf = certs.acme.issue_leaf(HOST, not_after=NOW + timedelta(days=1))
    chain = (leaf.der, certs.acme.intermediate.der)
    observation = observe(
        outcome(
            "breaks",
            [address(SERVER, chain, native=Verdict.EXPIRED, stores={"system": (Verdict.EXPIRED, Verdict.OK)})],
            offset_ms=2 * DAY_MS,
        ),
        outcome("drifts", [address(SERVER, chain)], offset_ms=-60_000.0),
        outcome("fine", [address(SERVER, chain)]),
    )
    found = {f.agents[0]: f for f in diagnose(observation) if f.cause is Cause.CLOCK_SKEW}
    assert not found["breaks"].prediction and found["breaks"].severity is Severity.CRITICAL
    assert found["drifts"].prediction and found["drifts"].severity is Severity.WARNING
