"""Why OpenSSL's TLS-server purpose check (X509_PURPOSE_SSL_SERVER, verify code 26) refuses a certificate.

OpenSSL 3's rules (crypto/x509/v3_purp.c), read from the certificate itself:
- every certificate of the path: an extendedKeyUsage, when present, must list serverAuth (or one of the
  Server Gated Crypto usages); anyExtendedKeyUsage alone does not do;
- the leaf: an nsCertType, when present, must include "SSL server", and a keyUsage, when present, must
  allow digitalSignature, keyEncipherment or keyAgreement.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.general_name import UnsupportedGeneralNameType
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

__all__ = ["server_purpose_refusal"]

NS_CERT_TYPE = ObjectIdentifier("2.16.840.1.113730.1.1")
_SERVER_USAGES = frozenset(
    {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ObjectIdentifier("2.16.840.1.113730.4.1"),  # Netscape Server Gated Crypto
        ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),  # Microsoft Server Gated Crypto
    }
)
_NS_SSL_SERVER = 0x40
_NS_TYPES = ("SSL client", "SSL server", "S/MIME", "object signing", "", "SSL CA", "S/MIME CA", "object signing CA")


def _extension(cert: x509.Certificate, oid: ObjectIdentifier) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
        return None


def _usage_name(oid: ObjectIdentifier) -> str:
    if oid == ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE:
        return "anyExtendedKeyUsage"  # cryptography has no name for it
    name = getattr(oid, "_name", "")
    return name if name and name != "Unknown OID" else oid.dotted_string


def _ns_cert_type(cert: x509.Certificate) -> int | None:
    """The first octet of the nsCertType BIT STRING; None when absent or not a BIT STRING."""
    found = _extension(cert, NS_CERT_TYPE)
    if found is None or not isinstance(found.value, x509.UnrecognizedExtension):
        return None
    raw = found.value.value
    if len(raw) < 3 or raw[0] != 0x03 or raw[1] < 1:
        return None
    return raw[3] if raw[1] >= 2 and len(raw) > 3 else 0


def server_purpose_refusal(cert: x509.Certificate, *, leaf: bool) -> str:
    """Why OpenSSL refuses `cert` on a TLS server's path (as a clause naming the extension); "" when it does not."""
    eku = _extension(cert, x509.ExtendedKeyUsage.oid)
    if eku is not None and isinstance(eku.value, x509.ExtendedKeyUsage):
        usages = list(eku.value)
        if not _SERVER_USAGES.intersection(usages):
            listed = ", ".join(_usage_name(u) for u in usages) or "empty"
            if usages == [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]:
                return "its extendedKeyUsage is anyExtendedKeyUsage alone, which OpenSSL does not take for serverAuth"
            if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
                return (
                    f"its extendedKeyUsage is {listed}, without serverAuth "
                    "(OpenSSL does not take anyExtendedKeyUsage for it)"
                )
            return f"its extendedKeyUsage is {listed}, without serverAuth"
    if not leaf:
        return ""
    ns = _ns_cert_type(cert)
    if ns is not None and not ns & _NS_SSL_SERVER:
        types = ", ".join(t for bit, t in enumerate(_NS_TYPES) if t and ns & (0x80 >> bit)) or "none"
        return f"its Netscape nsCertType is {types}, without SSL server"
    ku = _extension(cert, x509.KeyUsage.oid)
    if ku is not None and isinstance(ku.value, x509.KeyUsage):
        usage = ku.value
        if not (usage.digital_signature or usage.key_encipherment or usage.key_agreement):
            return (
                f"its keyUsage ({_key_usages(usage)}) allows none of digitalSignature, keyEncipherment or "
                "keyAgreement, which a TLS server key needs"
            )
    return ""


def _key_usages(usage: x509.KeyUsage) -> str:
    names = [
        ("digitalSignature", usage.digital_signature),
        ("nonRepudiation", usage.content_commitment),
        ("keyEncipherment", usage.key_encipherment),
        ("dataEncipherment", usage.data_encipherment),
        ("keyAgreement", usage.key_agreement),
        ("keyCertSign", usage.key_cert_sign),
        ("cRLSign", usage.crl_sign),
    ]
    return ", ".join(name for name, on in names if on) or "empty"
