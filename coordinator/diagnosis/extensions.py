"""Certificate extensions that do not parse, named one by one, and what can still be read beside them.

`cryptography` parses a certificate's extensions all at once: one malformed extension (a keyUsage that is
not a BIT STRING, say) makes every extension unreadable, the subjectAltName included, and a rule that
read "no SAN" from that would blame the name. Here the TBSCertificate's DER is walked by hand, each
extension is tried on its own (in a copy of the certificate that carries only it: its signature no
longer matches, which parsing does not check), and the extensions that parse are kept in a readable
copy, for reading names only, never for verifying anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

from ...agent.trust.certinfo import CertificateParseError, parse_der
from ...agent.trust.names import match_name, parse_expected_name

__all__ = ["SAN_OID", "BadExtension", "covers", "malformed_extensions", "readable_copy"]

SAN_OID = "2.5.29.17"

_EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT in the TBSCertificate


@dataclass(frozen=True)
class BadExtension:
    """An extension of a served certificate that cryptography refuses to read."""

    oid: str  # dotted
    name: str  # "keyUsage", or the OID when cryptography has no name for it
    critical: bool
    error: str  # what cryptography said


class _DerError(ValueError):
    pass


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    if at + 2 > len(data):
        raise _DerError("truncated")
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or at + n > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[at : at + n], "big")
        at += n
    if at + length > len(data):
        raise _DerError("truncated")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each element in data[start:end]."""
    out = []
    at = start
    while at < end:
        tag, content, stop = _tlv(data, at)
        out.append((tag, at, content, stop))
        at = stop
    if at != end:
        raise _DerError("trailing bytes")
    return out


def _encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def _oid(content: bytes) -> str:
    parts: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        raise _DerError("empty OID")
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in (first, parts[0] - 40 * first, *parts[1:]))


@dataclass(frozen=True)
class _Layout:
    """A certificate's DER split into its elements, for rewriting its extensions."""

    der: bytes
    outer: list[tuple[int, int, int, int]]  # tbs, signature algorithm, signature
    tbs: list[tuple[int, int, int, int]]
    extensions_index: int  # position of [3] among the TBS's elements
    extensions: list[bytes]  # each Extension element, DER


def _layout(der: bytes) -> _Layout:
    tag, start, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise _DerError("not a certificate")
    outer = _children(der, start, end)
    if len(outer) != 3 or outer[0][0] != 0x30:
        raise _DerError("not a certificate")
    tbs = _children(der, outer[0][2], outer[0][3])
    index = next((i for i, c in enumerate(tbs) if c[0] == _EXTENSIONS_TAG), -1)
    if index < 0:
        raise _DerError("no extensions")
    _tag, _start, content, stop = tbs[index]
    seq_tag, seq_start, seq_end = _tlv(der, content)
    if seq_tag != 0x30 or seq_end != stop:
        raise _DerError("bad extensions")
    extensions = [der[s:e] for _t, s, _c, e in _children(der, seq_start, seq_end)]
    return _Layout(der, outer, tbs, index, extensions)


def _with_extensions(layout: _Layout, extensions: list[bytes]) -> bytes:
    der = layout.der
    parts = []
    for i, (_tag, start, _content, end) in enumerate(layout.tbs):
        if i == layout.extensions_index:
            if extensions:
                parts.append(_encode(_EXTENSIONS_TAG, _encode(0x30, b"".join(extensions))))
        else:
            parts.append(der[start:end])
    tbs = _encode(0x30, b"".join(parts))
    rest = b"".join(der[s:e] for _t, s, _c, e in layout.outer[1:])
    return _encode(0x30, tbs + rest)


def _describe(extension: bytes) -> tuple[str, bool]:
    _tag, start, end = _tlv(extension, 0)
    fields = _children(extension, start, end)
    if not fields or fields[0][0] != 0x06:
        raise _DerError("bad extension")
    oid = _oid(extension[fields[0][2] : fields[0][3]])
    critical = len(fields) == 3 and fields[1][0] == 0x01 and extension[fields[1][2] : fields[1][3]] != b"\x00"
    return oid, critical


def _parses(der: bytes) -> str:
    """'' when the certificate's extensions parse, else what cryptography said."""
    try:
        x509.load_der_x509_certificate(der).extensions  # noqa: B018 - parsing is the point
    except ValueError as error:
        return str(error) or type(error).__name__
    return ""


@lru_cache(maxsize=1024)
def _analysis(der: bytes) -> tuple[tuple[BadExtension, ...], bytes | None]:
    if not _parses(der):
        return (), None
    try:
        layout = _layout(der)
        bad: list[BadExtension] = []
        good: list[bytes] = []
        for extension in layout.extensions:
            error = _parses(_with_extensions(layout, [extension]))
            if not error:
                good.append(extension)
                continue
            oid, critical = _describe(extension)
            name = getattr(x509.ObjectIdentifier(oid), "_name", "")
            bad.append(BadExtension(oid, name if name and name != "Unknown OID" else oid, critical, error))
        readable = _with_extensions(layout, good)
    except (_DerError, ValueError):
        return (), None
    if not bad:
        return (), None  # extensions that fail only together: nothing to name one by one
    return tuple(bad), readable


def malformed_extensions(der: bytes) -> tuple[BadExtension, ...]:
    """The extensions of this certificate (DER) that do not parse; () when all do (or it cannot be told)."""
    return _analysis(bytes(der))[0]


def readable_copy(der: bytes) -> bytes | None:
    """The certificate with only the extensions that parse (for reading names, never for verifying), or None
    when nothing is malformed."""
    return _analysis(bytes(der))[1]


@lru_cache(maxsize=4096)
def _covers(der: bytes, name: str) -> bool | None:
    if any(b.oid == SAN_OID for b in malformed_extensions(der)):
        return None  # the names it covers cannot be read
    try:
        return match_name(parse_der(readable_copy(der) or der), parse_expected_name(name))[0]
    except (CertificateParseError, ValueError):
        return None


def covers(der: bytes, name: str) -> bool | None:
    """Whether the certificate (DER) covers `name` (RFC 6125, SAN only), read past malformed extensions other
    than the subjectAltName; None when that cannot be judged (not a certificate, a bad name, an unreadable
    subjectAltName)."""
    return _covers(bytes(der), name)
