"""A certificate that repeats an extension (RFC 5280 forbids it; path-validation corpora carry such certificates)
is judged, never raised on, and judged as the real `openssl verify` judges it.

`cryptography` parses such a certificate but refuses to list any of its extensions (DuplicateExtension, not a
ValueError), so every reader of an extension must take that refusal as it takes a malformed extension. OpenSSL
itself finds a repeated extension it knows (subjectAltName, basicConstraints) invalid and links nothing to or
from that certificate (20), and passes over a repeated extension it does not know (0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tlsfleet.agent.trust import libcrypto
from tlsfleet.agent.trust.certinfo import CertificateParseError, parse_der, summarize, unhandled_critical
from tlsfleet.agent.trust.names import match_name, parse_expected_name, partial_wildcard_covers
from tlsfleet.agent.trust.purpose import server_purpose_refusal
from tlsfleet.agent.trust.strict_profile import profile_reasons
from tlsfleet.agent.trust.verify import clear_caches, judge_against_stores, verify_chain

from .chains import NOW, Cert, issue, loaded_store, openssl_cli, openssl_skip_reason, openssl_verify

SAN = x509.SubjectAlternativeName.oid
BASIC_CONSTRAINTS = x509.BasicConstraints.oid
UNKNOWN = x509.ObjectIdentifier("1.3.6.1.4.1.55555.2.1")


# --- DER surgery: cryptography's builder refuses to repeat an extension ------------------------------------


def _header(der: bytes, pos: int) -> tuple[int, int]:
    """(start of the content, end) of the DER element at `pos`."""
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2, pos + 2 + first
    n = first & 0x7F
    start = pos + 2 + n
    return start, start + int.from_bytes(der[pos + 2 : start], "big")


def _elements(der: bytes, start: int, end: int) -> list[bytes]:
    out = []
    while start < end:
        _, stop = _header(der, start)
        out.append(der[start:stop])
        start = stop
    return out


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = (n.bit_length() + 7) // 8
    length = bytes([0x80 | size]) + n.to_bytes(size, "big")
    return bytes([tag]) + length + body


def _oid_of(extension: bytes) -> bytes:
    start, end = _header(extension, 0)
    return _elements(extension, start, end)[0]


def with_repeated(
    cert: Cert, signer: ec.EllipticCurvePrivateKey, oid: x509.ObjectIdentifier, *, extra: bytes = b""
) -> Cert:
    """`cert` with its extension `oid` (or, when it has none, the DER extension `extra` twice) repeated, signed
    again by `signer` with ECDSA-SHA256, as every certificate of `chains.issue` from an EC issuer is."""
    der = cert.der
    start, end = _header(der, 0)
    tbs, algorithm, _ = _elements(der, start, end)
    t_start, t_end = _header(tbs, 0)
    fields = _elements(tbs, t_start, t_end)
    assert fields[-1][0] == 0xA3, "the certificate has extensions"
    e_start, e_end = _header(fields[-1], 0)
    (sequence,) = _elements(fields[-1], e_start, e_end)
    s_start, s_end = _header(sequence, 0)
    extensions = _elements(sequence, s_start, s_end)
    wanted = x509.ObjectIdentifier(oid.dotted_string)
    copies = [e for e in extensions if _oid_of(e)[2:] == _encoded_oid(wanted)]
    added = copies[:1] if copies else [extra, extra]
    fields[-1] = _tlv(0xA3, _tlv(0x30, b"".join([*extensions, *added])))
    new_tbs = _tlv(0x30, b"".join(fields))
    signature = signer.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    new = _tlv(0x30, new_tbs + algorithm + _tlv(0x03, b"\x00" + signature))
    return Cert(x509.load_der_x509_certificate(new), cert.key)


def _encoded_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    out = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return out


def unknown_extension() -> bytes:
    """A non-critical extension of a private OID OpenSSL does not know, value NULL."""
    return _tlv(0x30, _tlv(0x06, _encoded_oid(UNKNOWN)) + _tlv(0x04, b"\x05\x00"))


# --- the shapes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    leaf: Cert
    untrusted: tuple[Cert, ...]
    root: Cert
    name: str = "svc.test"


def _pki() -> tuple[Cert, Cert]:
    root = issue("Corpus Root", ca=True)
    return root, issue("Corpus Intermediate", root, ca=True)


def case_leaf_repeats_san() -> Case:
    root, inter = _pki()
    return Case(with_repeated(issue("svc.test", inter), inter.key, SAN), (inter,), root)  # type: ignore[arg-type]


def case_lone_leaf_repeats_san() -> Case:
    root = issue("Corpus Root", ca=True)
    return Case(with_repeated(issue("svc.test", root), root.key, SAN), (), root)  # type: ignore[arg-type]


def case_leaf_repeats_unknown() -> Case:
    root, inter = _pki()
    leaf = with_repeated(issue("svc.test", inter), inter.key, UNKNOWN, extra=unknown_extension())  # type: ignore[arg-type]
    return Case(leaf, (inter,), root)


def case_leaf_repeats_unknown_other_name() -> Case:
    c = case_leaf_repeats_unknown()
    return Case(c.leaf, c.untrusted, c.root, "other.test")


def case_intermediate_repeats_unknown() -> Case:
    root, inter = _pki()
    inter = with_repeated(inter, root.key, UNKNOWN, extra=unknown_extension())  # type: ignore[arg-type]
    return Case(issue("svc.test", inter), (inter,), root)


def case_intermediate_repeats_basic_constraints() -> Case:
    root, inter = _pki()
    inter = with_repeated(inter, root.key, BASIC_CONSTRAINTS)  # type: ignore[arg-type]
    return Case(issue("svc.test", inter), (inter,), root)


def case_root_repeats_unknown() -> Case:
    root, inter = _pki()
    root = with_repeated(root, root.key, UNKNOWN, extra=unknown_extension())  # type: ignore[arg-type]
    return Case(issue("svc.test", inter), (inter,), root)


def case_root_repeats_unknown_other_name() -> Case:
    c = case_root_repeats_unknown()
    return Case(c.leaf, c.untrusted, c.root, "other.test")


CASES = {name.removeprefix("case_"): fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())
@pytest.mark.parametrize("name", sorted(CASES))
def test_repeated_extension_judged_as_openssl_verify(name: str, tmp_path: Path) -> None:
    c = CASES[name]()
    clear_caches()
    level = libcrypto.security_level()
    cli = openssl_verify(tmp_path, c.leaf, c.untrusted, (c.root,), c.name, NOW, level)
    chain = (c.leaf.der, *(u.der for u in c.untrusted))
    (v,) = judge_against_stores(chain, (loaded_store((c.root,)),), c.name, NOW, None)
    assert v.verify_code == cli.code, f"{cli.command}: openssl {cli.code}, tlsfleet {v.verify_code} ({v.detail})"
    if cli.code == 0:
        # What cryptography refuses is what the CA/B Forum profile refuses: the note says so.
        assert v.strict_note


@pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())
def test_store_root_with_repeated_extension_is_named_in_the_note(tmp_path: Path) -> None:
    c = case_root_repeats_unknown()
    cli = openssl_verify(tmp_path, c.leaf, c.untrusted, (c.root,), c.name, NOW, libcrypto.security_level())
    j = verify_chain((c.leaf.der, c.untrusted[0].der), loaded_store((c.root,)), c.name, NOW)
    assert cli.code == j.code == 0
    assert f"more than one {UNKNOWN.dotted_string} extension" in j.strict_note
    assert "no basicConstraints" not in j.strict_note  # present, only unreadable


def test_readers_of_one_certificate_take_the_refusal() -> None:
    root = issue("Corpus Root", ca=True)
    leaf = with_repeated(issue("svc.test", root), root.key, SAN)  # type: ignore[arg-type]
    with pytest.raises(CertificateParseError, match=r"more than one 2\.5\.29\.17 extension"):
        parse_der(leaf.der)
    with pytest.raises(CertificateParseError):
        summarize(leaf.der)
    expected = parse_expected_name("svc.test")
    ok, why = match_name(leaf.cert, expected)
    assert not ok and "extensions cannot be read" in why
    assert partial_wildcard_covers(leaf.der, "svc.test") == ""
    assert server_purpose_refusal(leaf.cert, leaf=True) == ""
    assert unhandled_critical(leaf.cert) == ()
    assert any("more than one 2.5.29.17 extension" in r for r in profile_reasons([leaf.cert, root.cert], expected))
