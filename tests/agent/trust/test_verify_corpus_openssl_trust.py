"""Store certificates with OpenSSL trust settings (TRUSTED CERTIFICATE blocks, as `openssl x509 -addtrust /
-addreject -trustout` writes them and OpenSSL-format bundles ship them) are judged as `openssl verify -CAfile`
judges them: a rejected serverAuth refuses (28), a trusted serverAuth accepts a root whose own EKU lacks it, and
a trusted intermediate is an anchor without a root. The store is read from its file by `load_store`, as the agent
reads it, and each case's code is first asked of the real `openssl verify` on the same file."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsfleet.agent.trust.stores import load_store
from tlsfleet.agent.trust.verify import clear_caches, judge_against_stores

from .chains import NOW, Cert, ec_key, issue, openssl_cli, openssl_skip_reason, openssl_verify_store, store_file_code

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())

_ERROR_LINE = re.compile(r"error (\d+) at (-?\d+) depth lookup")
NAME = "svc.test"


def _trusted_pem(tmp: Path, cert: Cert, *settings: str) -> bytes:
    """The certificate as the real `openssl x509 -trustout` writes it with these -addtrust/-addreject settings."""
    src = tmp / "plain.pem"
    src.write_bytes(cert.pem)
    done = subprocess.run(
        [str(openssl_cli()), "x509", "-in", str(src), "-trustout", *settings],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.startswith(b"-----BEGIN TRUSTED CERTIFICATE-----"), done.stdout[:60]
    return done.stdout


def _root_with_eku(eku: x509.ObjectIdentifier) -> Cert:
    """A self-signed CA whose own extendedKeyUsage names only `eku`."""
    key = ec_key()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "EKU Root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Cert(cert, key)


def _openssl(tmp: Path, store: Path, leaf: Cert, untrusted: tuple[Cert, ...], *, capath: bool = False) -> int:
    """The first error of the real `openssl verify` with `store` as its only trust (-CAfile, or -CApath)."""
    return openssl_verify_store(tmp, store, (leaf.der, *(c.der for c in untrusted)), NAME, NOW, capath=capath)


def _tlsfleet(store: Path, leaf: Cert, untrusted: tuple[Cert, ...]) -> int:
    return store_file_code(store, (leaf.der, *(c.der for c in untrusted)), NAME, NOW)


def _pki() -> tuple[Cert, Cert, Cert]:
    root = issue("Trust Root", ca=True)
    inter = issue("Trust Intermediate", root, ca=True)
    return root, inter, issue(NAME, inter)


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        (("-addreject", "serverAuth"), 28),  # X509_V_ERR_CERT_REJECTED
        (("-addreject", "anyExtendedKeyUsage"), 28),
        (("-addtrust", "clientAuth"), 28),  # trusted, but for another purpose only
        (("-addtrust", "serverAuth"), 0),
    ],
)
def test_root_trust_settings_are_honoured(tmp_path: Path, settings: tuple[str, ...], code: int) -> None:
    root, inter, leaf = _pki()
    store = tmp_path / "store.pem"
    store.write_bytes(_trusted_pem(tmp_path, root, *settings))
    assert _openssl(tmp_path, store, leaf, (inter,)) == code
    assert _tlsfleet(store, leaf, (inter,)) == code


def test_trusted_server_auth_overrides_the_roots_own_eku(tmp_path: Path) -> None:
    root = _root_with_eku(ExtendedKeyUsageOID.CLIENT_AUTH)
    inter = issue("Trust Intermediate", root, ca=True)
    leaf = issue(NAME, inter)
    plain, trusted = tmp_path / "plain.pem", tmp_path / "trusted.pem"
    plain.write_bytes(root.pem)
    trusted.write_bytes(_trusted_pem(tmp_path, root, "-addtrust", "serverAuth"))
    assert (_openssl(tmp_path, plain, leaf, (inter,)), _tlsfleet(plain, leaf, (inter,))) == (26, 26)
    assert (_openssl(tmp_path, trusted, leaf, (inter,)), _tlsfleet(trusted, leaf, (inter,))) == (0, 0)


def test_an_explicitly_trusted_intermediate_is_an_anchor(tmp_path: Path) -> None:
    _, inter, leaf = _pki()
    plain, trusted = tmp_path / "plain.pem", tmp_path / "trusted.pem"
    plain.write_bytes(inter.pem)
    trusted.write_bytes(_trusted_pem(tmp_path, inter, "-addtrust", "serverAuth"))
    assert (_openssl(tmp_path, plain, leaf, ()), _tlsfleet(plain, leaf, ())) == (2, 2)
    assert (_openssl(tmp_path, trusted, leaf, ()), _tlsfleet(trusted, leaf, ())) == (0, 0)


def test_stores_that_differ_only_in_trust_settings_are_judged_apart(tmp_path: Path) -> None:
    root, inter, leaf = _pki()
    plain, rejecting = tmp_path / "plain.pem", tmp_path / "rejecting.pem"
    plain.write_bytes(root.pem)
    rejecting.write_bytes(_trusted_pem(tmp_path, root, "-addreject", "serverAuth"))
    clear_caches()
    stores = (load_store("plain", plain), load_store("rejecting", rejecting))
    verdicts = judge_against_stores((leaf.der, inter.der), stores, NAME, NOW, NOW)
    assert [v.same_as for v in verdicts] == [(), ()]
    codes = {v.store: v.verify_code for v in verdicts}
    assert codes == {"plain": _openssl(tmp_path, plain, leaf, (inter,)), "rejecting": 28}
    assert codes["plain"] == 0


def test_a_hashed_directory_keeps_trust_settings(tmp_path: Path) -> None:
    root, inter, leaf = _pki()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "root.pem").write_bytes(_trusted_pem(tmp_path, root, "-addreject", "serverAuth"))
    subprocess.run([str(openssl_cli()), "rehash", str(certs)], capture_output=True, timeout=30, check=True)
    assert _openssl(tmp_path, certs, leaf, (inter,), capath=True) == 28
    assert _tlsfleet(certs, leaf, (inter,)) == 28
