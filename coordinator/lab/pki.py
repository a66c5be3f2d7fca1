"""A small test PKI: a root, an intermediate, and leaves on demand, built with `cryptography`.

ECDSA P-256 keys keep generation in the sub-millisecond range, so every test makes its own PKI. Other key
kinds (P-384, RSA) are there for the certificates that need them (`key_kind`); a certificate is signed with
SHA-384 by a P-384 key, with SHA-256 otherwise, and an intermediate with SHA-1 when asked (`digest`: the
`openssl` command re-signs it, since `cryptography` refuses to sign with SHA-1).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "KeyKind", "LabPKI", "chain_pem", "cross_signed", "expired_root", "write_pem"]

KeyKind = Literal["p256", "p384", "rsa1024", "rsa2048", "rsa4096"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Extensions = Sequence[tuple[x509.ExtensionType, bool]]

_CA_LIFETIME = timedelta(days=3650)
_LEAF_LIFETIME = timedelta(days=90)
_BACKDATE = timedelta(hours=1)
# CAs start a year back so that a leaf judged at a skewed past time (clock-skew scenarios) still has
# valid issuers: only the leaf's own window decides.
_CA_BACKDATE = timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _new_key(kind: KeyKind = "p256") -> PrivateKey:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind in ("rsa1024", "rsa2048", "rsa4096"):
        return rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))
    raise ValueError(f"key kind {kind!r} is not known; accepted: p256, p384, rsa1024, rsa2048, rsa4096")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _build(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    extra: Extensions,
    path_length: int | None = None,
    basic_constraints: bool = True,
) -> x509.Certificate:
    """Sign a certificate; `issuer` None makes it self-signed. An `extra` extension replaces a default one
    of the same type."""
    issuer_name = issuer.cert.subject if issuer else subject
    signing_key = issuer.key if issuer else key
    issuer_public = issuer.key.public_key() if issuer else key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public),
            critical=False,
        )
    )
    if ca and basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    chosen: dict[x509.ObjectIdentifier, tuple[x509.ExtensionType, bool]] = {}
    for ext, critical in extra:
        chosen[ext.oid] = (ext, critical)
    for ext, critical in chosen.values():
        builder = builder.add_extension(ext, critical=critical)
    p384 = isinstance(signing_key, ec.EllipticCurvePrivateKey) and signing_key.curve.key_size == 384
    return builder.sign(signing_key, hashes.SHA384() if p384 else hashes.SHA256())


class LabPKI:
    """A root CA "<name> Root CA" and an intermediate "<name> Intermediate CA" that issues leaves."""

    def __init__(self, name: str = "Lab", *, key_kind: KeyKind = "p256") -> None:
        self.name = name
        self.key_kind: KeyKind = key_kind
        now = _now()
        root_key = _new_key(key_kind)
        self.root = Issued(
            _build(
                subject=_name(f"{name} Root CA"),
                key=root_key,
                issuer=None,
                not_before=now - _CA_BACKDATE,
                not_after=now + _CA_LIFETIME,
                ca=True,
                extra=[],
            ),
            root_key,
        )
        self.intermediate = self.issue_intermediate(f"{name} Intermediate CA")

    def issue_intermediate(
        self,
        name: str,
        *,
        issuer: Issued | None = None,
        not_after: datetime | None = None,
        key_kind: KeyKind | None = None,
        path_length: int | None = None,
        basic_constraints: bool = True,
        aia_ca_issuers_url: str | None = None,
        digest: Literal["sha256", "sha1"] = "sha256",
        extensions: Extensions = (),
    ) -> Issued:
        """A CA certificate named `name`, issued by `issuer` (the root by default), with a key of the PKI's
        kind unless told; `basic_constraints` False leaves that extension out (a CA OpenSSL refuses);
        `digest` "sha1" signs it with SHA-1 (valid from now on: OpenSSL re-signs it); `extensions` are added
        (nameConstraints, say)."""
        now = _now()
        key = _new_key(key_kind or self.key_kind)
        cert = _build(
            subject=_name(name),
            key=key,
            issuer=issuer or self.root,
            not_before=now - _CA_BACKDATE,
            not_after=not_after or now + _CA_LIFETIME,
            ca=True,
            extra=[*_aia(aia_ca_issuers_url), *extensions],
            path_length=path_length,
            basic_constraints=basic_constraints,
        )
        if digest == "sha1":
            return _resigned_sha1(Issued(cert, key), issuer or self.root)
        return Issued(cert, key)

    def issue_leaf(
        self,
        *names: str,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        issuer: Issued | None = None,
        aia_ca_issuers_url: str | None = None,
        common_name: str | None = None,
        san: bool = True,
        key_kind: KeyKind | None = None,
        extensions: Extensions = (),
    ) -> Issued:
        """A server certificate for `names` (DNS names or IP literals), by default from the intermediate.
        `extensions` are added, each replacing a default extension of its type (an extendedKeyUsage, say)."""
        if not names and common_name is None:
            raise ValueError("issue_leaf needs at least one name (DNS name or IP literal) or a common_name")
        now = _now()
        key = _new_key(key_kind or self.key_kind)
        cn = common_name if common_name is not None else names[0]
        return Issued(
            _build(
                subject=_name(cn),
                key=key,
                issuer=issuer or self.intermediate,
                not_before=not_before or now - _BACKDATE,
                not_after=not_after or now + _LEAF_LIFETIME,
                ca=False,
                extra=[*_leaf_extensions(names, san=san, aia_ca_issuers_url=aia_ca_issuers_url), *extensions],
            ),
            key,
        )

    def self_signed_leaf(self, *names: str) -> Issued:
        """A server certificate that is its own issuer (not a CA), as a quick self-signed setup makes."""
        if not names:
            raise ValueError("self_signed_leaf needs at least one name (DNS name or IP literal)")
        now = _now()
        key = _new_key(self.key_kind)
        return Issued(
            _build(
                subject=_name(names[0]),
                key=key,
                issuer=None,
                not_before=now - _BACKDATE,
                not_after=now + _LEAF_LIFETIME,
                ca=False,
                extra=_leaf_extensions(names, san=True, aia_ca_issuers_url=None),
            ),
            key,
        )

    def root_pem(self) -> bytes:
        return self.root.cert_pem


def expired_root(name: str, *, expired_for: timedelta = timedelta(days=30)) -> Issued:
    """A self-signed root "<name>" whose validity ended `expired_for` ago: an old root that stores keep."""
    key = _new_key()
    now = _now()
    cert = _build(
        subject=_name(name),
        key=key,
        issuer=None,
        not_before=now - _CA_LIFETIME,
        not_after=now - expired_for,
        ca=True,
        extra=[],
    )
    return Issued(cert, key)


def cross_signed(root: Issued, by: Issued, *, valid_for: timedelta = timedelta(days=400)) -> Issued:
    """`root`'s name and key certified by `by`: the cross-signed root a server sends so that hosts with only
    the older root still verify (its own validity runs on, whatever `by`'s does)."""
    now = _now()
    cert = _build(
        subject=root.cert.subject,
        key=root.key,
        issuer=by,
        not_before=now - _CA_BACKDATE,
        not_after=now + valid_for,
        ca=True,
        extra=[],
    )
    return Issued(cert, root.key)


_OPENSSL_TIMEOUT_S = 30


def _resigned_sha1(issued: Issued, issuer: Issued) -> Issued:
    """The same certificate (subject, key, serial, extensions) signed by `issuer` with SHA-1, by `openssl x509`.
    OpenSSL re-certifies only requests, so the certificate becomes one first; its validity then starts now."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("signing with SHA-1 needs the openssl command, which is not on PATH")
    days = max(1, (issued.cert.not_valid_after_utc - _now()).days)
    with tempfile.TemporaryDirectory(prefix="tlsfleet-sha1-") as directory:
        work = Path(directory)
        write_pem(work / "in.pem", issued.cert_pem)
        write_pem(work / "subject.key", issued.key_pem)
        write_pem(work / "ca.pem", issuer.cert_pem)
        write_pem(work / "ca.key", issuer.key_pem)
        keep = ("-copy_extensions", "copyall")
        to_request = ("-x509toreq", "-in", "in.pem", "-signkey", "subject.key", "-out", "req.pem")
        certify = ("-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca.key", "-sha1", "-days", str(days))
        serial = ("-set_serial", str(issued.cert.serial_number))
        steps = [[openssl, "x509", *to_request, *keep], [openssl, "x509", *certify, *serial, *keep, "-out", "out.pem"]]
        for step in steps:
            done = subprocess.run(step, cwd=work, capture_output=True, timeout=_OPENSSL_TIMEOUT_S, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"openssl could not re-sign with SHA-1: {done.stderr.decode(errors='replace')}")
        return Issued(x509.load_pem_x509_certificate((work / "out.pem").read_bytes()), issued.key)


def _leaf_extensions(
    names: tuple[str, ...], *, san: bool, aia_ca_issuers_url: str | None
) -> list[tuple[x509.ExtensionType, bool]]:
    extra: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    ]
    if san and names:
        extra.append((x509.SubjectAlternativeName([_san_entry(n) for n in names]), False))
    return extra + _aia(aia_ca_issuers_url)


def _aia(url: str | None) -> list[tuple[x509.ExtensionType, bool]]:
    """An Authority Information Access extension naming `url` as caIssuers; none without a URL."""
    if not url:
        return []
    access = x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))
    return [(x509.AuthorityInformationAccess([access]), False)]


def chain_pem(*issued: Issued) -> bytes:
    """The certificates' PEMs concatenated in the order given."""
    return b"".join(i.cert_pem for i in issued)


def write_pem(path: Path, data: bytes) -> Path:
    """Write PEM data; anything holding a private key is created with mode 0600."""
    path = Path(path)
    secret = b"PRIVATE KEY-----" in data
    if secret:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path
