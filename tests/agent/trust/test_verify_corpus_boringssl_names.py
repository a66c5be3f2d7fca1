"""Certificates OpenSSL reads but cryptography will not hand every field of (the shapes of BoringSSL's
certificate-path and name-matching test data): a subject or issuer with one attribute twice in an RDN or with an
empty RDN (cryptography raises on reading the name), and a validity time of year 0 (Python has no such year). The
store verdict must be `openssl verify`'s, and names X509_NAME_cmp finds equal must share an issuer-lookup key. The
names and times are written into the DER by hand and the certificates signed anew."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from tlsfleet.agent.trust.certinfo import name_text, summarize
from tlsfleet.agent.trust.issuer_lookup import chain_names

from .chains import NOW, ec_key, openssl_cli, openssl_skip_reason, openssl_verify_store, pem_of, store_file_code

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())

_ERROR_LINE = re.compile(r"error (\d+) at (-?\d+) depth lookup")
HOST = "svc.test"
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_CN, _O, _C = (bytes.fromhex(h) for h in ("550403", "55040a", "550406"))
_UTF8, _PRINTABLE, _BMP = 0x0C, 0x13, 0x1E


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _atv(oid: bytes, tag: int, text: str) -> bytes:
    return _tlv(0x30, _tlv(0x06, oid) + _tlv(tag, text.encode("utf-16-be" if tag == _BMP else "utf-8")))


def _name(*rdns: tuple[bytes, ...]) -> bytes:
    """A Name's DER from RDNs given as their attributes' DER, kept in the order given (as a CA may write them)."""
    return _tlv(0x30, b"".join(_tlv(0x31, b"".join(rdn)) for rdn in rdns))


def _elements(der: bytes) -> list[bytes]:
    """The elements inside the SEQUENCE `der`."""
    pos = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    out = []
    while pos < len(der):
        first = der[pos + 1]
        head, size = (
            (2, first)
            if first < 0x80
            else (2 + (first & 0x7F), int.from_bytes(der[pos + 2 : pos + 2 + (first & 0x7F)], "big"))
        )
        out.append(der[pos : pos + head + size])
        pos += head + size
    return out


def _cert(
    subject: bytes | str,
    issuer: bytes | str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: bytes | None = None,
    not_after: bytes | None = None,
    extra: tuple[tuple[x509.ObjectIdentifier, bytes, bool], ...] = (),
) -> bytes:
    """A certificate with these names (DER, or a CN), signed by `signer`; `not_before` and `not_after` replace
    the DER of those times."""
    placeholder = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "placeholder")])

    def as_name(n: bytes | str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n)]) if isinstance(n, str) else placeholder

    builder = (
        x509.CertificateBuilder()
        .subject_name(as_name(subject))
        .issuer_name(as_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    elif not any(oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME for oid, _, _ in extra):
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    for oid, value, critical in extra:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=critical)
    fields = _elements(builder.sign(signer, hashes.SHA256()).tbs_certificate_bytes)
    # version, serialNumber, signature, issuer, validity, subject, ...
    if isinstance(issuer, bytes):
        fields[3] = issuer
    if isinstance(subject, bytes):
        fields[5] = subject
    before, after = _elements(fields[4])
    fields[4] = _tlv(0x30, (not_before or before) + (not_after or after))
    tbs = _tlv(0x30, b"".join(fields))
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + signature))


def _openssl(tmp: Path, store: Path, chain: tuple[bytes, ...]) -> int:
    return openssl_verify_store(tmp, store, chain, HOST, NOW)


def _tlsfleet(store: Path, chain: tuple[bytes, ...]) -> int:
    return store_file_code(store, chain, HOST, NOW)


def _judged(tmp: Path, root: bytes, chain: tuple[bytes, ...]) -> tuple[int, int]:
    store = tmp / "store.pem"
    store.write_bytes(pem_of(root))
    return _openssl(tmp, store, chain), _tlsfleet(store, chain)


_ORG = _atv(_O, _PRINTABLE, "Name Match")
_COUNTRY = _atv(_C, _PRINTABLE, "US")
# One attribute twice in an RDN; then the same name in another string type, case and spacing; then the name with
# the attribute once (which OpenSSL tells apart).
_TWICE = _name((_COUNTRY,), (_ORG, _ORG), (_atv(_CN, _UTF8, "Dupe Root"),))
_TWICE_OTHER_SPELLING = _name((_COUNTRY,), (_atv(_O, _BMP, "name  MATCH "),) * 2, (_atv(_CN, _PRINTABLE, "dupe root"),))
_ONCE = _name((_COUNTRY,), (_ORG,), (_atv(_CN, _UTF8, "Dupe Root"),))
# An empty RDN, which OpenSSL's comparison leaves out.
_WITH_EMPTY_RDN = _name((_COUNTRY,), (), (_atv(_CN, _UTF8, "Gap Root"),))
_WITHOUT = _name((_COUNTRY,), (_atv(_CN, _UTF8, "Gap Root"),))


@pytest.mark.parametrize(
    ("root_name", "issuer_name", "code"),
    [
        (_TWICE, _TWICE, 0),
        (_TWICE, _TWICE_OTHER_SPELLING, 0),
        (_TWICE_OTHER_SPELLING, _TWICE, 0),
        (_TWICE, _ONCE, 20),  # the store's root shares the lookup key: named, and passed over
        (_ONCE, _TWICE, 20),
        (_WITH_EMPTY_RDN, _WITHOUT, 0),
        (_WITHOUT, _WITH_EMPTY_RDN, 0),
    ],
    ids=["twice", "twice-respelled", "respelled-twice", "twice-once", "once-twice", "empty-rdn", "empty-rdn-served"],
)
def test_names_cryptography_refuses_are_matched_as_openssl_matches_them(
    tmp_path: Path, root_name: bytes, issuer_name: bytes, code: int
) -> None:
    root_key, inter_key, leaf_key = ec_key(), ec_key(), ec_key()
    root = _cert(root_name, root_name, root_key, root_key, ca=True)
    inter = _cert("Name Match Intermediate", issuer_name, inter_key, root_key, ca=True)
    leaf = _cert(HOST, "Name Match Intermediate", leaf_key, inter_key, ca=False)
    assert _judged(tmp_path, root, (leaf, inter)) == (code, code)


def test_names_openssl_finds_equal_share_a_lookup_key() -> None:
    key = ec_key()
    named = [_cert(n, n, key, key, ca=True) for n in (_TWICE, _TWICE_OTHER_SPELLING, _WITH_EMPTY_RDN, _WITHOUT)]
    keys = chain_names([x509.load_der_x509_certificate(d) for d in named])
    assert keys is not None
    # (issuer, subject) of each: twice and respelled, then an empty RDN and none
    assert keys[1] == keys[3]
    assert keys[5] == keys[7]
    assert name_text(x509.load_der_x509_certificate(named[0])) == "CN=Dupe Root,O=Name Match+O=Name Match,C=US"


_YEAR_0 = _tlv(0x18, b"00000101000000Z")  # GeneralizedTime


@pytest.mark.parametrize("which", ["root", "intermediate", "leaf"])
def test_a_validity_of_year_0_is_judged(tmp_path: Path, which: str) -> None:
    root_key, inter_key, leaf_key = ec_key(), ec_key(), ec_key()
    year_0 = {which: _YEAR_0}
    root = _cert("Year 0 Root", "Year 0 Root", root_key, root_key, ca=True, not_before=year_0.get("root"))
    inter = _cert(
        "Year 0 Intermediate", "Year 0 Root", inter_key, root_key, ca=True, not_before=year_0.get("intermediate")
    )
    leaf = _cert(HOST, "Year 0 Intermediate", leaf_key, inter_key, ca=False, not_before=year_0.get("leaf"))
    assert _judged(tmp_path, root, (leaf, inter)) == (0, 0)
    shown = summarize({"root": root, "intermediate": inter, "leaf": leaf}[which])
    assert shown.not_before == datetime.min.replace(tzinfo=NOW.tzinfo)


def test_a_certificate_that_expired_in_year_0_is_expired(tmp_path: Path) -> None:
    root_key, inter_key, leaf_key = ec_key(), ec_key(), ec_key()
    root = _cert("Year 0 Root", "Year 0 Root", root_key, root_key, ca=True)
    inter = _cert("Year 0 Intermediate", "Year 0 Root", inter_key, root_key, ca=True, not_after=_YEAR_0)
    leaf = _cert(HOST, "Year 0 Intermediate", leaf_key, inter_key, ca=False)
    assert _judged(tmp_path, root, (leaf, inter)) == (10, 10)  # X509_V_ERR_CERT_HAS_EXPIRED


# An ediPartyName GeneralName: OpenSSL reads it, cryptography raises UnsupportedGeneralNameType (no ValueError)
# for the whole extension list of a certificate holding one.
_EDI_PARTY = _tlv(0xA5, _tlv(0xA1, _tlv(_UTF8, b"edi party")))
_SAN_WITH_EDI = (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, _tlv(0x30, _EDI_PARTY + _tlv(0x82, HOST.encode())), False)
_NC_EXCLUDING_EDI = (ExtensionOID.NAME_CONSTRAINTS, _tlv(0x30, _tlv(0xA1, _tlv(0x30, _EDI_PARTY))), True)
_NC_PERMITTING_HOST = (
    ExtensionOID.NAME_CONSTRAINTS,
    _tlv(0x30, _tlv(0xA0, _tlv(0x30, _tlv(0x82, HOST.encode())))),
    True,
)


@pytest.mark.parametrize(
    ("inter_extra", "leaf_extra", "code"),
    [
        ((), (_SAN_WITH_EDI,), 0),
        ((_NC_PERMITTING_HOST,), (_SAN_WITH_EDI,), 0),
        ((_NC_EXCLUDING_EDI,), (), 0),
        ((_NC_EXCLUDING_EDI,), (_SAN_WITH_EDI,), 51),  # X509_V_ERR_EXCLUDED_VIOLATION
    ],
    ids=["leaf-san", "leaf-san-under-constraints", "constraint", "constraint-and-leaf-san"],
)
def test_general_names_cryptography_does_not_read_are_judged(
    tmp_path: Path,
    inter_extra: tuple[tuple[x509.ObjectIdentifier, bytes, bool], ...],
    leaf_extra: tuple[tuple[x509.ObjectIdentifier, bytes, bool], ...],
    code: int,
) -> None:
    root_key, inter_key, leaf_key = ec_key(), ec_key(), ec_key()
    root = _cert("EDI Root", "EDI Root", root_key, root_key, ca=True)
    inter = _cert("EDI Intermediate", "EDI Root", inter_key, root_key, ca=True, extra=inter_extra)
    leaf = _cert(HOST, "EDI Intermediate", leaf_key, inter_key, ca=False, extra=leaf_extra)
    assert _judged(tmp_path, root, (leaf, inter)) == (code, code)
