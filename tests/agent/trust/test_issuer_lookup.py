"""A store is read into OpenSSL only as far as a chain can reach it, and verifies as the whole store does.

Each verdict is held against `openssl verify` with the whole store; the count of certificates read says
that the rest were left out."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import libcrypto, verify
from tlsfleet.agent.trust.issuer_lookup import StoreIndex, name_key
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


def test_a_chain_whose_names_cannot_be_read_reaches_the_whole_store() -> None:
    index = StoreIndex.of([c.cert for c in FILLERS])
    assert index.reachable([None]) is None
    assert index.reachable([FILLERS[5].cert]) == [5]
    assert index.reachable([issue("svc.test", issue("Elsewhere", ca=True)).cert]) == []
