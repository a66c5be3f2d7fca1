"""OpenSSL's verdict and the CA/Browser Forum profile beside it; store verdicts judged once per content.

Chains in two profiles (CA extensions critical or not, leaf with or without an Authority Key
Identifier) are `ok` for OpenSSL either way; where the profile browsers and Go apply refuses, the
reason is a `strict_note`, never the verdict. Identical stores give one StoreVerdict naming the others in
`same_as`, and the cost of judging does not grow with them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsfleet.agent.model import AddressResult, TrustStore, Verdict
from tlsfleet.agent.probe.engine import _judged
from tlsfleet.agent.trust import libcrypto, runtimes, verify
from tlsfleet.agent.trust.names import parse_expected_name
from tlsfleet.agent.trust.stores import LoadedStore, load_store
from tlsfleet.agent.trust.strict_profile import MAX_INTERMEDIATES, profile_reasons
from tlsfleet.agent.trust.verify import (
    MAX_CHAIN_CERTS,
    ChainJudgement,
    clear_caches,
    judge_against_stores,
    verify_chain,
)

from .chains import NOW, Cert, count_verifications, ec_key, issue, loaded_store, openssl_cli, openssl_verify, rsa_key


def _chain(leaf: Cert, *untrusted: Cert) -> tuple[bytes, ...]:
    return (leaf.der, *(c.der for c in untrusted))


def _judge(leaf: Cert, untrusted: tuple[Cert, ...], roots: tuple[Cert, ...], name: str = "svc.test") -> ChainJudgement:
    return verify_chain(_chain(leaf, *untrusted), loaded_store(roots), name, NOW)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts X509_verify_cert runs, from cold caches."""
    clear_caches()
    yield count_verifications(monkeypatch)
    clear_caches()


# --- the two profiles -----------------------------------------------------------------------------


@pytest.mark.parametrize("critical", [True, False])
@pytest.mark.parametrize("aki", [True, False])
def test_both_profiles_are_ok_for_openssl_and_the_strict_one_is_a_note(critical: bool, aki: bool) -> None:
    root = issue("Profile Root", ca=True, critical=critical)
    inter = issue("Profile Intermediate", root, ca=True, critical=critical)
    leaf = issue("svc.test", inter, aki=aki)
    j = _judge(leaf, (inter,), (root,))
    assert (j.verdict, j.code) == (Verdict.OK, 0), j
    assert len(j.verified_path) == 3
    note = j.strict_note
    assert ("lacks a critical basicConstraints" in note) is (not critical), note
    assert ("CN=Profile Intermediate" in note) is (not critical)
    assert ("leaf has no Authority Key Identifier" in note) is (not aki), note
    if critical and aki:
        assert note == ""


def test_cn_only_leaf_is_ok_with_a_note() -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    j = _judge(issue("legacy.test", inter, san=[]), (inter,), (root,), "legacy.test")
    assert j.verdict is Verdict.OK
    assert "no subjectAltName" in j.strict_note and "CN" in j.strict_note


def test_root_without_basic_constraints_is_ok_with_a_note() -> None:
    root = issue("Old Root", ca=True, basic_constraints=False)
    inter = issue("Intermediate", root, ca=True)
    j = _judge(issue("svc.test", inter), (inter,), (root,))
    assert j.verdict is Verdict.OK
    assert j.strict_note == "CA certificate 'CN=Old Root' has no basicConstraints"


def test_partial_wildcard_is_ok_for_openssl_verify_with_a_note() -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    j = _judge(issue("web", inter, san=["s*.lab.test"]), (inter,), (root,), "svc.lab.test")
    assert j.verdict is Verdict.OK
    assert "s*.lab.test" in j.strict_note


def test_the_note_is_only_for_what_openssl_accepts() -> None:
    root = issue("Root", ca=True, critical=False)
    inter = issue("Intermediate", root, ca=True, critical=False)
    leaf = issue("svc.test", inter, aki=False, not_after=NOW - timedelta(days=1), not_before=NOW - timedelta(days=9))
    j = _judge(leaf, (inter,), (root,))
    assert (j.verdict, j.code, j.strict_note) == (Verdict.EXPIRED, 10, "")


