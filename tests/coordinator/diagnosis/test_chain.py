"""Served chains that lack an issuer, and complete chains that no vantage trusts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.outcomes import address, observe, outcome, silent
from tlsfleet.agent.model import AiaFetch, TrustStore, Verdict
from tlsfleet.agent.trust.certinfo import fingerprint, summarize
from tlsfleet.coordinator.diagnosis.chain import aia_wording, findings
from tlsfleet.coordinator.diagnosis.chain_shape import Shape, shape_of
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.trust import findings as trust_findings
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

NAME = "api.example.test"
AIA = "http://pki.acme.test/intermediate.der"
LONE = Verdict.LEAF_ONLY_UNVERIFIABLE


def _run(obs: Observation) -> list[Finding]:
    return list(findings(obs, DiagnosisSettings.for_request(obs.request)))


def _evidence(finding: Finding, name: str) -> dict[str, str]:
    return dict(next(e for e in finding.evidence if e.field == name).values)


def _leaf_only_failing(agent: str, leaf: bytes, ip: str = "10.0.0.1") -> object:
    return outcome(agent, [address(ip, (leaf,), native=Verdict.UNKNOWN_ISSUER, stores={"system": LONE})])


# --- INCOMPLETE_CHAIN -----------------------------------------------------------------------------


def test_leaf_only_chain_names_the_missing_intermediate(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME).der
    obs = observe(_leaf_only_failing("a", leaf), _leaf_only_failing("b", leaf))
    [finding] = _run(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN
    assert finding.severity is Severity.CRITICAL
    assert "serves only the leaf" in finding.summary
    assert "'CN=Acme Intermediate CA'" in finding.summary
    aki = summarize(leaf).authority_key_id
    assert aki and aki in finding.summary
    assert "a and b cannot verify it" in finding.summary
    assert _evidence(finding, "missing issuer") == {"served chain": f"CN=Acme Intermediate CA; key id {aki}"}
    aia = next(iter(_evidence(finding, "AIA caIssuers").values()))
    assert "names no caIssuers URL" in aia
    assert "Acme Intermediate CA" in finding.fix and "full-chain" in finding.fix
    # Nobody saw that issuer, so whether it is a root cannot be told: the fix says what to do if it is.
    assert "itself a root" in finding.fix


def test_aia_url_present_but_not_fetched_explains_the_browser(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, aia_ca_issuers_url=AIA).der
    [finding] = _run(observe(_leaf_only_failing("a", leaf)))
    aia = next(iter(_evidence(finding, "AIA caIssuers").values()))
    assert AIA in aia
    assert "browsers fetch" in aia or "lets browsers fetch" in aia
    assert "did not" in aia
    assert any(AIA in cmd and "curl" in cmd for cmd in finding.reproduce)
    assert AIA in finding.fix


def test_aia_fetch_that_completes_the_chain_is_said(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, aia_ca_issuers_url=AIA).der
    row = address("10.0.0.1", (leaf,), native=Verdict.UNKNOWN_ISSUER, stores={"system": LONE})
    fetched = AiaFetch(
        url=AIA, fetched=True, certificate=pki.intermediate.der, completes_chain=True, verdict=Verdict.OK
    )
    [finding] = _run(observe(outcome("a", [replace(row, aia=fetched)])))
    aia = next(iter(_evidence(finding, "AIA caIssuers").values()))
    assert "completes the chain" in aia and "browser" in aia


def _stores(fingerprint_: str) -> list[TrustStore]:
    return [
        TrustStore("system", "file", "/usr/lib/ssl/cert.pem", 144, "5e" * 32),
        TrustStore("ssl_cert_file", "file", "/etc/bundle.pem", 145 if fingerprint_ != "5e" else 144, fingerprint_ * 32),
    ]


def test_a_host_without_the_root_is_told_it_still_fails_once_the_aia_issuer_is_served(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, aia_ca_issuers_url=AIA).der
    row = address("10.0.0.1", (leaf,), native=Verdict.UNKNOWN_ISSUER, stores={"system": LONE})
    fetched = AiaFetch(
        url=AIA, fetched=True, certificate=pki.intermediate.der, completes_chain=True, verdict=Verdict.OK
    )
    obs = observe(
        outcome("trusting", [row], trust_stores=_stores("7a")),
        outcome("fetching", [replace(row, aia=fetched)], trust_stores=_stores("7a")),
        outcome("no-root", [row], trust_stores=_stores("5e")),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN
    assert finding.agents == ("trusting", "fetching", "no-root")
    assert (
        "once that issuer is served, no-root will still fail unless it trusts the root 'CN=Acme Root CA' that the "
        "completed chain leads to: no store on no-root holds the root set the chain completed against on fetching "
        f"(sha256 {'7a' * 6})."
    ) in finding.summary
    assert "trusting will still fail" not in finding.summary
    said = _evidence(finding, "root once the issuer is served")
    assert set(said) == {"fetching@10.0.0.1", "no-root@10.0.0.1"}
    assert said["no-root@10.0.0.1"] == f"no store with that root set (system, ssl_cert_file: sha256 {'5e' * 6})"
    assert "Then install 'CN=Acme Root CA' on no-root" in finding.fix
    # One finding says it: the trust rule does not tell the same failure again.
    assert list(trust_findings(obs, DiagnosisSettings.for_request(obs.request))) == []


def test_a_host_whose_own_aia_fetch_still_fails_is_told_it_still_fails(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME, aia_ca_issuers_url=AIA).der
    row = address("10.0.0.1", (leaf,), native=Verdict.UNKNOWN_ISSUER, stores={"system": LONE})
    good = AiaFetch(url=AIA, fetched=True, certificate=pki.intermediate.der, completes_chain=True, verdict=Verdict.OK)
    bad = replace(good, completes_chain=False, verdict=Verdict.UNKNOWN_ISSUER)
    obs = observe(outcome("fetching", [replace(row, aia=good)]), outcome("no-root", [replace(row, aia=bad)]))
    [finding] = _run(obs)
    assert "no-root will still fail unless it trusts the root 'CN=Acme Root CA'" in finding.summary
    assert "no-root fetched it too and still cannot verify (unknown_issuer)" in finding.summary


def test_aia_wording_covers_every_case() -> None:
    assert "names no caIssuers URL" in aia_wording((), None)
    assert "only when allowed" in aia_wording((AIA,), None)
    failed = AiaFetch(url=AIA, fetched=False, error="HTTP 404 from " + AIA)
    assert "failed (HTTP 404" in aia_wording((AIA,), failed)
    still = AiaFetch(url=AIA, fetched=True, certificate=b"x", completes_chain=False, verdict=Verdict.UNKNOWN_ISSUER)
    assert "still does not verify (unknown_issuer)" in aia_wording((AIA,), still)


def test_incomplete_chain_every_vantage_still_verifies_is_a_warning(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME).der
    obs = observe(outcome("a", [address("10.0.0.1", (leaf,))]), outcome("b", [address("10.0.0.1", (leaf,))]))
    [finding] = _run(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN
    assert finding.severity is Severity.WARNING
    assert "every vantage still verifies it only because their trust stores hold" in finding.summary


def test_incomplete_chain_some_vantages_verify_is_critical_and_trust_holds_back(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME).der
    int_fp = fingerprint(pki.intermediate.der)
    # OpenSSL's path runs through the intermediate that store holds up to its self-signed root.
    path = (fingerprint(leaf), int_fp, fingerprint(pki.root.der))
    obs = observe(
        outcome("has-int", [address("10.0.0.1", (leaf,), verified_path=path)]),
        _leaf_only_failing("plain", leaf),
    )
    [finding] = _run(obs)
    assert finding.severity is Severity.CRITICAL
    assert finding.agents == ("plain",)
    assert "plain cannot verify it" in finding.summary
    assert "the other vantage holds that certificate in a trust store" in finding.summary
    # The hosts that verify hold the intermediate: a trust-store difference is not the explanation.
    assert list(trust_findings(obs, DiagnosisSettings.for_request(obs.request))) == []


def test_issuer_served_on_another_address_means_inconsistent_configuration(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME).der
    full = (leaf, pki.intermediate.der)
    obs = observe(
        outcome(
            "a",
            [
                address("10.0.0.1", (leaf,), native=Verdict.UNKNOWN_ISSUER, stores={"system": LONE}),
                address("10.0.0.2", full),
            ],
        ),
        outcome("b", [address("10.0.0.2", full)]),
    )
    [finding] = _run(obs)
    assert finding.addresses == ("10.0.0.1",)
    assert "a@10.0.0.2 and b@10.0.0.2 are served it" in finding.summary
    assert "inconsistently" in finding.summary
    assert "copy it from the chain a@10.0.0.2 is served" in finding.fix
    assert "itself a root" not in finding.fix  # the issuer was seen: it is an intermediate
    assert set(_evidence(finding, "issuer served elsewhere")) == {"a@10.0.0.2", "b@10.0.0.2"}


def test_leaf_with_unrelated_certificate_is_incomplete(pki: LabPKI) -> None:
    other = LabPKI("Other")
    leaf = pki.issue_leaf(NAME).der
    chain = (leaf, other.intermediate.der)
    obs = observe(
        outcome(
            "a", [address("10.0.0.1", chain, native=Verdict.UNKNOWN_ISSUER, stores={"system": Verdict.UNKNOWN_ISSUER})]
        )
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN
    assert "Other Intermediate CA" in finding.summary and "did not issue it" in finding.summary
    assert "'CN=Acme Intermediate CA'" in finding.summary


def test_a_leaf_whose_key_id_names_another_key_than_its_served_signer_is_malformed(pki: LabPKI) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    wrong = x509.AuthorityKeyIdentifier.from_issuer_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(wrong, critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )
    chain = (leaf, pki.intermediate.der)
    failing = {"native": Verdict.UNKNOWN_ISSUER, "stores": {"system": Verdict.UNKNOWN_ISSUER}}
    obs = observe(outcome("a", [address("10.0.0.1", chain, **failing)]))  # type: ignore[arg-type]
    [finding] = _run(obs)
    assert (finding.cause, finding.severity) == (Cause.MALFORMED_CERTIFICATE, Severity.CRITICAL)
    ski = summarize(pki.intermediate.der).subject_key_id
    assert f"key id {summarize(leaf).authority_key_id}" in finding.summary and f"({ski})" in finding.summary
    assert "was signed by the served 'CN=Acme Intermediate CA'" in finding.summary
    assert "No certificate is missing" in finding.summary and "Authority Key Identifier equal to" in finding.fix


def test_deeper_chain_missing_a_known_intermediate(pki: LabPKI) -> None:
    upper = pki.intermediate
    lower = pki.issue_intermediate("Acme Issuing CA 2", issuer=upper)
    leaf = pki.issue_leaf(NAME, issuer=lower).der
    obs = observe(
        outcome(
            "a",
            [
                address(
                    "10.0.0.1",
                    (leaf, lower.der),
                    native=Verdict.UNKNOWN_ISSUER,
                    stores={"system": Verdict.UNKNOWN_ISSUER},
                )
            ],
        ),
        outcome("b", [address("10.0.0.2", (pki.issue_leaf("other.example.test").der, upper.der))]),
    )
    [finding] = _run(obs)
    assert "serves the chain up to 'CN=Acme Issuing CA 2'" in finding.summary
    assert "'CN=Acme Intermediate CA'" in finding.summary


def test_full_chain_verified_everywhere_yields_nothing(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(
        *(outcome(n, [address("10.0.0.1", chain), address("10.0.0.2", chain)]) for n in ("a", "b")), silent("c")
    )
    assert _run(obs) == []


def test_leaf_signed_by_a_root_seen_elsewhere_is_complete(pki: LabPKI) -> None:
    direct = pki.issue_leaf(NAME, issuer=pki.root)
    known = [summarize(pki.root.der)]
    shape = shape_of([summarize(direct.der)], known)
    assert shape is not None and shape.shape is Shape.ROOT_NOT_SERVED
    unknown = shape_of([summarize(direct.der)], [])
    assert unknown is not None and unknown.shape is Shape.MISSING_ISSUER and not unknown.issuer_known


def test_shape_of_a_normal_chain_takes_the_root_as_unsent(pki: LabPKI) -> None:
    shape = shape_of([summarize(pki.issue_leaf(NAME).der), summarize(pki.intermediate.der)], [])
    assert shape is not None and shape.shape is Shape.ROOT_NOT_SERVED
    assert [c.subject for c in shape.path] == [f"CN={NAME}", "CN=Acme Intermediate CA"]
    assert shape_of([], []) is None


def test_chain_a_middlebox_shows_some_vantages_is_not_blamed_on_the_server(pki: LabPKI) -> None:
    proxy = LabPKI("Corp Proxy")
    forged = proxy.issue_leaf(NAME).der
    real = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", real)]),
        _leaf_only_failing("proxied", forged),
    )
    assert _run(obs) == []


def test_incomplete_chain_most_vantages_see_is_reported_despite_one_intercepted(pki: LabPKI) -> None:
    proxy = LabPKI("Corp Proxy")
    leaf = pki.issue_leaf(NAME).der
    proxied = (proxy.issue_leaf(NAME).der, proxy.intermediate.der)
    obs = observe(
        _leaf_only_failing("a", leaf),
        _leaf_only_failing("b", leaf),
        outcome("proxied", [address("10.0.0.1", proxied)]),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN
    assert finding.agents == ("a", "b")


def test_same_issuer_backends_do_not_count_as_interception(pki: LabPKI) -> None:
    # Behind one address, one backend still serves last month's leaf without its intermediate.
    old = pki.issue_leaf(NAME).der
    new = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(_leaf_only_failing("a", old), outcome("b", [address("10.0.0.1", new)]))
    [finding] = _run(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN and finding.agents == ("a",)


# --- UNTRUSTED_CHAIN ------------------------------------------------------------------------------


def test_self_signed_leaf_nobody_trusts(pki: LabPKI) -> None:
    leaf = pki.self_signed_leaf(NAME).der
    stores = {"system": Verdict.SELF_SIGNED, "certifi": Verdict.SELF_SIGNED}
    store_id = TrustStore("system", "file", "/etc/ssl/certs/ca-certificates.crt", 140, "ab" * 32)
    obs = observe(
        outcome(
            "a", [address("10.0.0.1", (leaf,), native=Verdict.SELF_SIGNED, stores=stores)], trust_stores=[store_id]
        ),
        outcome("b", [address("10.0.0.1", (leaf,), native=Verdict.SELF_SIGNED, stores=stores)]),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.UNTRUSTED_CHAIN
    assert finding.severity is Severity.CRITICAL
    assert "self-signed certificate" in finding.summary and f"CN={NAME}" in finding.summary
    assert "no vantage trusts it (2 vantages, 4 store verdicts)" in finding.summary
    assert _evidence(finding, "trust stores")["a"].startswith("system /etc/ssl/certs/ca-certificates.crt: 140 roots")


def test_self_signed_leaf_that_some_vantage_trusts_is_not_untrusted(pki: LabPKI) -> None:
    leaf = pki.self_signed_leaf(NAME).der
    obs = observe(
        outcome("pinned", [address("10.0.0.1", (leaf,))]),
        outcome("b", [address("10.0.0.1", (leaf,), native=Verdict.SELF_SIGNED)]),
    )
    assert _run(obs) == []


def test_served_root_nobody_trusts_is_named(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der, pki.root.der)
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.UNTRUSTED_ROOT)]))
    [finding] = _run(obs)
    assert finding.cause is Cause.UNTRUSTED_CHAIN
    assert "ending in the self-signed root 'CN=Acme Root CA'" in finding.summary
    assert "update-ca-certificates" in finding.fix


def test_unsent_root_nobody_trusts_is_named(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", chain, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("b", [address("10.0.0.1", chain, native=Verdict.UNKNOWN_ISSUER)]),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.UNTRUSTED_CHAIN
    assert "leads to the root 'CN=Acme Root CA'" in finding.summary
    assert finding.agents == ("a", "b")


def test_self_signed_chain_a_middlebox_shows_one_vantage_is_not_blamed_on_the_server(pki: LabPKI) -> None:
    forged = pki.self_signed_leaf(NAME).der
    real = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(
        outcome("a", [address("10.0.0.1", real)]),
        outcome("b", [address("10.0.0.1", real)]),
        outcome("proxied", [address("10.0.0.1", (forged,), native=Verdict.SELF_SIGNED)]),
    )
    assert _run(obs) == []


def test_complete_chain_trusted_by_a_runtime_store_only_is_not_untrusted(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    stores = {"system": Verdict.UNKNOWN_ISSUER, "java": Verdict.OK}
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.UNKNOWN_ISSUER, stores=stores)]))
    assert _run(obs) == []


def test_time_or_name_failures_are_not_trust_failures(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]))
    assert _run(obs) == []


def test_only_answering_vantages_count(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(NAME).der
    [finding] = _run(observe(_leaf_only_failing("a", leaf), silent("gone")))
    assert finding.agents == ("a",)
    assert "gone" not in finding.summary
    assert _run(observe(silent("gone"))) == []
