"""Chains that break a verification policy: the finding names the violation and the certificate, from the
OpenSSL verify codes (never their text) and the certificates themselves.

Store verdicts are OpenSSL's own (tests/judged.py), at this host's security level.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from tests.judged import NAME, judged, store, with_native
from tests.outcomes import address, observe, outcome, request
from tlsfleet.agent.model import Client, ClientView, Failure, NativeVerdict, StoreVerdict, TrustStore, Verdict
from tlsfleet.agent.trust import libcrypto
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import CAUSE_TITLES, Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.policy import findings, violation_kind
from tlsfleet.coordinator.lab.corpus import PROFILES, CorpusPKI
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome

UNHANDLED = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1.1"), b"\x05\x00")
CLIENT_ONLY = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])

needs_level_2 = pytest.mark.skipif(
    libcrypto.security_level() < 2, reason="this host's OpenSSL security level accepts 1024-bit keys"
)


def _run(obs: Observation) -> list[Finding]:
    return list(findings(obs, DiagnosisSettings.for_request(obs.request)))


def _one(obs: Observation) -> Finding:
    found = [f for f in diagnose(obs) if f.severity >= Severity.WARNING]
    assert [f.cause for f in found] == [Cause.POLICY_INVALID_CHAIN], [(f.cause, f.summary) for f in found]
    return found[0]


def _evidence(finding: Finding, name: str) -> dict[str, str]:
    return dict(next(e for e in finding.evidence if e.field == name).values)


@pytest.fixture
def pki() -> LabPKI:
    return LabPKI("Acme Internal")


def _pair(pki: LabPKI, chain: tuple[bytes, ...]) -> Observation:
    stores = [store("system", [pki.root.cert])]
    return observe(judged("a", chain, stores), judged("b", chain, stores))


def test_weak_digest_names_the_sha1_certificate(tmp_path: Path) -> None:
    corpus = CorpusPKI(PROFILES[0], tmp_path)
    sha1 = corpus.ca("Corpus SHA-1 CA", issuer=corpus.root, digest="sha1")
    chain = (corpus.leaf(NAME, issuer=sha1).der, sha1.der)
    stores = [store("system", [corpus.root.cert])]
    # OpenSSL's re-signing starts the CA's validity now: judge a minute later.
    later = replace(request(), options=replace(request().options, reference_time_ns=time.time_ns() + 60 * 10**9))
    finding = _one(observe(judged("a", chain, stores, req=later), judged("b", chain, stores, req=later), req=later))
    assert finding.severity is Severity.CRITICAL and finding.agents == ("a", "b")
    assert "'CN=Corpus SHA-1 CA' is signed with SHA-1 (sha1WithRSAEncryption)" in finding.summary
    assert "(verify code 68)" in finding.summary and "a and b refuse it" in finding.summary
    assert "SHA-256" in finding.fix and "Corpus Critical Root CA" in finding.fix
    assert _evidence(finding, "verify codes") == {
        "a@10.0.0.1": "native 68, system 68",
        "b@10.0.0.1": "native 68, system 68",
    }


@needs_level_2
def test_weak_leaf_key_names_the_leaf_and_its_key(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME, key_kind="rsa1024").der, pki.intermediate.der)
    finding = _one(_pair(pki, chain))
    assert f"the leaf 'CN={NAME}' has an RSA 1024 key" in finding.summary and "(verify code 66)" in finding.summary
    assert "2048" in finding.fix


@needs_level_2
def test_weak_ca_key_names_the_ca(pki: LabPKI) -> None:
    weak = pki.issue_intermediate("Acme Legacy CA", key_kind="rsa1024")
    chain = (pki.issue_leaf(NAME, issuer=weak).der, weak.der)
    finding = _one(_pair(pki, chain))
    assert "the CA 'CN=Acme Legacy CA' has an RSA 1024 key" in finding.summary and "(verify code 67)" in finding.summary


def test_invalid_ca_names_the_issuer_that_is_not_a_ca(pki: LabPKI) -> None:
    plain = pki.issue_intermediate("Acme Plain Signer", basic_constraints=False)
    chain = (pki.issue_leaf(NAME, issuer=plain).der, plain.der)
    finding = _one(_pair(pki, chain))
    assert "'CN=Acme Plain Signer' issues certificates but is not a CA: it has no basicConstraints" in finding.summary
    assert "(verify code 79)" in finding.summary and "CA:TRUE" in finding.fix


def test_an_x509_v1_intermediate_is_named_as_such(tmp_path: Path) -> None:
    corpus = CorpusPKI(PROFILES[0], tmp_path)
    v1 = corpus.ca("Corpus X.509 v1 CA", issuer=corpus.root, x509_v1=True)
    chain = (corpus.leaf(NAME, issuer=v1).der, v1.der)
    stores = [store("system", [corpus.root.cert])]
    # OpenSSL's re-signing starts the CA's validity now: judge a minute later.
    later = replace(request(), options=replace(request().options, reference_time_ns=time.time_ns() + 60 * 10**9))
    finding = _one(observe(judged("a", chain, stores, req=later), judged("b", chain, stores, req=later), req=later))
    assert (
        "'CN=Corpus X.509 v1 CA' issues certificates but is not a CA: it is an X.509 v1 certificate" in finding.summary
    )
    assert "OpenSSL accepts v1 CAs only as roots (verify code 79)" in finding.summary


def test_openssl_1_1_invalid_ca_code_24_is_read_from_the_certificates(pki: LabPKI) -> None:
    plain = pki.issue_intermediate("Acme Plain Signer", basic_constraints=False)
    chain = (pki.issue_leaf(NAME, issuer=plain).der, plain.der)
    old = _recorded(chain, code=24)
    [finding] = _run(observe(old))
    assert "is not a CA: it has no basicConstraints" in finding.summary and "(verify code 24)" in finding.summary
    # OpenSSL 3's 24 is another error; with no CA at fault the finding says only what the code says.
    fine = _recorded((pki.issue_leaf(NAME).der, pki.intermediate.der), code=24)
    [generic] = _run(observe(fine))
    assert "OpenSSL refuses a certificate of the path (verify code 24)" in generic.summary


def test_unhandled_critical_extension_names_the_extension(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME, extensions=[(UNHANDLED, True)]).der, pki.intermediate.der)
    finding = _one(_pair(pki, chain))
    assert f"'CN={NAME}' carries the critical extension 1.3.6.1.4.1.55555.1.1" in finding.summary
    assert "(verify code 34)" in finding.summary and "non-critical" in finding.fix


def test_path_length_names_the_constrained_ca(pki: LabPKI) -> None:
    capped = pki.issue_intermediate("Acme Capped CA", path_length=0)
    below = pki.issue_intermediate("Acme Below-Cap CA", issuer=capped)
    chain = (pki.issue_leaf(NAME, issuer=below).der, below.der, capped.der)
    finding = _one(_pair(pki, chain))
    assert "'CN=Acme Capped CA' allows 0 CA certificate(s) below it (pathLenConstraint) and the path has 1" in (
        finding.summary
    )
    assert "(verify code 25)" in finding.summary


def test_purpose_names_the_usage(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME, extensions=[(CLIENT_ONLY, False)]).der, pki.intermediate.der)
    finding = _one(_pair(pki, chain))
    assert f"the leaf 'CN={NAME}' is not for TLS servers: its extendedKeyUsage is clientAuth" in finding.summary
    assert "(verify code 26)" in finding.summary and "serverAuth" in finding.fix


def _key_usage(**on: bool) -> x509.KeyUsage:
    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    return x509.KeyUsage(
        **{u: on.get(u, False) for u in usages},
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.mark.parametrize(
    ("extension", "said", "fixed"),
    [
        (
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
            "its extendedKeyUsage is anyExtendedKeyUsage alone, which OpenSSL does not take for serverAuth",
            "extendedKeyUsage serverAuth",
        ),
        (
            x509.UnrecognizedExtension(ObjectIdentifier("2.16.840.1.113730.1.1"), b"\x03\x02\x07\x80"),
            "its Netscape nsCertType is SSL client, without SSL server",
            "without the Netscape nsCertType extension",
        ),
        (
            _key_usage(content_commitment=True),
            "its keyUsage (nonRepudiation) allows none of digitalSignature, keyEncipherment or keyAgreement",
            "keyUsage digitalSignature",
        ),
    ],
    ids=["any-eku", "ns-cert-type", "key-usage"],
)
def test_purpose_names_what_else_refuses_a_tls_server(
    pki: LabPKI, extension: x509.ExtensionType, said: str, fixed: str
) -> None:
    chain = (pki.issue_leaf(NAME, extensions=[(extension, False)]).der, pki.intermediate.der)
    finding = _one(_pair(pki, chain))
    assert f"the leaf 'CN={NAME}' is not for TLS servers: {said}" in finding.summary, finding.summary
    assert "(verify code 26)" in finding.summary and fixed in finding.fix


def test_chain_too_long_is_named(pki: LabPKI) -> None:
    [finding] = _run(observe(_recorded((pki.issue_leaf(NAME).der, pki.intermediate.der), code=22)))
    assert "beyond OpenSSL's verification depth" in finding.summary and "(verify code 22)" in finding.summary


def test_only_the_python_view_refusing_is_still_a_client_failing_now(pki: LabPKI) -> None:
    """OpenSSL's configuration on the host is laxer than Python's pinned security level 2."""
    weak = pki.issue_intermediate("Acme Legacy CA", key_kind="rsa1024")
    chain = (pki.issue_leaf(NAME, issuer=weak).der, weak.der)
    lax = [store("system", [pki.root.cert])]
    host = with_native(judged("a", chain, lax, python_code=67), Verdict.OK, 0)
    host = _with_store_codes(host, Verdict.OK, 0)
    [finding] = _run(observe(host))
    assert finding.severity is Severity.CRITICAL
    assert _evidence(finding, "verify codes") == {"a@10.0.0.1": "python 67"}


def test_one_view_refusing_on_policy_is_one_finding_naming_that_client(pki: LabPKI) -> None:
    """Python refuses an intermediate with a 1024-bit key that the host's lax OpenSSL accepts: the policy finding
    explains the views' difference too; no second finding says the clients disagree."""
    weak = pki.issue_intermediate("Acme Legacy CA", key_kind="rsa1024")
    chain = (pki.issue_leaf(NAME, issuer=weak).der, weak.der)
    lax = [store("system", [pki.root.cert])]
    host = _with_store_codes(with_native(judged("a", chain, lax, python_code=67), Verdict.OK, 0), Verdict.OK, 0)
    found = diagnose(observe(host))
    assert [f.cause for f in found] == [Cause.POLICY_INVALID_CHAIN], [(f.cause, f.summary) for f in found]
    assert "Python's default context on a refuses it while OpenSSL clients there accept it" in found[0].summary
    assert "'CN=Acme Legacy CA'" in found[0].summary