def test_profile_reasons_for_weak_digests_keys_and_depth() -> None:
    expected = parse_expected_name("svc.test")
    rsa_root = issue("RSA Root", ca=True, key=rsa_key())
    sha1 = issue("SHA-1 Intermediate", rsa_root, ca=True, digest="sha1")
    leaf = issue("svc.test", sha1)
    reasons = profile_reasons([leaf.cert, sha1.cert, rsa_root.cert], expected)
    assert reasons == ["'CN=SHA-1 Intermediate' is signed with sha1WithRSAEncryption, a weak digest"]

    weak_root = issue("Weak Root", ca=True, key=rsa_key(1024))
    inter = issue("Intermediate", weak_root, ca=True)
    reasons = profile_reasons([issue("svc.test", inter).cert, inter.cert, weak_root.cert], expected)
    assert reasons == ["CA certificate 'CN=Weak Root' has a 1024-bit RSA key (the profile needs 2048)"]

    cas = [issue("Deep Root", ca=True)]
    for i in range(MAX_INTERMEDIATES + 1):
        cas.append(issue(f"Deep {i}", cas[-1], ca=True))
    path = [issue("svc.test", cas[-1]).cert, *(c.cert for c in reversed(cas))]
    limit = f"path has 9 intermediates, over the profile's limit of {MAX_INTERMEDIATES}"
    assert profile_reasons(path, expected) == [limit]


def test_profile_reasons_name_eddsa_keys_of_the_leaf_and_the_ca(tmp_path: Path) -> None:
    from tlsfleet.coordinator.lab.corpus import PROFILES, CorpusPKI

    corpus = CorpusPKI(PROFILES[0], tmp_path)
    ca = corpus.ca("Corpus Ed25519 CA", issuer=corpus.root, key_kind="ed25519")
    leaf = corpus.leaf("svc.test", issuer=ca, key_kind="ed448")
    reasons = profile_reasons([leaf.cert, ca.cert, corpus.root.cert], parse_expected_name("svc.test"))
    assert "leaf has an Ed448 key (RSA and ECDSA only)" in reasons
    assert "CA certificate 'CN=Corpus Ed25519 CA' has an Ed25519 key (RSA and ECDSA only)" in reasons


def test_a_long_path_openssl_accepts_gets_the_depth_note() -> None:
    cas = [issue("Deep Root", ca=True)]
    for i in range(MAX_INTERMEDIATES + 1):
        cas.append(issue(f"Deep {i}", cas[-1], ca=True))
    leaf = issue("svc.test", cas[-1])
    j = _judge(leaf, tuple(reversed(cas[1:])), (cas[0],))
    assert j.verdict is Verdict.OK
    assert "over the profile's limit" in j.strict_note


def test_sha1_accepted_at_level_0_is_noted() -> None:
    rsa_root = issue("RSA Root", ca=True, key=rsa_key())
    sha1 = issue("SHA-1 Intermediate", rsa_root, ca=True, digest="sha1")
    leaf = issue("svc.test", sha1)
    store = libcrypto.X509Store([rsa_root.der])
    nv = libcrypto.verify(store, leaf.der, [sha1.der], at=int(NOW.timestamp()), host="svc.test", auth_level=0)
    assert nv.code == 0 and len(nv.chain) == 3
    expected = parse_expected_name("svc.test")
    assert "weak digest" in profile_reasons([leaf.cert, sha1.cert, rsa_root.cert], expected)[0]


# --- identical stores, one verdict ----------------------------------------------------------------


def _file_store(tmp: Path, name: str, *roots: Cert) -> LoadedStore:
    path = tmp / f"{name.replace(':', '_')}.pem"
    path.write_bytes(b"".join(r.pem for r in roots))
    return load_store(name, path)


