"""The CA/Browser Forum profile (what browsers and Go apply) beside OpenSSL's verdict: a short note when
`cryptography.x509.verification` refuses a chain that OpenSSL accepted.

The note never changes a verdict. `cryptography`'s errors carry only text, so the reason is read from
the certificates of the path OpenSSL accepted, checked against the rules that profile adds to RFC 5280
(critical basicConstraints and a keyUsage on every CA, an Authority Key Identifier and a subjectAltName
on the leaf, no CN fallback, no partial wildcards, RSA keys of 2048 bits, SHA-2 signatures, at most 8
intermediates, X.509 v3, positive serials of at most 20 octets). When none of those explains the
refusal, `cryptography`'s own text stands in, for a person to read.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.general_name import UnsupportedGeneralNameType
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, ServerVerifier, Store, VerificationError

from .certinfo import extensions_refusal, is_self_issued, name_text
from .names import ExpectedName, match_name, subject_alt_names

__all__ = ["MAX_INTERMEDIATES", "MAX_NOTE_REASONS", "names_alike", "profile_reasons", "strict_note"]

MAX_INTERMEDIATES = 8  # cryptography's default max_chain_depth
MAX_NOTE_REASONS = 3
_MIN_RSA_BITS = 2048
_PERMITTED_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSASSA_PSS,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
_WEAK_DIGESTS = frozenset(
    {SignatureAlgorithmOID.RSA_WITH_SHA1, SignatureAlgorithmOID.ECDSA_WITH_SHA1, SignatureAlgorithmOID.RSA_WITH_MD5}
)
_PERMITTED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def _label(cert: x509.Certificate) -> str:
    return f"'{name_text(cert)}'"


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(kind)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
        return None


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", "")
    return name if name and name != "Unknown OID" else oid.dotted_string


def key_description(cert: x509.Certificate) -> str:
    """'RSA 2048', 'EC secp256r1', 'Ed25519', ...; "" when the key cannot be read."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return ""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def _key_reason(ca: x509.Certificate) -> str:
    try:
        key = ca.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return f"CA certificate {_label(ca)} has a public key the profile cannot read"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            return f"CA certificate {_label(ca)} has a {key.key_size}-bit RSA key (the profile needs {_MIN_RSA_BITS})"
        return ""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _PERMITTED_CURVES:
            return f"CA certificate {_label(ca)} has a key on curve {key.curve.name} (P-256, P-384, P-521 only)"
        return ""
    return f"CA certificate {_label(ca)} has {_article(key_description(ca))} key (RSA and ECDSA only)"


def _article(words: str) -> str:
    """'an Ed25519', 'an RSA 1024', 'a DSA 1024': the article as the letters are read."""
    return f"an {words}" if words[:1] in "AEFHILMNORSX" else f"a {words}"


def _leaf_key_reason(leaf: x509.Certificate) -> str:
    """The leaf's key, where the profile admits none of its kind (EdDSA, DSA): browsers do not take them."""
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return ""
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return ""
    return f"leaf has {_article(key_description(leaf))} key (RSA and ECDSA only)"


def _basic_reasons(cert: x509.Certificate, role: str) -> list[str]:
    out: list[str] = []
    if cert.version is not x509.Version.v3:
        out.append(f"{role} {_label(cert)} is an X.509 {cert.version.name} certificate (v3 only)")
    serial = cert.serial_number
    if serial < 0:
        out.append(f"{role} {_label(cert)} has a negative serial number")
    elif (serial.bit_length() + 8) // 8 > 21:  # DER length of the INTEGER content, sign octet included
        out.append(f"{role} {_label(cert)} has a serial number longer than 20 octets")
    refusal = extensions_refusal(cert)
    if refusal:
        out.append(f"{role} {_label(cert)}: {refusal}")
    return out


def _leaf_reasons(leaf: x509.Certificate, expected: ExpectedName) -> list[str]:
    out = _basic_reasons(leaf, "leaf")
    key = _leaf_key_reason(leaf)
    if key:
        out.append(key)
    if extensions_refusal(leaf):
        return out  # named by _basic_reasons; no extension can be read to say more
    if subject_alt_names(leaf) is None:
        out.append(f"leaf has no subjectAltName (OpenSSL matched {expected} against its subject CN)")
    else:
        ok, why = match_name(leaf, expected)
        if not ok:
            out.append(f"leaf covers {expected} only by OpenSSL's rules: {why}")
    aki = _ext(leaf, x509.AuthorityKeyIdentifier)
    if aki is None:
        out.append("leaf has no Authority Key Identifier")
    elif aki.critical:
        out.append("leaf's Authority Key Identifier is marked critical")
    bc = _ext(leaf, x509.BasicConstraints)
    if bc is not None and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca:
        out.append("leaf is marked CA:TRUE in its basicConstraints")
    ku = _ext(leaf, x509.KeyUsage)
    if ku is not None and isinstance(ku.value, x509.KeyUsage) and ku.value.key_cert_sign:
        out.append("leaf's keyUsage allows keyCertSign")
    return out