def test_only_openssl_refusing_on_policy_names_python_accepting(pki: LabPKI) -> None:
    """The host's OpenSSL configuration is stricter than Python's: one finding, saying which client refuses."""
    weak = pki.issue_intermediate("Acme Legacy CA", key_kind="rsa1024")
    chain = (pki.issue_leaf(NAME, issuer=weak).der, weak.der)
    refused = replace(address("10.0.0.1", chain, native=Verdict.INVALID), native=NativeVerdict(Verdict.INVALID, 67))
    python = ClientView(Client.PYTHON, Verdict.OK)
    refused = replace(refused, views=(ClientView(Client.OPENSSL, Verdict.INVALID, 67, Failure.CERT_VERIFY), python))
    found = [f for f in diagnose(observe(outcome("a", [refused]))) if f.severity >= Severity.WARNING]
    assert [f.cause for f in found] == [Cause.POLICY_INVALID_CHAIN], [(f.cause, f.summary) for f in found]
    assert "OpenSSL clients on a refuse it while Python's default context there accepts it" in found[0].summary


def test_a_store_only_refusal_warns_when_the_store_is_in_use_and_notes_it_otherwise(pki: LabPKI) -> None:
    plain = pki.issue_intermediate("Acme Plain Signer", basic_constraints=False)
    chain = (pki.issue_leaf(NAME, issuer=plain).der, plain.der)
    declared = store("java_home", [pki.root.cert], runtime="java", found_by="JAVA_HOME in the agent's environment: /j")
    found = store("java", [pki.root.cert], runtime="java", found_by="/usr/bin/java (`java` on PATH)")
    for runtime_store, severity in ((declared, Severity.WARNING), (found, Severity.INFO)):
        host = judged("a", chain, [store("system", [pki.root.cert, LabPKI("X").root.cert]), runtime_store])
        host = with_native(_with_store_codes(host, Verdict.OK, 0, only="system"), Verdict.OK, 0)
        [finding] = _run(observe(host))
        assert finding.severity is severity, runtime_store.info.name
        assert f"the {runtime_store.info.name} store on a refuses it" in finding.summary


