"""What a store verdict reads into OpenSSL: of a store, only what the chain can reach (verifying as the
whole store does), and the served chain once for every store and name it is judged against.

Each verdict is held against `openssl verify` with the whole store; counts of certificates read say what
was left out."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import issuer_lookup, libcrypto, verify
from tlsfleet.agent.trust.issuer_lookup import StoreIndex, chain_names, name_key
from tlsfleet.agent.trust.verify import clear_caches, verify_chain

from .chains import NOW, Cert, issue, loaded_store, openssl_cli, openssl_skip_reason, openssl_verify

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())

FILLERS = [issue(f"Filler Root {i}", ca=True) for i in range(40)]


def _read_into_openssl(store: verify.LoadedStore) -> int:
    trust = verify._trust_for(store)
    assert trust.native is not None
    return trust.native.size


def _agrees(tmp: Path, leaf: Cert, untrusted: list[Cert], roots: list[Cert], name: str) -> verify.ChainJudgement:
    """The verdict against `roots`, whose store stays cached across calls, beside openssl verify's."""
    store = loaded_store(roots)
    judged = verify_chain((leaf.der, *(c.der for c in untrusted)), store, name, NOW)
    expected = openssl_verify(tmp, leaf, untrusted, roots, name, NOW, libcrypto.security_level())
    assert judged.code == expected.code, expected.command
    return judged


@pytest.fixture(autouse=True)
def _cold() -> None:
    clear_caches()


def test_an_issuer_named_in_other_case_and_spacing_is_found(tmp_path: Path) -> None:
    root = issue("Lab  Root   CA", ca=True)
    # The same name as OpenSSL compares it: other case, spaces trimmed and collapsed.
    written = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, " lab ROOT ca ")])
    assert written.public_bytes() != root.name.public_bytes()
    assert name_key(written) == name_key(root.name)
    intermediate = issue("Lab Intermediate", root, ca=True, issuer_name=written)
    leaf = issue("svc.test", intermediate)
    judged = _agrees(tmp_path, leaf, [intermediate], [*FILLERS, root], "svc.test")
    assert judged.verdict is Verdict.OK


def test_only_what_the_chain_reaches_is_read_and_cross_signers_are_followed(tmp_path: Path) -> None:
    old_root = issue("Old Root", ca=True)
    new_root = issue("New Root", ca=True)
    # The store has the new root only as cross-signed by the old one: reaching the old root takes a second step.
    cross = issue("New Root", old_root, ca=True, key=new_root.key)
    intermediate = issue("Issuing CA", new_root, ca=True)
    leaf = issue("svc.test", intermediate)
    roots = [*FILLERS, cross, old_root]
    judged = _agrees(tmp_path, leaf, [intermediate], roots, "svc.test")
    assert judged.verdict is Verdict.OK
    assert _read_into_openssl(loaded_store(roots)) == 2  # the cross-signed root and its issuer, no filler

    # Another chain against the same store reads what it needs on top; one from elsewhere reads nothing.
    judged = _agrees(tmp_path, issue("svc.test", FILLERS[3]), [], roots, "svc.test")
    assert judged.verdict is Verdict.OK
    assert _read_into_openssl(loaded_store(roots)) == 3
    unknown = _agrees(tmp_path, issue("svc.test", issue("Other CA", ca=True)), [], roots, "svc.test")
    assert unknown.verdict is Verdict.LEAF_ONLY_UNVERIFIABLE
    assert _read_into_openssl(loaded_store(roots)) == 3


def test_a_name_that_is_issuer_and_subject_in_the_same_bytes_is_read_once() -> None:
    """Keys as reading both names gives, with one reading where the two are the same bytes (long-form lengths
    included); a root whose issuer is written in other case or spacing is read twice."""
    long_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"Unit {i} " * 6) for i in range(4)])
    key = FILLERS[0].key
    long_root = (
        x509.CertificateBuilder()
        .subject_name(long_name)
        .issuer_name(long_name)
        .public_key(key.public_key())
        .serial_number(2**150)
        .not_valid_before(NOW)
        .not_valid_after(NOW)
        .sign(key, hashes.SHA256())
    )
    root = issue("Lab Root", ca=True)
    other_spelling = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "LAB  root")])
    respelled = issue("Lab Root", ca=True, issuer_name=other_spelling)
    leaf = issue("svc.test", root)
    certs = [long_root, root.cert, respelled.cert, leaf.cert]
    assert len(long_name.public_bytes()) > 127
    assert [issuer_lookup._issuer_is_subject(c) for c in certs] == [True, True, False, False]
    index = StoreIndex.of(certs)
    assert list(index.issuers) == [name_key(c.issuer) for c in certs]
    assert index.by_subject[name_key(root.name)] == (1, 2)


def test_a_chain_whose_names_cannot_be_read_reaches_the_whole_store() -> None:
    index = StoreIndex.of([c.cert for c in FILLERS])
    assert chain_names([FILLERS[1].cert, None]) is None  # a certificate only OpenSSL reads
    assert index.reachable(None) is None
    assert index.reachable(chain_names([FILLERS[5].cert])) == [5]
    assert index.reachable(chain_names([issue("svc.test", issue("Elsewhere", ca=True)).cert])) == []


def test_a_served_chain_is_read_into_openssl_once_whatever_it_is_judged_against(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = issue("Lab Root", ca=True)
    intermediate = issue("Lab Intermediate", root, ca=True)
    leaf = issue("svc.test", intermediate, san=[f"svc{i}.test" for i in range(5)])
    stores = tuple(loaded_store([root, *FILLERS[:i]], f"store-{i}") for i in range(3))
    reads: list[bytes] = []
    real = libcrypto._d2i

    def counting(crypto: object, der: bytes) -> int | None:
        reads.append(der)
        return real(crypto, der)  # type: ignore[arg-type]

    monkeypatch.setattr(libcrypto, "_d2i", counting)
    for i in range(5):  # every name a judgement of its own
        verdicts = verify.judge_against_stores((leaf.der, intermediate.der), stores, f"svc{i}.test", NOW, NOW)
        assert [v.at_agent_time for v in verdicts] == [Verdict.OK] * 3
    # Once to know that OpenSSL reads it, once for the verifications; each store's root once.
    assert reads.count(leaf.der) == 2
    assert reads.count(root.der) == 3