def _ca_reasons(ca: x509.Certificate) -> list[str]:
    out = _basic_reasons(ca, "CA certificate")
    if extensions_refusal(ca):
        return out
    bc = _ext(ca, x509.BasicConstraints)
    if bc is None:
        out.append(f"CA certificate {_label(ca)} has no basicConstraints")
    elif not bc.critical:
        out.append(f"CA certificate {_label(ca)} lacks a critical basicConstraints")
    if _ext(ca, x509.KeyUsage) is None:
        out.append(f"CA certificate {_label(ca)} has no keyUsage")
    aki = _ext(ca, x509.AuthorityKeyIdentifier)
    if aki is not None and aki.critical:
        out.append(f"CA certificate {_label(ca)} marks its Authority Key Identifier critical")
    return out


def profile_reasons(path: Sequence[x509.Certificate], expected: ExpectedName) -> list[str]:
    """What the CA/B Forum profile objects to in this path (leaf first, trust anchor last)."""
    if not path:
        return []
    out = _leaf_reasons(path[0], expected)
    for ca in path[1:]:
        out += _ca_reasons(ca)
    for child, issuer in itertools.pairwise(path):
        oid = child.signature_algorithm_oid
        if oid in _WEAK_DIGESTS:
            out.append(f"{_label(child)} is signed with {_signature_name(child)}, a weak digest")
        elif oid not in _PERMITTED_SIGNATURES:
            out.append(f"{_label(child)} is signed with {_signature_name(child)}, not a permitted algorithm")
        reason = _key_reason(issuer)
        if reason:
            out.append(reason)
    intermediates = [c for c in path[1:-1] if not is_self_issued(c)]
    if len(intermediates) > MAX_INTERMEDIATES:
        out.append(f"path has {len(intermediates)} intermediates, over the profile's limit of {MAX_INTERMEDIATES}")
    return list(dict.fromkeys(out))


def _verifier(leaf: x509.Certificate, expected: ExpectedName, store: Store, at: datetime) -> ServerVerifier | None:
    """A verifier for the expected name or, when `cryptography` refuses that spelling (underscores), for
    a name the leaf lists: OpenSSL already checked the name itself."""
    builder = PolicyBuilder().store(store).time(at)
    if expected.ip is not None:
        return builder.build_server_verifier(x509.IPAddress(expected.ip))
    san = subject_alt_names(leaf)
    fallbacks: list[x509.verification.Subject] = []
    if san is not None:
        fallbacks += [x509.IPAddress(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        fallbacks += [x509.DNSName(d) for d in san.get_values_for_type(x509.DNSName) if "*" not in d]
    for subject in [x509.DNSName(expected.dns or ""), *fallbacks]:
        try:
            return builder.build_server_verifier(subject)
        except ValueError:
            continue
    return None


# A first label the profile reads as any other: letters, digits and inner hyphens, no "xn--"-style label.
_PLAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_MAX_DNS_NAME = 253


def names_alike(leaf: x509.Certificate, a: ExpectedName, b: ExpectedName) -> bool:
    """Whether the profile must answer `b` for `leaf` as it answered `a`: the same name, or two DNS names under
    one parent that differ only in a plain first label and that the leaf does not list as written, so that
    only a "*." entry for that parent can cover either. (Many names behind one wildcard certificate.)"""
    if a == b:
        return True
    if a.dns is None or b.dns is None or a.absolute != b.absolute:
        return False
    a_first, _, a_parent = a.dns.partition(".")
    b_first, _, b_parent = b.dns.partition(".")
    if not a_parent or a_parent != b_parent:
        return False
    for name, first in ((a.dns, a_first), (b.dns, b_first)):
        if len(name) > _MAX_DNS_NAME or not _PLAIN_LABEL.match(first) or first[2:4] == "--":
            return False
    san = subject_alt_names(leaf)
    listed = {d.lower() for d in san.get_values_for_type(x509.DNSName)} if san is not None else set()
    return a.dns not in listed and b.dns not in listed


_ENCOUNTERED = re.compile(r"\s*\(encountered processing <Certificate\(.*$", re.DOTALL)


def _tidy(message: str) -> str:
    text = _ENCOUNTERED.sub("", message).removeprefix("validation failed: ").strip()
    return text[:200]


def strict_note(
    path: Sequence[x509.Certificate],
    served_intermediates: Sequence[x509.Certificate],
    store: Store | None,
    expected: ExpectedName,
    at: datetime,
) -> str:
    """Empty when the profile accepts what OpenSSL accepted along `path` (leaf first, anchor last), else a
    short reason: at most MAX_NOTE_REASONS certificate facts, or `cryptography`'s own words."""
    if not path or store is None:
        return ""
    leaf = path[0]
    try:
        verifier = _verifier(leaf, expected, store, at)
        if verifier is None:
            return f"the CA/Browser Forum profile does not accept {expected} as a DNS name, nor any name the leaf lists"
        verifier.verify(leaf, list(served_intermediates))
    except VerificationError as error:
        reasons = profile_reasons(path, expected)
        if not reasons:
            return f"the CA/Browser Forum profile refuses it: {_tidy(str(error))}"
        more = len(reasons) - MAX_NOTE_REASONS
        text = "; ".join(reasons[:MAX_NOTE_REASONS])
        return f"{text} (and {more} more)" if more > 0 else text
    except ValueError as error:  # a certificate cryptography will not take into a verifier at all
        return f"the CA/Browser Forum profile refuses it: {_tidy(str(error))}"
    return ""
