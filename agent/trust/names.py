"""Whether a certificate covers the name a client asks for: DNS SANs with one-label wildcards, IP SANs, as
OpenSSL's X509_check_host compares them; OpenSSL's own, laxer wildcard rule (partial-label wildcards), which only
its default name check honours; and curl's, which looks at no character of what a wildcard stands for."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.x509.general_name import UnsupportedGeneralNameType

from .certinfo import common_names, extensions_refusal


@dataclass(frozen=True)
class ExpectedName:
    """A normalized expected name: an IP address, or a lowercase A-label DNS name (`dns`, without the trailing
    dot); `absolute` when it was asked with one ("host.example."), which OpenSSL and Python keep: they send it
    in SNI and compare it with the certificate's names as written, where curl drops it."""

    dns: str | None = None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    absolute: bool = False

    def __str__(self) -> str:
        return str(self.ip) if self.ip is not None else f"{self.dns}{'.' if self.absolute else ''}"


def a_labels(name: str) -> str:
    """An internationalized DNS name in lower-case A-labels, as curl (libidn2) and browsers write it: UTS #46
    non-transitional IDNA 2008, so "straße" is xn--strae-oqa, not IDNA 2003's "strasse" (Python's `idna` codec,
    kept for what IDNA 2008 refuses, such as symbols). ASCII labels pass as they are, underscores included.
    Raises UnicodeError naming the label that cannot be encoded."""
    if name.isascii():
        return name.lower()
    import idna  # only for internationalized names (httpx needs it too)

    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
        return ".".join(label if label.isascii() else idna.alabel(label).decode("ascii") for label in mapped.split("."))
    except (idna.IDNAError, UnicodeError):
        return name.encode("idna").decode("ascii").lower()


# Pure and called for every store of every probe with the same few names.
@lru_cache(maxsize=1024)
def parse_expected_name(name: str) -> ExpectedName:
    """Normalize the name a certificate must cover; raises ValueError naming what is accepted."""
    if not isinstance(name, str):
        raise ValueError(f"expected name must be a str (DNS name or IP literal), got {type(name).__name__}")
    raw = name.strip()
    literal = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        # An IPv6 zone ("fe80::1%eth0") only picks the link; a certificate names the address alone.
        return ExpectedName(ip=ipaddress.ip_address(literal.partition("%")[0] if ":" in literal else literal))
    except ValueError:
        pass
    absolute = raw.endswith(".")
    dns = raw.rstrip(".").lower()
    if not dns.isascii():
        try:
            dns = a_labels(dns)
        except UnicodeError as exc:
            raise ValueError(f"expected name {name!r} is not a valid internationalized DNS name: {exc}") from exc
    labels = dns.split(".")
    if (
        not dns
        or len(dns) > 253
        or any(not label or len(label) > 63 for label in labels)
        or any(not (c.isalnum() or c in "-_") for c in dns.replace(".", ""))
    ):
        raise ValueError(
            f"expected name {name!r} is neither an IP literal nor a DNS name "
            "(labels of 1-63 letters, digits, '-' or '_', separated by dots)"
        )
    return ExpectedName(dns=dns, absolute=absolute)