def test_identical_stores_yield_one_verdict_with_same_as(tmp_path: Path, calls: list[int]) -> None:
    root, other = issue("Root", ca=True), issue("Other Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("svc.test", inter)
    stores = (
        _file_store(tmp_path, "system", other, root),
        _file_store(tmp_path, "ssl_cert_file", root, other),  # same set, another order
        _file_store(tmp_path, "certifi", other),
        _file_store(tmp_path, "extra:lab", root, other),
    )
    verdicts = judge_against_stores(_chain(leaf, inter), stores, "svc.test", NOW, NOW + timedelta(days=45))
    assert [(v.store, v.same_as) for v in verdicts] == [("system", ("ssl_cert_file", "extra:lab")), ("certifi", ())]
    system, certifi = verdicts
    assert (system.at_agent_time, system.verify_code) == (Verdict.OK, 0)
    assert (system.at_reference_time, system.reference_verify_code) == (Verdict.EXPIRED, 10)
    assert (certifi.at_agent_time, certifi.verify_code) == (Verdict.UNKNOWN_ISSUER, 20)
    assert len(calls) == 4  # two contents, two times

    # Judged again (another probe): nothing is verified anew.
    judge_against_stores(_chain(leaf, inter), stores, "svc.test", NOW, NOW + timedelta(days=45))
    assert len(calls) == 4


def test_empty_stores_are_not_merged(tmp_path: Path) -> None:
    leaf = issue("svc.test", issue("Intermediate", issue("Root", ca=True), ca=True))
    stores = (
        LoadedStore(TrustStore("requests_ca_bundle", "file", "/missing/a", 0, "", "missing a"), ()),
        LoadedStore(TrustStore("curl_ca_bundle", "file", "/missing/b", 0, "", "missing b"), ()),
    )
    a, b = judge_against_stores(_chain(leaf), stores, "svc.test", NOW, None)
    assert (a.store, a.same_as, b.store, b.same_as) == ("requests_ca_bundle", (), "curl_ca_bundle", ())
    assert "missing a" in a.detail and "missing b" in b.detail


def test_cost_does_not_grow_with_identical_stores(tmp_path: Path, calls: list[int]) -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("svc.test", inter)
    stores = tuple(_file_store(tmp_path, f"extra:s{i}", root) for i in range(5))
    (v,) = judge_against_stores(_chain(leaf, inter), stores, "svc.test", NOW, None)
    assert v.same_as == ("extra:s1", "extra:s2", "extra:s3", "extra:s4")
    assert len(calls) == 1


def test_engine_lists_each_content_once_and_names_the_rest(tmp_path: Path) -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("svc.test", inter)
    stores = (
        _file_store(tmp_path, "system", root),
        _file_store(tmp_path, "certifi", issue("Public Root", ca=True)),
        _file_store(tmp_path, "extra:lab", root),
    )
    address = AddressResult(address="127.0.0.1", chain=_chain(leaf, inter))
    judged = _judged(address, stores, "svc.test", NOW, None)
    assert [(s.store, s.same_as) for s in judged.stores] == [("system", ("extra:lab",)), ("certifi", ())]
    assert [s.at_agent_time for s in judged.stores] == [Verdict.OK, Verdict.UNKNOWN_ISSUER]


# --- the cache --------------------------------------------------------------------------------------


def test_a_changed_store_never_meets_an_old_judgement(tmp_path: Path) -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    chain = _chain(issue("svc.test", inter), inter)
    path = tmp_path / "bundle.pem"
    path.write_bytes(root.pem)
    before = verify_chain(chain, load_store("system", path), "svc.test", NOW)
    path.write_bytes(issue("Replacement Root", ca=True).pem)  # same name, same path, new content
    after = verify_chain(chain, load_store("system", path), "svc.test", NOW)
    assert (before.verdict, after.verdict) == (Verdict.OK, Verdict.UNKNOWN_ISSUER)


def test_a_judgement_serves_its_whole_span_between_validity_edges(calls: list[int]) -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    # Far from any edge: one judgement serves the hours and days until the next one (a report run each hour
    # finds its chains judged).
    leaf = issue("svc.test", inter)
    start = NOW.replace(minute=0, second=0) + timedelta(days=2)
    first = _judge_at(leaf, inter, root, start)
    assert _judge_at(leaf, inter, root, start + timedelta(minutes=59, seconds=59)) is first
    assert _judge_at(leaf, inter, root, start + timedelta(days=3, hours=5)) is first
    assert len(calls) == 1
    # A validity edge splits the span where OpenSSL puts it: the last second before notAfter is valid, notAfter
    # itself expired, and each side is judged once.
    edge = start + timedelta(days=1, minutes=30)
    short = issue("svc.test", inter, not_after=edge)
    assert _judge_at(short, inter, root, edge - timedelta(minutes=29)).verdict is Verdict.OK
    assert _judge_at(short, inter, root, edge - timedelta(seconds=1)).verdict is Verdict.OK
    assert _judge_at(short, inter, root, edge).verdict is Verdict.EXPIRED
    assert _judge_at(short, inter, root, edge + timedelta(days=9)).verdict is Verdict.EXPIRED
    assert len(calls) == 3


def _judge_at(leaf: Cert, inter: Cert, root: Cert, at: object) -> ChainJudgement:
    return verify_chain(_chain(leaf, inter), loaded_store((root,)), "svc.test", at)  # type: ignore[arg-type]


def test_a_store_root_edge_also_splits_the_span(calls: list[int]) -> None:
    edge = NOW.replace(minute=0, second=0) + timedelta(days=3, minutes=10)
    root = issue("Short Root", ca=True, not_after=edge)
    inter = issue("Intermediate", root, ca=True, not_after=edge + timedelta(days=300))
    leaf = issue("svc.test", inter, not_after=edge + timedelta(days=30))
    assert _judge_at(leaf, inter, root, edge - timedelta(seconds=1)).verdict is Verdict.OK
    assert _judge_at(leaf, inter, root, edge + timedelta(seconds=1)).verdict is Verdict.EXPIRED


def test_a_java_constraints_date_splits_the_span(calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("svc.test", inter)
    deny = int((NOW + timedelta(days=5)).timestamp())
    constraint = runtimes.JavaConstraint(
        "EC", key_size=("<", 1024), deny_after=deny, text="EC keySize < 1024 & denyAfter"
    )
    rules = runtimes.VerifyRules(
        runtime="java", partial_chain=True, java=runtimes.JavaRules(certpath=(constraint,), tls=(), source="test")
    )
    monkeypatch.setattr(verify, "_rules_for", lambda _store: rules)
    assert _judge_at(leaf, inter, root, NOW).verdict is Verdict.OK
    assert _judge_at(leaf, inter, root, datetime.fromtimestamp(deny - 1, UTC)).verdict is Verdict.OK
    assert len(calls) == 1  # one span up to the constraint's date
    refused = _judge_at(leaf, inter, root, datetime.fromtimestamp(deny, UTC))
    assert refused.verdict is not Verdict.OK and refused.code in (66, 67)
    assert len(calls) == 2


# --- hostile input ---------------------------------------------------------------------------------


def test_a_pile_of_look_alike_issuers_stays_bounded(tmp_path: Path) -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("svc.test", inter)
    # Same name and key identifier as the real intermediate, other keys: every one links by name and id.
    ski = inter.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    look_alikes = [issue("Intermediate", root, ca=True, key=ec_key(), ski=ski) for _ in range(MAX_CHAIN_CERTS + 4)]
    served = (leaf, *look_alikes, inter)
    j = verify_chain(_chain(*served), loaded_store((root,)), "svc.test", NOW)
    assert f"judged on its first {MAX_CHAIN_CERTS}" in j.detail
    if openssl_cli() is not None:
        kept = served[1:MAX_CHAIN_CERTS]
        cli = openssl_verify(tmp_path, leaf, kept, (root,), "svc.test", NOW, libcrypto.security_level())
        assert j.code == cli.code


def test_garbage_is_judged_not_raised() -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaf = issue("svc.test", inter)
    store = loaded_store((root,))
    j = verify_chain((b"\x30\x03\x02\x01\x00",), store, "svc.test", NOW)
    assert (j.verdict, j.code) == (Verdict.INVALID, 1)
    j = verify_chain((leaf.der + b"\x00",), store, "svc.test", NOW)  # trailing bytes, as TLS refuses them
    assert j.verdict is Verdict.INVALID
    j = verify_chain((leaf.der, b"junk", inter.der), store, "svc.test", NOW)
    assert (j.verdict, j.code) == (Verdict.OK, 0) and "#1 ignored" in j.detail


def test_concurrent_judgements_agree() -> None:
    root = issue("Root", ca=True)
    inter = issue("Intermediate", root, ca=True)
    leaves = [issue(f"svc{i}.test", inter, eku=[ExtendedKeyUsageOID.SERVER_AUTH]) for i in range(8)]
    store = loaded_store((root,))
    results: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for k in range(50):
            at = NOW + timedelta(hours=k)
            code = verify_chain(_chain(leaves[i], inter), store, f"svc{i}.test", at).code
            with lock:
                results.append(code)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 400


def test_the_library_is_the_one_ssl_uses() -> None:
    import ssl

    assert libcrypto.unavailable_reason() == ""
    assert ssl.OPENSSL_VERSION.split()[1] in libcrypto.library_version()
    assert libcrypto.security_level() >= 0