def test_a_java_store_refusing_only_on_openssl_s_security_level_is_no_warning(pki: LabPKI) -> None:
    """Java has no security level: a 1024-bit CA key under a private root is what it accepts (held against java
    in tests/agent/trust/test_runtime_clients.py's family), so the java store's refusal is openssl verify's."""
    weak = pki.issue_intermediate("Acme Legacy CA", key_kind="rsa1024")
    chain = (pki.issue_leaf(NAME, issuer=weak).der, weak.der)
    declared = store("java_home", [pki.root.cert], runtime="java", found_by="JAVA_HOME in the agent's environment: /j")
    host = judged("a", chain, [store("system", [pki.root.cert, LabPKI("X").root.cert]), declared])
    host = with_native(_with_store_codes(host, Verdict.OK, 0, only="system"), Verdict.OK, 0)
    [finding] = _run(observe(host))
    assert finding.cause is Cause.POLICY_INVALID_CHAIN and "(verify code 67)" in finding.summary
    assert finding.severity is Severity.INFO, finding.summary
    assert "openssl verify with the java_home store on a (Java itself accepts it) refuses it" in finding.summary


def test_hosts_that_accept_are_named_beside_those_that_refuse(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME, extensions=[(UNHANDLED, True)]).der, pki.intermediate.der)
    stores = [store("system", [pki.root.cert])]
    lax = with_native(_with_store_codes(judged("lax", chain, stores), Verdict.OK, 0), Verdict.OK, 0)
    [finding] = _run(observe(judged("strict", chain, stores), lax))
    assert finding.agents == ("strict",) and "strict refuses it; lax accepts it" in finding.summary


