"""Chains built with `cryptography` in the shapes the offline verifier must judge as OpenSSL does, and the
real `openssl verify` to ask.

`Maker` issues certificates with every knob the profiles differ on: extensions critical or not, with or
without an Authority Key Identifier, no basicConstraints, path lengths, weak keys, SHA-1 and MD5
signatures (which `cryptography` refuses to make: the TBS is signed by hand), unknown critical
extensions. `openssl_verify` runs the `openssl` command line against files holding the same
certificates and returns its first error code (0 for OK).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsfleet.agent.model import TrustStore
from tlsfleet.agent.trust import libcrypto, verify
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.stores import LoadedStore, store_fingerprint

NOW = datetime.now(UTC).replace(microsecond=0)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, bits)


@dataclass(frozen=True)
class Cert:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


# --- SHA-1 / MD5 signatures, which cryptography will not produce --------------------------------------

_SHA256_WITH_RSA = bytes.fromhex("2a864886f70d01010b")
_WEAK_RSA_OIDS = {"sha1": bytes.fromhex("2a864886f70d010105"), "md5": bytes.fromhex("2a864886f70d010104")}


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def resign_weak(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey, digest: str) -> x509.Certificate:
    """The same certificate signed with sha1WithRSAEncryption or md5WithRSAEncryption (both OIDs have the
    length of sha256WithRSAEncryption's, so only the signature changes size-wise)."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(_SHA256_WITH_RSA) == 1, "the TBS must name sha256WithRSAEncryption exactly once"
    tbs = tbs.replace(_SHA256_WITH_RSA, _WEAK_RSA_OIDS[digest])
    algorithm = hashes.SHA1() if digest == "sha1" else hashes.MD5()
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), algorithm)
    algid = _tlv(0x30, _tlv(0x06, _WEAK_RSA_OIDS[digest]) + b"\x05\x00")
    return x509.load_der_x509_certificate(_tlv(0x30, tbs + algid + _tlv(0x03, b"\x00" + signature)))


# --- issuing ---------------------------------------------------------------------------------------------

_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
UNKNOWN_CRITICAL_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def issue(
    cn: str,
    issuer: Cert | None = None,
    *,
    key: PrivateKey | None = None,
    ca: bool = False,
    critical: bool = True,
    basic_constraints: bool = True,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | bool | None = True,
    aki: bool = True,
    san: Sequence[str] | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    digest: str = "sha256",
    unknown_critical: bool = False,
    issuer_name: x509.Name | None = None,
    aki_from: PrivateKey | None = None,
    ski: bytes | None = None,
) -> Cert:
    """One certificate. `issuer` None makes it self-signed. CA extensions are critical unless
    `critical=False`; a leaf gets a SAN of `cn` unless `san` says otherwise ([] for none)."""
    key = key or ec_key()
    signer = issuer.key if issuer is not None else key
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or (issuer.name if issuer is not None else subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or (NOW - timedelta(days=365 if ca else 1)))
        .not_valid_after(not_after or (NOW + timedelta(days=3650 if ca else 30)))
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=critical if ca else True
        )
    if key_usage is True:
        builder = builder.add_extension(_CA_USAGE if ca else _LEAF_USAGE, critical=critical if ca else True)
    elif isinstance(key_usage, x509.KeyUsage):
        builder = builder.add_extension(key_usage, critical=critical)
    subject_key_id = (
        x509.SubjectKeyIdentifier(ski) if ski else x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    )
    builder = builder.add_extension(subject_key_id, critical=False)
    if aki and (issuer is not None or aki_from is not None):
        source = aki_from or signer
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(source.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    names = [cn] if san is None and not ca else list(san or [])
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    if not ca:
        usages = list(eku) if eku is not None else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if unknown_critical:
        builder = builder.add_extension(x509.UnrecognizedExtension(UNKNOWN_CRITICAL_OID, b"\x05\x00"), critical=True)
    cert = builder.sign(signer, hashes.SHA256())
    if digest != "sha256":
        assert isinstance(signer, rsa.RSAPrivateKey), "weak digests are made with RSA issuers"
        cert = resign_weak(cert, signer, digest)
    return Cert(cert, key)


def loaded_store(roots: Sequence[Cert], name: str = "test") -> LoadedStore:
    certs = tuple(r.cert for r in roots)
    fps = [fingerprint(r.der) for r in roots]
    info = TrustStore(name, "file", f"/nonexistent/{name}.pem", len(certs), store_fingerprint(fps))
    return LoadedStore(info, certs)


# --- the real openssl verify ------------------------------------------------------------------------------

_ERROR_LINE = re.compile(r"error (\d+) at (-?\d+) depth lookup")


def openssl_cli() -> str | None:
    """The `openssl` command when it is the same OpenSSL version Python's ssl uses, else None."""
    path = shutil.which("openssl")
    if path is None:
        return None
    out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30, check=False).stdout
    return path if out.split()[:2] == ssl.OPENSSL_VERSION.split()[:2] else None


