"""Facts about one DER certificate, as the CLI table and the diagnosis show them."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import AuthorityInformationAccessOID, ObjectIdentifier

__all__ = [
    "CertSummary",
    "CertificateParseError",
    "extensions_refusal",
    "fingerprint",
    "parse_der",
    "summarize",
    "unhandled_critical",
]

# A served certificate with a serial number of zero or below is OpenSSL's to accept (it does) and the strict
# profile's to note; cryptography's warning about it would only reach an operator's terminal or the logs.
warnings.filterwarnings("ignore", "Parsed a serial number which wasn't positive", CryptographyDeprecationWarning)


class CertificateParseError(ValueError):
    """The bytes are not a DER-encoded X.509 certificate."""


@dataclass(frozen=True)
class CertSummary:
    sha256: str  # hex, lowercase, of the DER
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    san_dns: tuple[str, ...]
    san_ip: tuple[str, ...]
    not_before: datetime  # aware, UTC
    not_after: datetime  # aware, UTC
    is_self_issued: bool  # subject == issuer (says nothing about the signature)
    is_ca: bool  # basicConstraints CA:true
    subject_key_id: str  # hex, "" when absent
    authority_key_id: str  # hex, "" when absent
    aia_ca_issuers: tuple[str, ...]
    serial: str  # hex

    @property
    def short_fingerprint(self) -> str:
        return self.sha256[:12]

    @property
    def san(self) -> tuple[str, ...]:
        """DNS names then IP addresses, as strings."""
        return self.san_dns + self.san_ip


# The extensions OpenSSL handles when critical (X509_supported_extension); any other critical one is 34.
_OPENSSL_HANDLED_CRITICAL = frozenset(
    {
        "2.16.840.1.113730.1.1",  # nsCertType
        "2.5.29.15",  # keyUsage
        "2.5.29.17",  # subjectAltName
        "2.5.29.19",  # basicConstraints
        "2.5.29.32",  # certificatePolicies
        "2.5.29.37",  # extendedKeyUsage
        "1.3.6.1.5.5.7.1.7",  # sbgp-ipAddrBlock
        "1.3.6.1.5.5.7.1.8",  # sbgp-autonomousSysNum
        "2.5.29.36",  # policyConstraints
        "1.3.6.1.5.5.7.1.14",  # proxyCertInfo
        "2.5.29.30",  # nameConstraints
        "2.5.29.33",  # policyMappings
        "2.5.29.54",  # inhibitAnyPolicy
    }
)


def unhandled_critical(cert: x509.Certificate) -> tuple[ObjectIdentifier, ...]:
    """The critical extensions OpenSSL does not handle (verify code 34), in the order the certificate has them."""
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension):
        return ()
    return tuple(e.oid for e in extensions if e.critical and e.oid.dotted_string not in _OPENSSL_HANDLED_CRITICAL)


def extensions_refusal(cert: x509.Certificate) -> str:
    """Why `cryptography` lists none of the certificate's extensions whatever is asked ("it has more than one
    2.5.29.17 extension"); "" when it lists them, or when one is malformed (then `.extensions` raises
    ValueError, which every reader of one extension takes for absence)."""
    try:
        cert.extensions  # noqa: B018 - parsed on first access
    except x509.DuplicateExtension as exc:
        return f"it has more than one {exc.oid.dotted_string} extension"
    except ValueError:
        return ""
    return ""


def fingerprint(der: bytes) -> str:
    """sha256 of the DER, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def _as_bytes(der: bytes) -> bytes:
    if isinstance(der, bytes):
        return der
    if isinstance(der, bytearray | memoryview):
        return bytes(der)
    raise CertificateParseError(f"expected DER certificate bytes, got {type(der).__name__}")


def parse_der(der: bytes) -> x509.Certificate:
    """Parse a DER certificate, raising CertificateParseError with the reason when it is not one, or when
    `cryptography` refuses to list its extensions (a repeated extension: RFC 5280 forbids it, OpenSSL still
    judges it), so that reading an extension of what this returns raises ValueError at worst."""
    return _parse(_as_bytes(der))


@lru_cache(maxsize=4096)
def _parse(der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateParseError(
            f"not a DER X.509 certificate ({len(der)} bytes, sha256 {fingerprint(der)[:12]}): {exc}"
        ) from exc
    refusal = extensions_refusal(cert)
    if refusal:
        raise CertificateParseError(
            f"certificate whose extensions cryptography cannot read ({len(der)} bytes, sha256 "
            f"{fingerprint(der)[:12]}): {refusal}"
        )
    return cert


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        # A malformed extension must not hide the rest of the certificate's facts.
        return None


def summarize(der: bytes) -> CertSummary:
    """Everything the tables and the diagnosis need from one certificate."""
    return _summarize(_as_bytes(der))


@lru_cache(maxsize=4096)
def _summarize(der: bytes) -> CertSummary:
    cert = _parse(der)
    san = _ext(cert, x509.SubjectAlternativeName)
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    if isinstance(san, x509.SubjectAlternativeName):
        san_dns = tuple(san.get_values_for_type(x509.DNSName))
        san_ip = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    bc = _ext(cert, x509.BasicConstraints)
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    aia = _ext(cert, x509.AuthorityInformationAccess)
    aia_urls: tuple[str, ...] = ()
    if isinstance(aia, x509.AuthorityInformationAccess):
        aia_urls = tuple(
            str(d.access_location.value)
            for d in aia
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        )
    return CertSummary(
        sha256=fingerprint(der),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san_dns=san_dns,
        san_ip=san_ip,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_self_issued=cert.subject == cert.issuer,
        is_ca=isinstance(bc, x509.BasicConstraints) and bc.ca,
        subject_key_id=ski.digest.hex() if isinstance(ski, x509.SubjectKeyIdentifier) else "",
        authority_key_id=(
            aki.key_identifier.hex() if isinstance(aki, x509.AuthorityKeyIdentifier) and aki.key_identifier else ""
        ),
        aia_ca_issuers=aia_urls,
        serial=format(cert.serial_number, "x"),
    )