def test_the_verdict_text_decides_nothing(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME, extensions=[(UNHANDLED, True)]).der, pki.intermediate.der)
    host = judged("a", chain, [store("system", [pki.root.cert])])
    assert host.result is not None
    address_ = host.result.addresses[0]
    noisy = tuple(replace(s, detail="expired self-signed weak key SHA-1 hostname mismatch") for s in address_.stores)
    relabelled = replace(host, result=replace(host.result, addresses=(replace(address_, stores=noisy),)))
    assert [f.summary for f in _run(observe(relabelled))] == [f.summary for f in _run(observe(host))]


def test_strict_profile_only_is_an_info_note_naming_the_reason(pki: LabPKI) -> None:
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der)
    note = "leaf has no Authority Key Identifier"
    stores = (StoreVerdict("system", Verdict.OK, Verdict.OK, strict_note=note),)
    row = replace(address("10.0.0.1", chain), stores=stores)
    [finding] = _run(observe(outcome("a", [row]), outcome("b", [row])))
    assert (finding.cause, finding.severity) == (Cause.POLICY_INVALID_CHAIN, Severity.INFO)
    assert "browsers and Go (the CA/Browser Forum profile) would refuse it: leaf has no Authority Key Identifier" in (
        finding.summary
    )
    assert finding.agents == ("a", "b")


def test_healthy_chains_in_other_key_kinds_are_quiet() -> None:
    for kind in ("p384", "rsa2048"):
        other = LabPKI(f"Acme {kind}", key_kind=kind)  # type: ignore[arg-type]
        chain = (other.issue_leaf(NAME).der, other.intermediate.der)
        stores = [store("system", [other.root.cert])]
        assert diagnose(observe(judged("a", chain, stores), judged("b", chain, stores))) == (), kind


def test_violation_kinds_group_the_codes() -> None:
    assert violation_kind(79) == violation_kind(24) == violation_kind(32) == "invalid_ca"
    assert violation_kind(68) == "weak_digest" and violation_kind(41) == "code:41"


def test_every_cause_has_a_title() -> None:
    assert set(CAUSE_TITLES) == set(Cause)


# --- helpers ---------------------------------------------------------------------------------------


def _recorded(chain: tuple[bytes, ...], *, code: int) -> ProbeOutcome:
    """An outcome as an agent whose OpenSSL said `code` for every store and the native client would send."""
    verdict = Verdict.INVALID
    stores = (StoreVerdict("system", verdict, verdict, verify_code=code, reference_verify_code=code),)
    row = replace(address("10.0.0.1", chain, native=verdict), stores=stores)
    row = replace(row, native=replace(row.native, verify_code=code))
    return outcome("a", [row], trust_stores=[TrustStore("system", "file", "/etc/ssl/certs/ca.pem", 1, "ab" * 32)])