def subject_alt_names(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    """The SAN extension, or None when it is absent, malformed, or the extensions cannot be read at all."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
        return None


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)  # OpenSSL folds ASCII letters only


def _valid_star(pattern: str, partial: bool) -> int | None:
    """Where OpenSSL's valid_star() finds the pattern's one wildcard; None when it compares the pattern literally:
    a "*" only in the first label (at its start or end, or as all of it with `partial` False), never in an A-label,
    labels of letters, digits and inner hyphens, no trailing dot, and at least two dots after the "*"."""
    star: int | None = None
    label_start, hyphen, idna, dots = True, False, False, 0
    for index, char in enumerate(pattern):
        if char == "*":
            at_start, at_end = label_start, index == len(pattern) - 1 or pattern[index + 1] == "."
            if star is not None or idna or dots or not (at_start or at_end) or not (partial or (at_start and at_end)):
                return None
            star, label_start = index, False
        elif char in _LDH and char != "-":
            if label_start and pattern.startswith("xn--", index):
                idna = True
            label_start = hyphen = False
        elif char == ".":
            if label_start or hyphen:
                return None
            label_start, hyphen, idna, dots = True, False, False, dots + 1
        elif char == "-":
            if label_start:
                return None
            hyphen = True
        else:
            return None
    return None if label_start or hyphen or dots < 2 else star


def host_matches(pattern: str, name: str, *, partial: bool) -> bool:
    """OpenSSL's X509_check_host comparison of one DNS name (SAN or CN) with the normalized `name`, as
    equal_wildcard() does it; `partial` False is X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS (Python's contexts).
    A name is compared as written (case aside), so "host." never matches "host"; what a wildcard stands for
    is letters, digits and hyphens only, so "*.example.com" never covers "a_b.example.com"."""
    pattern = _ascii_lower(pattern)
    star = _valid_star(pattern, partial)
    if star is None:
        return pattern == name
    prefix, suffix = pattern[:star], pattern[star + 1 :]
    if len(name) < len(prefix) + len(suffix) or not (name.startswith(prefix) and name.endswith(suffix)):
        return False
    middle = name[len(prefix) : len(name) - len(suffix)]
    whole_label = not prefix and suffix.startswith(".")
    if whole_label and not middle:
        return False
    if not whole_label and name.startswith("xn--"):
        return False  # an A-label never matches a partial wildcard
    return middle == "*" or all(c in _LDH for c in middle)


def _dns_matches(pattern: str, name: str) -> bool:
    # RFC 6125 6.4.3 as browsers and Python's contexts apply it: "*" only as the whole left-most label,
    # matching exactly one non-empty label, with at least two labels after it (never "*.com").
    return host_matches(pattern, name, partial=False)


def openssl_wildcard_matches(pattern: str, name: str) -> bool:
    """Whether OpenSSL's X509_check_host with its default flags matches the DNS name `name` (normalized)
    against `pattern`, partial-label wildcards ("f*.example.com", "*oo.example.com") included: one "*" at the
    start or the end of the left-most label, at least two labels after it, no wildcard in an A-label, and a
    partial wildcard never matching an A-label."""
    return host_matches(pattern, name, partial=True)


def curl_wildcard_matches(pattern: str, name: str) -> bool:
    """Whether curl's own host check (curl 7.x, which does not use OpenSSL's) takes `pattern` as a whole-label
    wildcard covering `name`: "*." then at least two labels, not an A-label, the rest equal (case and a trailing
    dot aside), whatever characters the matched label holds."""
    pattern = _ascii_lower(pattern).rstrip(".")
    name = name.rstrip(".")
    if not pattern.startswith("*.") or pattern.count(".") < 2:
        return False
    first, dot, rest = name.partition(".")
    return bool(first and dot) and "." + rest == pattern[1:]


def match_name(cert: x509.Certificate, expected: ExpectedName) -> tuple[bool, str]:
    """Whether the certificate covers the name, and why not. No CN fallback: only subjectAltName counts."""
    san = subject_alt_names(cert)
    refusal = extensions_refusal(cert) if san is None else ""
    if refusal:
        return False, f"the certificate's extensions cannot be read ({refusal}); {expected} is not covered"
    if san is None:
        cns = common_names(cert)
        cn = f" (subject CN {cns[0]!r} is not used for name checks)" if cns else ""
        return False, f"certificate has no subjectAltName{cn}; {expected} is not covered"
    if expected.ip is not None:
        ips = san.get_values_for_type(x509.IPAddress)
        if expected.ip in ips:
            return True, ""
        listed = ", ".join(str(i) for i in ips) or "none"
        return False, f"IP {expected.ip} not among the certificate's IP SANs ({listed})"
    assert expected.dns is not None
    dns_names = san.get_values_for_type(x509.DNSName)
    if any(_dns_matches(p, str(expected)) for p in dns_names):
        return True, ""
    listed = ", ".join(dns_names) or "none"
    if expected.absolute and any(_dns_matches(p, expected.dns) for p in dns_names):
        return False, (
            f"{expected} ends in a dot, and OpenSSL compares it with the certificate's DNS SANs ({listed}) as "
            f"written: they cover {expected.dns} only"
        )
    deeper = [p for p in dns_names if p.startswith("*.") and expected.dns.endswith(p[1:])]
    lax = [p for p in dns_names if curl_wildcard_matches(p, expected.dns)]
    if lax and _valid_star(_ascii_lower(lax[0]), False) is not None:
        hint = f"; OpenSSL lets wildcard {lax[0]} stand for letters, digits and hyphens only (curl accepts it)"
    elif lax:
        hint = f"; OpenSSL takes {lax[0]} for a literal name, not a wildcard (curl accepts it)"
    else:
        hint = f"; wildcard {deeper[0]} covers exactly one label" if deeper else ""
    return False, f"{expected} not among the certificate's DNS SANs ({listed}){hint}"


# Asked on every probe of a wildcard leaf: a fleet sees the same few leaves under the same few names.
@lru_cache(maxsize=256)
def partial_wildcard_covers(der: bytes, name: str) -> str:
    """The partial-label wildcard ("f*.example.com") through which alone the certificate covers the DNS name
    `name`, as OpenSSL's default name check takes it: a DNS SAN, or the subject CN when no DNS SAN is there (the
    CN fallback Python's contexts keep, with their own refusal of partial wildcards); "" when a name covers it by
    the one-label rule every client applies, none covers it, or the certificate does not parse."""
    try:
        expected = parse_expected_name(name)
    except ValueError:
        return ""
    patterns = _dns_patterns(der)
    if patterns is None or expected.dns is None or expected.absolute:
        return ""
    if any(_dns_matches(p, expected.dns) for p in patterns):
        return ""
    return next((p for p in patterns if openssl_wildcard_matches(p, expected.dns)), "")


@lru_cache(maxsize=256)
def _dns_patterns(der: bytes) -> tuple[str, ...] | None:
    """The names a certificate is checked against for a DNS name (its DNS SANs, else its subject CNs), read once
    per leaf: many names are probed behind one wildcard certificate. None when it does not parse."""
    try:
        cert = x509.load_der_x509_certificate(der)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    except (ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
        return None
    patterns = sans.get_values_for_type(x509.DNSName) if sans is not None else []
    return tuple(patterns or common_names(cert))
