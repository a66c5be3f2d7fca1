"""Offline chain verification against one trust store, checked against a real OpenSSL client.

Each scenario is a real chain from the lab PKI. Where OpenSSL can see the same situation, a real
handshake (server and client in memory, no sockets) against the same store gives the native verify
code, and the offline verdict must be what that code maps to, except in the two places where the
offline judgement deliberately says more (a lone leaf) or is stricter (a CN-only certificate).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import libcrypto
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.names import match_name, openssl_wildcard_matches, parse_expected_name
from tlsfleet.agent.trust.stores import LoadedStore, load_store
from tlsfleet.agent.trust.verify import (
    MAX_CHAIN_CERTS,
    NativeCheck,
    NativeVerifier,
    judge_against_stores,
    verdict_from_openssl_code,
    verify_chain,
)
from tlsfleet.coordinator.lab.corpus import PROFILES, CorpusPKI
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, chain_pem, write_pem

NOW = datetime.now(UTC)


@dataclass
class Lab:
    pki: LabPKI
    other: LabPKI  # a second CA the stores may or may not trust
    tmp: Path

    def store(self, *cas: Issued, name: str = "system") -> LoadedStore:
        path = write_pem(self.tmp / f"{name}-{len(list(self.tmp.iterdir()))}.pem", chain_pem(*cas))
        return load_store(name, path)


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(LabPKI("Lab"), LabPKI("Other"), tmp_path)


def _ders(*issued: Issued) -> tuple[bytes, ...]:
    return tuple(i.der for i in issued)


def native_code(tmp: Path, served: tuple[Issued, ...], key: Issued, store: LoadedStore, name: str) -> int:
    """The verify code a default OpenSSL client trusting only `store` gets for this served chain."""
    cert_file = write_pem(tmp / "served.pem", chain_pem(*served))
    key_file = write_pem(tmp / "served.key", key.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=store.info.path)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        try:
            client.do_handshake()
            return 0
        except ssl.SSLCertVerificationError as exc:
            return int(exc.verify_code)
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            server.do_handshake()
        c_in.write(s_out.read())
    raise AssertionError("in-memory handshake did not finish")


def check(
    lab: Lab,
    served: tuple[Issued, ...],
    store: LoadedStore,
    name: str,
    expected: Verdict,
    *,
    native: Verdict | None = None,
) -> str:
    """Assert the offline verdict and the native OpenSSL one (the same unless `native` says otherwise);
    return the offline detail."""
    judgement = verify_chain(_ders(*served), store, name, datetime.now(UTC))
    assert judgement.verdict is expected, judgement.detail
    code = native_code(lab.tmp, served, served[0], store, name)
    want = native or expected
    assert verdict_from_openssl_code(code) is want, f"OpenSSL said {code}, offline said {judgement}"
    return judgement.detail


def test_ok_returns_the_verified_path(lab: Lab) -> None:
    leaf = lab.pki.issue_leaf("svc.lab.test")
    store = lab.store(lab.other.root, lab.pki.root)
    check(lab, (leaf, lab.pki.intermediate), store, "svc.lab.test", Verdict.OK)
    j = verify_chain(_ders(leaf, lab.pki.intermediate), store, "SVC.lab.test", NOW)
    assert j.verified_path == tuple(fingerprint(d) for d in _ders(leaf, lab.pki.intermediate, lab.pki.root))
    assert j.detail == ""


def test_a_name_asked_with_a_trailing_dot_is_checked_with_it_as_openssl_does(lab: Lab) -> None:
    """`openssl verify -verify_hostname svc.lab.test.` and Python's default context refuse a leaf for
    svc.lab.test (62): the store verdict keeps the dot too, and says so; a SAN written with the dot matches."""
    store = lab.store(lab.pki.root)
    leaf = lab.pki.issue_leaf("svc.lab.test")
    detail = check(lab, (leaf, lab.pki.intermediate), store, "svc.lab.test.", Verdict.HOSTNAME_MISMATCH)
    assert "svc.lab.test. ends in a dot" in detail and "they cover svc.lab.test only" in detail
    dotted = lab.pki.issue_leaf("svc.lab.test.")
    check(lab, (dotted, lab.pki.intermediate), store, "svc.lab.test.", Verdict.OK)


def test_expired_and_not_yet_valid_leaf(lab: Lab) -> None:
    store = lab.store(lab.pki.root)
    expired = lab.pki.issue_leaf("svc.lab.test", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1))
    detail = check(lab, (expired, lab.pki.intermediate), store, "svc.lab.test", Verdict.EXPIRED)
    assert "expired at" in detail
    early = lab.pki.issue_leaf("svc.lab.test", not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=30))
    detail = check(lab, (early, lab.pki.intermediate), store, "svc.lab.test", Verdict.NOT_YET_VALID)
    assert "not valid until" in detail


def test_expired_intermediate(lab: Lab) -> None:
    old = lab.pki.issue_intermediate("Lab Old Intermediate", not_after=NOW - timedelta(days=2))
    leaf = lab.pki.issue_leaf("svc.lab.test", issuer=old, not_after=NOW + timedelta(days=5))
    detail = check(lab, (leaf, old), lab.store(lab.pki.root), "svc.lab.test", Verdict.EXPIRED)
    assert "Lab Old Intermediate" in detail


def test_self_signed_leaf(lab: Lab) -> None:
    leaf = lab.pki.self_signed_leaf("svc.lab.test")
    check(lab, (leaf,), lab.store(lab.pki.root), "svc.lab.test", Verdict.SELF_SIGNED)
    # Trusted explicitly, the same certificate is fine.
    check(lab, (leaf,), lab.store(leaf), "svc.lab.test", Verdict.OK)


def test_untrusted_root_in_chain(lab: Lab) -> None:
    leaf = lab.other.issue_leaf("svc.lab.test")
    served = (leaf, lab.other.intermediate, lab.other.root)
    detail = check(lab, served, lab.store(lab.pki.root), "svc.lab.test", Verdict.UNTRUSTED_ROOT)
    assert "Other Root CA" in detail


def test_unknown_issuer_names_the_missing_issuer(lab: Lab) -> None:
    leaf = lab.other.issue_leaf("svc.lab.test")
    detail = check(lab, (leaf, lab.other.intermediate), lab.store(lab.pki.root), "svc.lab.test", Verdict.UNKNOWN_ISSUER)
    assert "Other Root CA" in detail
    ski = lab.other.root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ski.hex() in detail


def test_same_named_ca_with_another_key_is_not_an_issuer(lab: Lab, tmp_path: Path) -> None:
    twin = LabPKI("Lab")  # same names as lab.pki, different keys: a private CA re-created
    leaf = twin.issue_leaf("svc.lab.test")
    check(lab, (leaf, twin.intermediate), lab.store(lab.pki.root), "svc.lab.test", Verdict.UNKNOWN_ISSUER)


def test_a_served_signer_under_another_key_id_is_named(lab: Lab) -> None:
    corpus = CorpusPKI(PROFILES[0], lab.tmp / "corpus")
    leaf = corpus.leaf("svc.lab.test", authority_key=corpus.key("ec256", "unrelated"))
    judged = verify_chain(
        (leaf.der, corpus.intermediate.der),
        load_store("system", write_pem(lab.tmp / "roots.pem", corpus.root.pem)),
        "svc.lab.test",
        datetime.now(UTC),
    )
    assert judged.code == 20, judged.detail
    aki = leaf.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None
    assert f"the served 'CN=Corpus Critical Intermediate CA' ({fingerprint(corpus.intermediate.der)[:12]}) signed" in (
        judged.detail
    )
    assert f"is not the key id {aki.hex()}" in judged.detail


def test_a_standard_extension_openssl_does_not_handle_when_critical_is_named(lab: Lab) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = lab.pki.intermediate
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "svc.lab.test")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc.lab.test")]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    chain = (leaf.public_bytes(serialization.Encoding.DER), issuer.der)
    judged = verify_chain(chain, lab.store(lab.pki.root), "svc.lab.test", datetime.now(UTC))
    assert judged.code == 34 and judged.detail.endswith("does not handle (2.5.29.35)"), judged.detail


def test_leaf_only(lab: Lab) -> None:
    leaf = lab.pki.issue_leaf("svc.lab.test", aia_ca_issuers_url="http://127.0.0.1:9/inter.der")
    # OpenSSL 3 stops at 20 (unable to get local issuer) for a lone leaf; offline keeps it distinct.
    detail = check(
        lab,
        (leaf,),
        lab.store(lab.pki.root),
        "svc.lab.test",
        Verdict.LEAF_ONLY_UNVERIFIABLE,
        native=Verdict.UNKNOWN_ISSUER,
    )
    assert "only the leaf" in detail and "Lab Intermediate CA" in detail
    assert "caIssuers http://127.0.0.1:9/inter.der" in detail
    # A wrong intermediate sent along: more than the leaf was served, the issuer is still unknown.
    detail = check(lab, (leaf, lab.other.intermediate), lab.store(lab.pki.root), "svc.lab.test", Verdict.UNKNOWN_ISSUER)
    assert "1 other served certificate(s) did not issue it" in detail


def test_hostname_mismatch_cases(lab: Lab) -> None:
    store = lab.store(lab.pki.root)
    plain = lab.pki.issue_leaf("svc.lab.test")
    check(lab, (plain, lab.pki.intermediate), store, "other.lab.test", Verdict.HOSTNAME_MISMATCH)

    wild = lab.pki.issue_leaf("*.lab.test")
    check(lab, (wild, lab.pki.intermediate), store, "a.lab.test", Verdict.OK)
    detail = check(lab, (wild, lab.pki.intermediate), store, "a.b.lab.test", Verdict.HOSTNAME_MISMATCH)
    assert "exactly one label" in detail
    check(lab, (wild, lab.pki.intermediate), store, "lab.test", Verdict.HOSTNAME_MISMATCH)

    # OpenSSL (openssl verify -verify_hostname, Python's default context) falls back to the CN of a
    # certificate without DNS SANs, so the store verdict does too; browsers and Go do not: a strict note.
    cn_only = lab.pki.issue_leaf("legacy.lab.test", san=False)
    check(lab, (cn_only, lab.pki.intermediate), store, "legacy.lab.test", Verdict.OK)
    j = verify_chain(_ders(cn_only, lab.pki.intermediate), store, "legacy.lab.test", NOW)
    assert "no subjectAltName" in j.strict_note and "legacy.lab.test" in j.strict_note


def test_ip_mismatch_and_ip_match(lab: Lab) -> None:
    store = lab.store(lab.pki.root)
    leaf = lab.pki.issue_leaf("svc.lab.test", "127.0.0.1", "::1")
    check(lab, (leaf, lab.pki.intermediate), store, "127.0.0.1", Verdict.OK)
    j = verify_chain(_ders(leaf, lab.pki.intermediate), store, "[::1]", NOW)
    assert j.verdict is Verdict.OK
    detail = check(lab, (leaf, lab.pki.intermediate), store, "127.0.0.2", Verdict.IP_MISMATCH)
    assert "127.0.0.1" in detail
    # A DNS SAN spelling the address does not cover it.
    dns_spelled = lab.pki.issue_leaf("svc.lab.test")
    check(lab, (dns_spelled, lab.pki.intermediate), store, "127.0.0.1", Verdict.IP_MISMATCH)


def test_issuer_without_ca_flag_is_invalid(lab: Lab) -> None:
    not_a_ca = lab.pki.issue_leaf("not-a-ca.lab.test")
    leaf = lab.pki.issue_leaf("svc.lab.test", issuer=not_a_ca)
    detail = check(
        lab, (leaf, not_a_ca, lab.pki.intermediate), lab.store(lab.pki.root), "svc.lab.test", Verdict.INVALID
    )
    assert "not a CA" in detail


def test_a_purpose_refusal_names_the_extension_that_refuses(lab: Lab) -> None:
    any_usage = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    leaf = lab.pki.issue_leaf("svc.lab.test", extensions=[(any_usage, False)])
    detail = check(lab, (leaf, lab.pki.intermediate), lab.store(lab.pki.root), "svc.lab.test", Verdict.INVALID)
    assert detail.endswith("anyExtendedKeyUsage alone, which OpenSSL does not take for serverAuth"), detail


def test_an_x509_v1_issuer_is_named_as_such(lab: Lab) -> None:
    corpus = CorpusPKI(PROFILES[0], lab.tmp / "corpus")
    v1 = corpus.ca("Corpus X.509 v1 CA", issuer=corpus.root, x509_v1=True)
    judged = verify_chain(
        (corpus.leaf("svc.lab.test", issuer=v1).der, v1.der),
        load_store("system", write_pem(lab.tmp / "roots.pem", corpus.root.pem)),
        "svc.lab.test",
        datetime.now(UTC),
    )
    assert (judged.verdict, judged.code) == (Verdict.INVALID, 79)
    assert "'CN=Corpus X.509 v1 CA'" in judged.detail and "is an X.509 v1 certificate" in judged.detail


def test_bad_signature_with_matching_key_id_is_invalid(lab: Lab) -> None:
    inter = lab.pki.intermediate.cert
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "svc.lab.test")]))
        .issuer_name(inter.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc.lab.test")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(impostor_key, hashes.SHA256())
    )
    forged = Issued(cert, leaf_key)
    detail = check(lab, (forged, lab.pki.intermediate), lab.store(lab.pki.root), "svc.lab.test", Verdict.INVALID)
    assert "signature" in detail


def test_name_is_checked_before_time_as_openssl_does(lab: Lab) -> None:
    expired = lab.pki.issue_leaf("svc.lab.test", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1))
    served = (expired, lab.pki.intermediate)
    check(lab, served, lab.store(lab.pki.root), "other.lab.test", Verdict.HOSTNAME_MISMATCH)


def test_a_store_certificate_is_an_anchor_only_up_to_a_self_signed_root(lab: Lab) -> None:
    # OpenSSL without -partial_chain (openssl verify, the native client) needs the path to end in a
    # self-signed root: a store holding only the intermediate gives 2, unable to get issuer certificate.
    leaf = lab.pki.issue_leaf("svc.lab.test")
    j = verify_chain(_ders(leaf), lab.store(lab.pki.intermediate), "svc.lab.test", NOW)
    assert (j.verdict, j.code) == (Verdict.UNKNOWN_ISSUER, 2)
    assert j.verified_path == ()
    assert native_code(lab.tmp, (leaf,), leaf, lab.store(lab.pki.intermediate), "svc.lab.test") == 2
    j = verify_chain(_ders(leaf), lab.store(lab.pki.intermediate, lab.pki.root), "svc.lab.test", NOW)
    assert j.verdict is Verdict.OK
    assert j.verified_path == tuple(fingerprint(d) for d in _ders(leaf, lab.pki.intermediate, lab.pki.root))


def test_empty_or_broken_store_explains_itself(lab: Lab) -> None:
    garbage = lab.tmp / "garbage.pem"
    garbage.write_bytes(b"not a certificate at all\n")
    store = load_store("broken", garbage)
    leaf = lab.pki.issue_leaf("svc.lab.test")
    j = verify_chain(_ders(leaf, lab.pki.intermediate), store, "svc.lab.test", NOW)
    assert j.verdict is Verdict.UNKNOWN_ISSUER
    assert "store holds no certificates" in j.detail


def test_no_chain_garbage_leaf_and_ignored_garbage(lab: Lab) -> None:
    store = lab.store(lab.pki.root)
    assert verify_chain((), store, "svc.lab.test", NOW).verdict is Verdict.NO_CHAIN
    j = verify_chain((b"\x30\x03\x02\x01\x00",), store, "svc.lab.test", NOW)
    assert j.verdict is Verdict.INVALID and "not a certificate" in j.detail
    leaf = lab.pki.issue_leaf("svc.lab.test")
    j = verify_chain((leaf.der, b"junk", lab.pki.intermediate.der), store, "svc.lab.test", NOW)
    assert j.verdict is Verdict.OK
    assert "#1 ignored" in j.detail


def test_long_and_huge_chains_are_bounded(lab: Lab) -> None:
    store = lab.store(lab.pki.root)
    leaf = lab.pki.issue_leaf("svc.lab.test")
    filler = [lab.other.issue_intermediate(f"Filler {i}").der for i in range(MAX_CHAIN_CERTS + 4)]
    j = verify_chain((leaf.der, lab.pki.intermediate.der, *filler), store, "svc.lab.test", NOW)
    assert j.verdict is Verdict.OK
    assert f"judged on its first {MAX_CHAIN_CERTS}" in j.detail

    huge = (leaf.der, b"\x00" * (2 * 1024 * 1024), lab.pki.intermediate.der)
    j = verify_chain(huge, store, "svc.lab.test", NOW)
    assert j.verdict is Verdict.LEAF_ONLY_UNVERIFIABLE  # only the leaf fits in the byte budget
    assert "judged on its first 1" in j.detail


def test_judgements_are_cached(lab: Lab) -> None:
    store = lab.store(lab.pki.root)
    chain = _ders(lab.pki.issue_leaf("svc.lab.test"), lab.pki.intermediate)
    first = verify_chain(chain, store, "svc.lab.test", NOW)
    assert verify_chain(chain, store, "svc.lab.test", NOW.replace(microsecond=999_999)) is first
    assert verify_chain(list(chain), store, "svc.lab.test", NOW) is first


def test_underscore_names_are_matched(lab: Lab) -> None:
    leaf = lab.pki.issue_leaf("my_host.lab.test", "127.0.0.1")
    j = verify_chain(_ders(leaf, lab.pki.intermediate), lab.store(lab.pki.root), "my_host.lab.test", NOW)
    assert j.verdict is Verdict.OK, j.detail


def test_reference_time_flip_between_agent_and_true_time(lab: Lab) -> None:
    leaf = lab.pki.issue_leaf("svc.lab.test", not_after=NOW + timedelta(days=2))
    chain = _ders(leaf, lab.pki.intermediate)
    trusting = lab.store(lab.pki.root, name="system")
    other = lab.store(lab.other.root, name="certifi")
    skewed_agent = NOW + timedelta(days=3)  # this host's clock runs three days ahead
    verdicts = judge_against_stores(chain, (trusting, other), "svc.lab.test", skewed_agent, NOW)
    system, certifi = verdicts
    assert (system.store, system.at_agent_time, system.at_reference_time) == (
        "system",
        Verdict.EXPIRED,
        Verdict.OK,
    )
    assert len(system.verified_path) == 3
    assert "at agent time" in system.detail and "at reference time" in system.detail
    assert (certifi.at_agent_time, certifi.at_reference_time) == (
        Verdict.UNKNOWN_ISSUER,
        Verdict.UNKNOWN_ISSUER,
    )
    assert certifi.verified_path == ()

    # Behind instead: not yet valid at the agent, valid at true time.
    early = lab.pki.issue_leaf("svc.lab.test", not_before=NOW - timedelta(minutes=5))
    (v,) = judge_against_stores(
        _ders(early, lab.pki.intermediate), (trusting,), "svc.lab.test", NOW - timedelta(hours=1), NOW
    )
    assert (v.at_agent_time, v.at_reference_time) == (Verdict.NOT_YET_VALID, Verdict.OK)

    # Without a reference time, or within the same second, both columns agree.
    (v,) = judge_against_stores(chain, (trusting,), "svc.lab.test", NOW, None)
    assert v.at_agent_time is v.at_reference_time is Verdict.OK
    (v,) = judge_against_stores(chain, (trusting,), "svc.lab.test", skewed_agent, skewed_agent)
    assert v.at_agent_time is v.at_reference_time is Verdict.EXPIRED


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="neither an IP literal nor a DNS name"):
        parse_expected_name("bad name!")
    with pytest.raises(ValueError, match="neither an IP literal nor a DNS name"):
        parse_expected_name("")
    with pytest.raises(ValueError, match="sequence of DER certificates"):
        verify_chain(b"\x30\x00", _empty_store(), "a.test", NOW)
    with pytest.raises(ValueError, match="sequence of DER certificates"):
        verify_chain(["MIIB"], _empty_store(), "a.test", NOW)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain((b"x",), _empty_store(), "a.test", datetime(2024, 1, 1))


def _empty_store() -> LoadedStore:
    from tlsfleet.agent.model import TrustStore

    return LoadedStore(TrustStore("none", "file", "/nonexistent", 0, "", "missing"), ())


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("svc.lab.test", "svc.lab.test", True),
        ("SVC.Lab.Test", "svc.lab.test", True),
        ("svc.lab.test.", "svc.lab.test", False),  # OpenSSL compares SAN names as written, the dot included
        ("*.lab.test", "a.lab.test", True),
        ("*.lab.test", "a.b.lab.test", False),
        ("*.lab.test", "lab.test", False),
        ("*.test", "lab.test", False),  # never a wildcard over a single label suffix
        ("a*.lab.test", "ab.lab.test", False),  # partial-label wildcards are not honoured
        ("a.*.test", "a.b.test", False),
        ("*.*.test", "a.b.test", False),
    ],
)
def test_dns_matching_rules(pattern: str, name: str, matches: bool) -> None:
    cert = LabPKI("Names").issue_leaf(pattern).cert
    assert match_name(cert, parse_expected_name(name))[0] is matches


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("a*.lab.test", "ab.lab.test"),
        ("a*.lab.test", "a.lab.test"),
        ("*b.lab.test", "ab.lab.test"),
        ("a*c.lab.test", "abc.lab.test"),
        ("a*c.lab.test", "ac.lab.test"),
        ("a*.lab.test", "ba.lab.test"),
        ("a*.lab.test", "ab.c.lab.test"),
        ("a*.test", "ab.test"),
        ("x*.lab.test", "xn--bcher-kva.lab.test"),
        ("xn--*.lab.test", "xn--bcher-kva.lab.test"),
        ("*.lab.test", "xn--bcher-kva.lab.test"),
        ("*.lab.test", "a.lab.test"),
    ],
)
def test_openssl_wildcard_rules_are_openssls_own(lab: Lab, pattern: str, name: str) -> None:
    # The store verdicts are X509_check_host with OpenSSL's default flags, which honour partial wildcards.
    leaf = lab.pki.issue_leaf(pattern)
    judged = verify_chain(_ders(leaf, lab.pki.intermediate), lab.store(lab.pki.root), name, datetime.now(UTC))
    assert openssl_wildcard_matches(pattern, name) is (judged.verdict is Verdict.OK), judged.detail


def test_the_in_handshake_name_check_honours_partial_wildcards_only_when_told(lab: Lab) -> None:
    leaf = lab.pki.issue_leaf("a*.lab.test")
    verifier = NativeVerifier(str(write_pem(lab.tmp / "roots.pem", chain_pem(lab.pki.root))))
    context = ssl.create_default_context()
    codes = {
        partial: verifier.verify(
            _ders(leaf, lab.pki.intermediate),
            NativeCheck("ab.lab.test", context.security_level, int(context.verify_flags), True, partial),
            int(NOW.timestamp()),
        )
        for partial in (False, True)
    }
    # CPython's contexts refuse the partial wildcard (62); OpenSSL's default check, s_client's, accepts it.
    assert codes == {False: 62, True: 0}


def test_idn_names_are_compared_as_a_labels() -> None:
    cert = LabPKI("Names").issue_leaf("xn--bcher-kva.lab.test").cert
    assert match_name(cert, parse_expected_name("bücher.lab.test"))[0] is True


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (0, Verdict.OK),
        (9, Verdict.NOT_YET_VALID),
        (10, Verdict.EXPIRED),
        (18, Verdict.SELF_SIGNED),
        (19, Verdict.UNTRUSTED_ROOT),
        (20, Verdict.UNKNOWN_ISSUER),
        (2, Verdict.UNKNOWN_ISSUER),
        (21, Verdict.LEAF_ONLY_UNVERIFIABLE),
        (62, Verdict.HOSTNAME_MISMATCH),
        (64, Verdict.IP_MISMATCH),
        (23, Verdict.REVOKED),
        (7, Verdict.INVALID),
        (24, Verdict.INVALID),
        (79, Verdict.INVALID),  # invalid CA in OpenSSL 3
        (25, Verdict.INVALID),
        (26, Verdict.INVALID),
        (32, Verdict.INVALID),
        (63, Verdict.OTHER),  # email mismatch: not a server-name verdict
        (3, Verdict.OTHER),  # unable to get CRL
        (-1, Verdict.OTHER),
        (9999, Verdict.OTHER),
    ],
)
def test_verdict_from_openssl_code(code: int, verdict: Verdict) -> None:
    assert verdict_from_openssl_code(code) is verdict


def test_libcrypto_is_the_one_python_mapped_and_nothing_else_is_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_library (ldconfig, run twice) is asked only when neither the library _ssl mapped nor the _ssl
    module's own dependencies serve."""
    asked: list[str] = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: asked.append(name))
    monkeypatch.setattr(libcrypto, "_lib", None)
    monkeypatch.setattr(libcrypto, "_error", None)
    assert libcrypto.unavailable_reason() == ""
    assert libcrypto._library().where.endswith("(mapped by _ssl)")
    monkeypatch.setattr(libcrypto, "_lib", None)
    monkeypatch.setattr(libcrypto, "_mapped_libraries", lambda: (None, None))
    assert libcrypto._library().where.endswith("(the _ssl module's dependencies)")
    assert asked == []