def _with_store_codes(host: ProbeOutcome, verdict: Verdict, code: int, *, only: str = "") -> ProbeOutcome:
    assert host.result is not None
    address_ = host.result.addresses[0]
    stores = tuple(
        replace(s, at_agent_time=verdict, at_reference_time=verdict, verify_code=code, reference_verify_code=code)
        if not only or s.store == only
        else s
        for s in address_.stores
    )
    return replace(host, result=replace(host.result, addresses=(replace(address_, stores=stores),)))


def test_name_constraints_name_the_constrained_ca_and_what_it_permits(pki: LabPKI) -> None:
    only = x509.NameConstraints(permitted_subtrees=[x509.DNSName(".corp.test")], excluded_subtrees=None)
    constrained = pki.issue_intermediate("Acme Corp-Only CA", extensions=[(only, True)])
    chain = (pki.issue_leaf(NAME, issuer=constrained).der, constrained.der)
    finding = _one(_pair(pki, chain))
    assert (
        "'CN=Acme Corp-Only CA' is name-constrained (permitted: .corp.test; excluded: none) and api.example.test is "
        "outside the names it permits (verify code 47)"
    ) in finding.summary
    assert "only for names inside .corp.test" in finding.fix and "permit api.example.test" in finding.fix
    assert violation_kind(47) == violation_kind(48) == "name_constraints"


def _constrained(
    pki: LabPKI, *, permitted: list[x509.GeneralName] | None = None, excluded: list[x509.GeneralName] | None = None
) -> Issued:
    constraints = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)
    return pki.issue_intermediate("Acme Constrained CA", extensions=[(constraints, True)])


def test_name_constraints_name_the_san_outside_them_not_the_name_asked(pki: LabPKI) -> None:
    """The asked name is inside the permitted subtree; another SAN of the leaf is not, and OpenSSL refuses the
    chain for it: the finding names that SAN."""
    ca = _constrained(pki, permitted=[x509.DNSName("example.test")])
    chain = (pki.issue_leaf(NAME, "api.other.test", issuer=ca).der, ca.der)
    finding = _one(_pair(pki, chain))
    assert "and api.other.test is outside the names it permits (verify code 47)" in finding.summary
    assert "api.example.test is" not in finding.summary


def test_an_excluded_subtree_names_the_name_inside_it(pki: LabPKI) -> None:
    ca = _constrained(pki, excluded=[x509.DNSName("example.test")])
    finding = _one(_pair(pki, (pki.issue_leaf(NAME, issuer=ca).der, ca.der)))
    assert "(permitted: none; excluded: example.test) and api.example.test is inside a subtree it excludes" in (
        finding.summary
    )
    assert "(verify code 48)" in finding.summary
    assert "from another CA" in finding.fix


def test_an_ip_constraint_names_the_ip_san_outside_it(pki: LabPKI) -> None:
    import ipaddress

    ca = _constrained(pki, permitted=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))])
    finding = _one(_pair(pki, (pki.issue_leaf(NAME, "192.0.2.7", issuer=ca).der, ca.der)))
    assert "(permitted: 10.0.0.0/8; excluded: none) and 192.0.2.7 is outside the names it permits" in finding.summary


def test_a_cn_only_leaf_under_a_dns_constraint_is_named_by_its_cn(pki: LabPKI) -> None:
    """OpenSSL holds a host-name CN against DNS constraints when the leaf has no DNS SAN."""
    ca = _constrained(pki, permitted=[x509.DNSName("corp.test")])
    found = diagnose(_pair(pki, (pki.issue_leaf(NAME, san=False, issuer=ca).der, ca.der)))
    finding = next(f for f in found if f.cause is Cause.POLICY_INVALID_CHAIN)
    assert finding.severity is Severity.CRITICAL
    # The CN-only warning beside it does not claim that OpenSSL-based clients accept the chain: they accept the name.
    cn_only = next(f for f in found if f.cause is Cause.HOSTNAME_MISMATCH)
    assert "still accept the name through their CN fallback" in cn_only.summary
    assert "and api.example.test (its subject CN, which OpenSSL checks when there is no DNS SAN) is outside" in (
        finding.summary
    )


