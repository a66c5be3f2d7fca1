"""A small test PKI: a root, an intermediate, and leaves on demand, built with `cryptography`.

ECDSA P-256 keys keep generation in the sub-millisecond range, so every test makes its own PKI.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "LabPKI", "chain_pem", "write_pem"]

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
    key: ec.EllipticCurvePrivateKey

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


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


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
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    extra: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """Sign a certificate; `issuer` None makes it self-signed."""
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
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


class LabPKI:
    """A root CA "<name> Root CA" and an intermediate "<name> Intermediate CA" that issues leaves."""

    def __init__(self, name: str = "Lab") -> None:
        self.name = name
        now = _now()
        root_key = _new_key()
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
        self, name: str, *, issuer: Issued | None = None, not_after: datetime | None = None
    ) -> Issued:
        """A CA certificate named `name`, issued by `issuer` (the root by default)."""
        now = _now()
        key = _new_key()
        cert = _build(
            subject=_name(name),
            key=key,
            issuer=issuer or self.root,
            not_before=now - _CA_BACKDATE,
            not_after=not_after or now + _CA_LIFETIME,
            ca=True,
            extra=[],
        )
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
    ) -> Issued:
        """A server certificate for `names` (DNS names or IP literals), by default from the intermediate."""
        if not names and common_name is None:
            raise ValueError("issue_leaf needs at least one name (DNS name or IP literal) or a common_name")
        now = _now()
        key = _new_key()
        cn = common_name if common_name is not None else names[0]
        return Issued(
            _build(
                subject=_name(cn),
                key=key,
                issuer=issuer or self.intermediate,
                not_before=not_before or now - _BACKDATE,
                not_after=not_after or now + _LEAF_LIFETIME,
                ca=False,
                extra=_leaf_extensions(names, san=san, aia_ca_issuers_url=aia_ca_issuers_url),
            ),
            key,
        )

    def self_signed_leaf(self, *names: str) -> Issued:
        """A server certificate that is its own issuer (not a CA), as a quick self-signed setup makes."""
        if not names:
            raise ValueError("self_signed_leaf needs at least one name (DNS name or IP literal)")
        now = _now()
        key = _new_key()
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
    if aia_ca_issuers_url:
        extra.append(
            (
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(aia_ca_issuers_url),
                        )
                    ]
                ),
                False,
            )
        )
    return extra


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
