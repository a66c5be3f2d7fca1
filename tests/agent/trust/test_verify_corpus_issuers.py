"""Where OpenSSL finds no issuer (20) though a certificate of the issuer's name is at hand, `held_namesakes` and
`served_namesakes` name that certificate and why OpenSSL passed it over: another key, no keyCertSign, extensions
OpenSSL finds invalid. Each shape is first held against the real `openssl verify`: it must say 20 there."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from tlsfleet.agent.trust import libcrypto
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.issuer_lookup import StoreIndex, held_namesakes, served_namesakes
from tlsfleet.agent.trust.verify import clear_caches, verify_chain

from .chains import NOW, Cert, issue, loaded_store, openssl_cli, openssl_skip_reason, openssl_verify
from .test_verify_corpus_extensions import BASIC_CONSTRAINTS, SAN, with_repeated

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())

NO_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _openssl_code(tmp: Path, leaf: Cert, untrusted: tuple[Cert, ...], roots: tuple[Cert, ...]) -> int:
    cli = openssl_verify(tmp, leaf, untrusted, roots, "svc.test", NOW, libcrypto.security_level())
    clear_caches()
    j = verify_chain((leaf.der, *(u.der for u in untrusted)), loaded_store(roots), "svc.test", NOW)
    assert j.code == cli.code, cli.command
    return cli.code


def _store_says(leaf: Cert, roots: tuple[Cert, ...]) -> str:
    certs = [r.cert for r in roots]
    return held_namesakes(leaf.der, certs, StoreIndex.of(certs))


def test_root_under_another_key(tmp_path: Path) -> None:
    # A private root made again under the same name: the leaf names the old key.
    old, new = issue("Corp Root", ca=True), issue("Corp Root", ca=True)
    leaf = issue("svc.test", old)
    assert _openssl_code(tmp_path, leaf, (), (new,)) == 20
    said = _store_says(leaf, (new,))
    assert f"the store holds 'CN=Corp Root' ({fingerprint(new.der)[:12]}) under another key" in said
    aki = leaf.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None and aki.hex() in said


def test_root_with_empty_key_usage(tmp_path: Path) -> None:
    root = issue("Corp Root", ca=True, key_usage=NO_USAGE, critical=False)
    leaf = issue("svc.test", root)
    assert _openssl_code(tmp_path, leaf, (), (root,)) == 20
    assert "its keyUsage is empty" in _store_says(leaf, (root,))


def test_leaf_with_repeated_extension(tmp_path: Path) -> None:
    root = issue("Corp Root", ca=True)
    leaf = with_repeated(issue("svc.test", root), root.key, SAN)  # type: ignore[arg-type]
    assert _openssl_code(tmp_path, leaf, (), (root,)) == 20
    assert "more than one 2.5.29.17 extension" in _store_says(leaf, (root,))


def test_stored_intermediate_with_repeated_extension(tmp_path: Path) -> None:
    root = issue("Corp Root", ca=True)
    inter = with_repeated(issue("Corp Inter", root, ca=True), root.key, BASIC_CONSTRAINTS)  # type: ignore[arg-type]
    leaf = issue("svc.test", inter)
    assert _openssl_code(tmp_path, leaf, (), (root, inter)) == 20
    said = _store_says(leaf, (root, inter))
    assert "'CN=Corp Inter'" in said and "more than one 2.5.29.19 extension" in said


def test_served_intermediate_with_repeated_extension(tmp_path: Path) -> None:
    root = issue("Corp Root", ca=True)
    inter = with_repeated(issue("Corp Inter", root, ca=True), root.key, BASIC_CONSTRAINTS)  # type: ignore[arg-type]
    leaf = issue("svc.test", inter)
    assert _openssl_code(tmp_path, leaf, (inter,), (root,)) == 20
    assert _store_says(leaf, (root,)) == ""  # the store holds no 'CN=Corp Inter'
    said = served_namesakes(leaf.der, (leaf.der, inter.der))
    assert said.startswith("the served chain holds 'CN=Corp Inter'") and "2.5.29.19" in said


def test_nothing_of_that_name_is_held() -> None:
    root, other = issue("Corp Root", ca=True), issue("Other Root", ca=True)
    leaf = issue("svc.test", root)
    assert _store_says(leaf, (other,)) == ""
    assert served_namesakes(leaf.der, (leaf.der,)) == ""
    assert held_namesakes(b"not a certificate", [other.cert], StoreIndex.of([other.cert])) == ""