def _leaf_with_sans(tmp_path: Path, permitted: x509.GeneralName, *sans: x509.GeneralName) -> Observation:
    corpus = CorpusPKI(PROFILES[0], tmp_path)
    constraints = x509.NameConstraints(permitted_subtrees=[permitted], excluded_subtrees=None)
    ca = corpus.ca("Corpus Constrained CA", issuer=corpus.root, extra=((constraints, True),))
    names = x509.SubjectAlternativeName([x509.DNSName(NAME), *sans])
    leaf = corpus.leaf(NAME, issuer=ca, san=False, extra=((names, False),))
    stores = [store("system", [corpus.root.cert])]
    return observe(judged("a", (leaf.der, ca.der), stores))


def test_uri_and_email_constraints_name_the_san_outside_them(tmp_path: Path) -> None:
    uri = _one(
        _leaf_with_sans(
            tmp_path / "uri",
            x509.UniformResourceIdentifier(".example.test"),
            x509.UniformResourceIdentifier("https://api.other.test/"),
        )
    )
    assert "(permitted: URI .example.test; excluded: none) and URI https://api.other.test/ is outside" in uri.summary
    email = _one(
        _leaf_with_sans(tmp_path / "email", x509.RFC822Name("example.test"), x509.RFC822Name("ops@other.test"))
    )
    assert "(permitted: email example.test; excluded: none) and email ops@other.test is outside" in email.summary


def test_an_other_name_constraint_openssl_does_not_apply_is_said_so(tmp_path: Path) -> None:
    kind = ObjectIdentifier("1.3.6.1.4.1.55555.2")
    obs = _leaf_with_sans(tmp_path, x509.OtherName(kind, b"\x0c\x01b"), x509.OtherName(kind, b"\x0c\x01a"))
    finding = _one(obs)
    assert "(permitted: otherName 1.3.6.1.4.1.55555.2; excluded: none)" in finding.summary
    assert "is of a form its constraints cover (otherName 1.3.6.1.4.1.55555.2) that OpenSSL does not apply" in (
        finding.summary
    )
    assert "(verify code 51)" in finding.summary
    assert "without the constraint forms OpenSSL does not apply" in finding.fix


def test_constraints_on_the_unserved_root_are_told_as_the_roots(tmp_path: Path) -> None:
    corpus = CorpusPKI(PROFILES[0], tmp_path)
    only = x509.NameConstraints(permitted_subtrees=[x509.DNSName("corp.test")], excluded_subtrees=None)
    root = corpus.ca("Corpus Constrained Root CA", issuer=None, extra=((only, True),))
    ca = corpus.ca("Corpus Below-Constrained CA", issuer=root)
    chain = (corpus.leaf(NAME, issuer=ca).der, ca.der)
    stores = [store("system", [root.cert])]
    finding = _one(observe(judged("a", chain, stores), judged("b", chain, stores)))
    assert (
        "'CN=Corpus Constrained Root CA' (not served: usually the root) carries name constraints, and a name of the "
        "chain (the leaf's: the subject 'CN=api.example.test' and api.example.test) is outside the names it permits"
    ) in finding.summary
    assert "nameConstraints" in finding.fix


def test_a_key_too_small_above_the_default_level_is_told_what_that_level_needs(pki: LabPKI) -> None:
    """At security level 3 an RSA-2048 leaf is refused (code 66): the fix cannot ask for 2048 bits again."""
    from tlsfleet.coordinator.diagnosis.policy import _leaf_key

    rsa2048 = x509.load_der_x509_certificate(pki.issue_leaf(NAME, key_kind="rsa2048").der)
    p256 = x509.load_der_x509_certificate(pki.issue_leaf(NAME).der)
    rsa1024 = x509.load_der_x509_certificate(pki.issue_leaf(NAME, key_kind="rsa1024").der)
    refused_at_3 = _leaf_key([rsa2048])
    assert "(refused from security level 3 on)" in refused_at_3.what
    assert "3072 bits of RSA or ECDSA P-256 at security level 3" in refused_at_3.fix
    assert "7680 bits of RSA or ECDSA P-384 at security level 4" in refused_at_3.fix
    refused_at_4 = _leaf_key([p256])
    assert "7680 bits of RSA or ECDSA P-384 at security level 4" in refused_at_4.fix
    assert "P-521 at security level 5" in refused_at_4.fix
    default_level = _leaf_key([rsa1024])
    assert "refused from" not in default_level.what
    assert "an RSA key of at least 2048 bits or an ECDSA P-256 key" in default_level.fix