def openssl_skip_reason() -> str:
    path = shutil.which("openssl")
    if path is None:
        return "no openssl command on PATH"
    out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30, check=False).stdout
    return f"openssl command is {out.strip()!r}, Python's ssl uses {ssl.OPENSSL_VERSION!r}"


@dataclass(frozen=True)
class CliResult:
    code: int
    depth: int | None
    command: str


def openssl_verify(
    tmp: Path,
    leaf: Cert,
    untrusted: Sequence[Cert],
    roots: Sequence[Cert],
    name: str | None,
    at: datetime,
    auth_level: int,
) -> CliResult:
    """`openssl verify` restricted to `roots` (no default CApath/CAstore), as a TLS client verifies its
    server (-purpose sslserver) at the host's security level (-auth_level): its first error. No roots
    is the empty store (-no-CAfile)."""
    cli = openssl_cli()
    assert cli is not None
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "root.pem").write_bytes(b"".join(r.pem for r in roots))
    (tmp / "leaf.pem").write_bytes(leaf.pem)
    args = [cli, "verify", "-no-CApath", "-no-CAstore", "-purpose", "sslserver", "-auth_level", str(auth_level)]
    # An empty file is refused by -CAfile; -no-CAfile is the empty store.
    args += ["-CAfile", str(tmp / "root.pem")] if roots else ["-no-CAfile"]
    if untrusted:
        (tmp / "chain.pem").write_bytes(b"".join(c.pem for c in untrusted))
        args += ["-untrusted", str(tmp / "chain.pem")]
    if name is not None:
        try:
            ipaddress.ip_address(name)
            args += ["-verify_ip", name]
        except ValueError:
            args += ["-verify_hostname", name]
    args += ["-attime", str(int(at.timestamp())), str(tmp / "leaf.pem")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    command = " ".join(a.replace(str(tmp) + "/", "") for a in args[1:])
    match = _ERROR_LINE.search(done.stderr + done.stdout)
    if done.returncode == 0 and match is None:
        return CliResult(0, None, command)
    assert match is not None, f"openssl verify failed without an error line: {done.stdout!r} {done.stderr!r}"
    return CliResult(int(match.group(1)), int(match.group(2)), command)


def pem_of(der: bytes) -> bytes:
    """A CERTIFICATE block of `der`, 64 characters a line."""
    body = base64.b64encode(der)
    lines = b"".join(body[i : i + 64] + b"\n" for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"-----END CERTIFICATE-----\n"


def openssl_verify_store(
    tmp: Path, store: Path, chain: Sequence[bytes], name: str, at: datetime, *, capath: bool = False
) -> int:
    """The first error code of the real `openssl verify` of `chain` (leaf first, DER) with the store file
    `store` (or, with `capath`, the hashed directory) as its only trust, as a TLS client verifies its server at
    the host's security level; 0 when it verifies. The store file is read as written: TRUSTED CERTIFICATE
    blocks and all."""
    from tlsfleet.agent.trust import libcrypto

    cli = openssl_cli()
    assert cli is not None
    (tmp / "leaf.pem").write_bytes(pem_of(chain[0]))
    args = [cli, "verify", "-no-CAstore", "-purpose", "sslserver", "-auth_level", str(libcrypto.security_level())]
    args += ["-no-CAfile", "-CApath", str(store)] if capath else ["-no-CApath", "-CAfile", str(store)]
    if len(chain) > 1:
        (tmp / "chain.pem").write_bytes(b"".join(pem_of(d) for d in chain[1:]))
        args += ["-untrusted", str(tmp / "chain.pem")]
    args += ["-verify_hostname", name, "-attime", str(int(at.timestamp())), str(tmp / "leaf.pem")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    match = _ERROR_LINE.search(done.stderr + done.stdout)
    if done.returncode == 0 and match is None:
        return 0
    assert match is not None, f"openssl verify failed without an error line: {done.stderr!r}"
    return int(match.group(1))


def store_file_code(store: Path, chain: Sequence[bytes], name: str, at: datetime) -> int:
    """The verify code of tlsfleet's store verdict for `chain` with the store read from `store` (a file or a
    hashed directory), as the agent judges a store: caches cleared first."""
    from tlsfleet.agent.trust.stores import load_store
    from tlsfleet.agent.trust.verify import clear_caches, judge_against_stores

    clear_caches()
    (verdict,) = judge_against_stores(tuple(chain), (load_store("store", store),), name, at, at)
    return verdict.verify_code


def count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every X509_verify_cert run of the store judgements (pytest's monkeypatch
    puts libcrypto.verify back afterwards)."""
    seen: list[int] = []
    real = libcrypto.verify

    def counting(*args: object, **kwargs: object) -> libcrypto.NativeVerification:
        seen.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verify.libcrypto, "verify", counting)
    return seen
