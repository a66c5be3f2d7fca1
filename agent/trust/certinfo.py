"""Facts about one DER certificate, as the CLI table and the diagnosis show them."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from cryptography import x509

# Encoding from the module that defines it: `cryptography.hazmat.primitives.serialization` loads the SSH and
# PKCS#12 code with it (some 2 ms of every `tlsfleet probe`), which reading certificates never needs.
from cryptography.hazmat.primitives._serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.general_name import UnsupportedGeneralNameType
from cryptography.x509.oid import AuthorityInformationAccessOID, ObjectIdentifier

__all__ = [
    "DER",
    "CertSummary",
    "CertificateParseError",
    "common_names",
    "extensions_refusal",
    "fingerprint",
    "is_self_issued",
    "name_text",
    "parse_der",
    "raw_name_attributes",
    "summarize",
    "unhandled_critical",
    "validity",
]

# A served certificate with a serial number of zero or below is OpenSSL's to accept (it does) and the strict
# profile's to note; cryptography's warning about it would only reach an operator's terminal or the logs.
warnings.filterwarnings("ignore", "Parsed a serial number which wasn't positive", CryptographyDeprecationWarning)


class CertificateParseError(ValueError):
    """The bytes are not a DER-encoded X.509 certificate."""


@dataclass(frozen=True)
class CertSummary:
    """What a person and the diagnosis read of one certificate (names, validity, key, extensions)."""

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
    except (ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
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
    except UnsupportedGeneralNameType:
        return "it names an x400Address or ediPartyName, which cryptography does not read"
    except ValueError:
        return ""
    return ""


# --- names and times cryptography will not hand over ---------------------------------------------------------
#
# cryptography reads a certificate whose subject or issuer has an empty RDN or one attribute twice in an RDN, and
# a GeneralizedTime of year 0, but raises ValueError when the name or time is asked for; OpenSSL reads and judges
# such certificates. The readers below answer from the DER instead.

_STRING_CODECS = {0x0C: "utf-8", 0x13: "latin-1", 0x14: "latin-1", 0x16: "latin-1", 0x1A: "latin-1"}
_WIDE_CODECS = {0x1E: "utf-16-be", 0x1C: "utf-32-be"}  # BMPString, UniversalString
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the element) of the DER element at `pos`; IndexError/ValueError if cut."""
    first = der[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        n = first & 0x7F
        start, length = pos + 2 + n, int.from_bytes(der[pos + 2 : pos + 2 + n], "big")
    if start + length > len(der):
        raise ValueError("truncated DER element")
    return der[pos], start, start + length


def _elements(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, value start, end) of each element between `start` and `end`."""
    out = []
    while start < end:
        tag, value, after = _tlv(der, start)
        out.append((tag, start, value, after))
        start = after
    return out


def _name_der(cert: x509.Certificate, issuer: bool) -> bytes:
    tbs = cert.tbs_certificate_bytes
    _, value, end = _tlv(tbs, 0)
    fields = _elements(tbs, value, end)
    if fields and fields[0][0] == 0xA0:  # version
        fields = fields[1:]
    _, start, _, after = fields[2 if issuer else 4]  # serialNumber, signature, issuer, validity, subject
    return tbs[start:after]


def _oid_text(body: bytes) -> str:
    arcs, value = [], 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2) if arcs else 0
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]]) if arcs else ""


def raw_name_attributes(cert: x509.Certificate, issuer: bool) -> list[list[tuple[str, str]]]:
    """The subject's (or issuer's) RDNs as (dotted OID, value text) pairs, read from the DER; a value of no
    string type OpenSSL converts is given as '#' and the hex of its DER, as RFC 4514 writes it."""
    der = _name_der(cert, issuer)
    _, value, end = _tlv(der, 0)
    rdns = []
    for _, _, set_value, set_end in _elements(der, value, end):
        attrs = []
        for _, _, atv_value, atv_end in _elements(der, set_value, set_end):
            (_, _, oid_value, oid_end), (tag, raw, text_value, text_end) = _elements(der, atv_value, atv_end)[:2]
            body = der[text_value:text_end]
            codec = _STRING_CODECS.get(tag) or _WIDE_CODECS.get(tag)
            text = body.decode(codec, "replace") if codec else "#" + der[raw:text_end].hex()
            attrs.append((_oid_text(der[oid_value:oid_end]), text))
        rdns.append(attrs)
    return rdns


def _attribute_text(oid: str, value: str) -> str:
    try:
        return x509.NameAttribute(ObjectIdentifier(oid), value).rfc4514_string()
    except ValueError:  # a value cryptography refuses for that attribute (a country of three letters)
        return f"{oid}={value}"


def name_text(cert: x509.Certificate, *, issuer: bool = False) -> str:
    """The subject (or issuer) name in RFC 4514 form, also where cryptography refuses to read it."""
    try:
        return (cert.issuer if issuer else cert.subject).rfc4514_string()
    except ValueError:
        pass
    try:
        rdns = raw_name_attributes(cert, issuer)
    except (IndexError, ValueError):
        return "(a name that cannot be read)"
    return ",".join("+".join(_attribute_text(o, v) for o, v in rdn) for rdn in reversed(rdns))


def common_names(cert: x509.Certificate) -> list[str]:
    """The subject's commonName values, also where cryptography refuses to read the subject."""
    try:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    except ValueError:
        pass
    try:
        rdns = raw_name_attributes(cert, issuer=False)
    except (IndexError, ValueError):
        return []
    return [v for rdn in rdns for o, v in rdn if o == x509.NameOID.COMMON_NAME.dotted_string]


def is_self_issued(cert: x509.Certificate) -> bool:
    """Whether subject and issuer are the same name (by value, or by bytes where cryptography cannot read them)."""
    try:
        return cert.subject == cert.issuer
    except ValueError:
        pass
    try:
        return _name_der(cert, issuer=False) == _name_der(cert, issuer=True)
    except (IndexError, ValueError):
        return False


def validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    """(notBefore, notAfter), aware UTC. A time of year 0, which Python cannot hold, is given as the earliest
    datetime: OpenSSL compares it as a time before any that can be asked."""
    try:
        before = cert.not_valid_before_utc
    except ValueError:
        before = _EARLIEST
    try:
        after = cert.not_valid_after_utc
    except ValueError:
        after = _EARLIEST
    return before, after


DER = Encoding.DER  # as `cert.public_bytes(DER)` takes it


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
    except (ValueError, UnsupportedGeneralNameType):
        # A malformed or unreadable extension must not hide the rest of the certificate's facts.
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
    not_before, not_after = validity(cert)
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
        subject=name_text(cert),
        issuer=name_text(cert, issuer=True),
        san_dns=san_dns,
        san_ip=san_ip,
        not_before=not_before,
        not_after=not_after,
        is_self_issued=is_self_issued(cert),
        is_ca=isinstance(bc, x509.BasicConstraints) and bc.ca,
        subject_key_id=ski.digest.hex() if isinstance(ski, x509.SubjectKeyIdentifier) else "",
        authority_key_id=(
            aki.key_identifier.hex() if isinstance(aki, x509.AuthorityKeyIdentifier) and aki.key_identifier else ""
        ),
        aia_ca_issuers=aia_urls,
        serial=format(cert.serial_number, "x"),
    )
