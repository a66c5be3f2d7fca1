"""A store certificate that OpenSSL reads and cryptography refuses (here, an extension that spells out the DEFAULT
critical FALSE, which DER forbids and OpenSSL accepts) is trusted by `openssl verify -CAfile`, so the store verdict
trusts it too. The store is read from its file by `load_store`, as the agent reads it, and the code is first asked
of the real `openssl verify` on the same file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tlsfleet.agent.trust import store_cache
from tlsfleet.agent.trust.stores import forget_cached_reads, load_store

from .chains import (
    NOW,
    Cert,
    _tlv,
    issue,
    openssl_cli,
    openssl_skip_reason,
    openssl_verify_store,
    pem_of,
    store_file_code,
)

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())

_ERROR_LINE = re.compile(r"error (\d+) at (-?\d+) depth lookup")
_SKI_OID = bytes.fromhex("0603551d0e")  # 2.5.29.14, DER-encoded with its tag
NAME = "svc.test"


def _items(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, body, whole) of each DER element in `data`, one level."""
    out = []
    pos = 0
    while pos < len(data):
        tag, first = data[pos], data[pos + 1]
        head = 2
        length = first
        if first & 0x80:
            n = first & 0x7F
            length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
            head += n
        out.append((tag, data[pos + head : pos + head + length], data[pos : pos + head + length]))
        pos += head + length
    return out


def _with_encoded_default(cert: Cert) -> bytes:
    """`cert` (self-signed, EC) with its subjectKeyIdentifier marked critical FALSE explicitly, signed anew."""
    tbs = _items(_items(cert.der)[0][1])[0][1]
    fields = []
    for tag, body, whole in _items(tbs):
        if tag == 0xA3:  # [3] extensions
            exts = []
            for _, ext, ext_whole in _items(_items(body)[0][1]):
                if ext.startswith(_SKI_OID):
                    ext_whole = _tlv(0x30, _SKI_OID + b"\x01\x01\x00" + ext[len(_SKI_OID) :])
                exts.append(ext_whole)
            whole = _tlv(0xA3, _tlv(0x30, b"".join(exts)))
        fields.append(whole)
    new_tbs = _tlv(0x30, b"".join(fields))
    assert isinstance(cert.key, ec.EllipticCurvePrivateKey)
    signature = cert.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    algorithm = _items(_items(cert.der)[0][1])[1][2]
    return _tlv(0x30, new_tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def _openssl(tmp: Path, store: Path, leaf: Cert, untrusted: tuple[Cert, ...], *, capath: bool = False) -> int:
    """The first error of the real `openssl verify` with `store` as its only trust (-CAfile, or -CApath)."""
    return openssl_verify_store(tmp, store, (leaf.der, *(c.der for c in untrusted)), NAME, NOW, capath=capath)


def _tlsfleet(store: Path, leaf: Cert, untrusted: tuple[Cert, ...]) -> int:
    return store_file_code(store, (leaf.der, *(c.der for c in untrusted)), NAME, NOW)


@pytest.fixture
def odd_pki(tmp_path: Path) -> tuple[bytes, Cert, Cert]:
    root = issue("Odd Root", ca=True)
    odd = _with_encoded_default(root)
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(odd)  # the shape needs cryptography to refuse it
    inter = issue("Odd Intermediate", root, ca=True)
    return odd, inter, issue(NAME, inter)


def test_a_root_only_openssl_reads_is_trusted(tmp_path: Path, odd_pki: tuple[bytes, Cert, Cert]) -> None:
    odd, inter, leaf = odd_pki
    store = tmp_path / "store.pem"
    store.write_bytes(pem_of(odd))
    assert _openssl(tmp_path, store, leaf, (inter,)) == 0
    assert _tlsfleet(store, leaf, (inter,)) == 0
    loaded = load_store("store", store)
    assert "only OpenSSL reads" in loaded.info.error
    assert loaded.roots == ()


def test_beside_other_roots_and_in_a_directory(tmp_path: Path, odd_pki: tuple[bytes, Cert, Cert]) -> None:
    odd, inter, leaf = odd_pki
    other = issue("Other Root", ca=True)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(other.pem + pem_of(odd))
    assert (_openssl(tmp_path, bundle, leaf, (inter,)), _tlsfleet(bundle, leaf, (inter,))) == (0, 0)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "other.pem").write_bytes(other.pem)
    (certs / "odd.pem").write_bytes(pem_of(odd))
    subprocess.run([str(openssl_cli()), "rehash", str(certs)], capture_output=True, timeout=30, check=True)
    assert (_openssl(tmp_path, certs, leaf, (inter,), capath=True), _tlsfleet(certs, leaf, (inter,))) == (0, 0)


def test_the_store_file_cache_keeps_it(
    tmp_path: Path, odd_pki: tuple[bytes, Cert, Cert], monkeypatch: pytest.MonkeyPatch
) -> None:
    odd, inter, leaf = odd_pki
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    forget_cached_reads()
    store_cache.enable()
    try:
        store = tmp_path / "store.pem"
        store.write_bytes(issue("Other Root", ca=True).pem + pem_of(odd))
        for _ in range(2):  # the second run is a fresh process's, from the saved cache
            assert _tlsfleet(store, leaf, (inter,)) == 0
            store_cache.save()
            forget_cached_reads()
    finally:
        monkeypatch.setattr(store_cache, "_enabled", False)
        forget_cached_reads()
