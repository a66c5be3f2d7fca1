"""Whether a certificate covers the name a client asks for: DNS SANs with one-label wildcards, IP SANs; and
OpenSSL's own, laxer wildcard rule (partial-label wildcards), which only its default name check honours."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509


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


# Pure and called for every store of every probe with the same few names.
@lru_cache(maxsize=1024)
def parse_expected_name(name: str) -> ExpectedName:
    """Normalize the name a certificate must cover; raises ValueError naming what is accepted."""
    if not isinstance(name, str):
        raise ValueError(f"expected name must be a str (DNS name or IP literal), got {type(name).__name__}")
    raw = name.strip()
    literal = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        return ExpectedName(ip=ipaddress.ip_address(literal))
    except ValueError:
        pass
    absolute = raw.endswith(".")
    dns = raw.rstrip(".").lower()
    if not dns.isascii():
        try:
            dns = dns.encode("idna").decode("ascii")
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
    """The SAN extension, or None when it is absent or malformed."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _dns_matches(pattern: str, name: str) -> bool:
    # As OpenSSL's X509_check_host: a SAN is compared as written (case aside), so "host." never matches.
    pattern = pattern.lower()
    if pattern == name:
        return True
    # RFC 6125 6.4.3 as browsers and OpenSSL apply it: "*" only as the whole left-most label, matching
    # exactly one non-empty label, with at least two labels after it (never "*.com").
    p_labels = pattern.split(".")
    n_labels = name.split(".")
    return (
        p_labels[0] == "*"
        and len(p_labels) >= 3
        and "*" not in ".".join(p_labels[1:])
        and len(n_labels) == len(p_labels)
        and n_labels[0] != ""
        and n_labels[1:] == p_labels[1:]
    )


def openssl_wildcard_matches(pattern: str, name: str) -> bool:
    """Whether OpenSSL's X509_check_host with its default flags matches the DNS name `name` (normalized)
    against the wildcard `pattern`, partial-label wildcards ("f*.example.com", "*oo.example.com") included:
    one "*" at the start or the end of the left-most label, at least two labels after it, no wildcard in an
    A-label, and a partial wildcard never matching an A-label."""
    p_labels = pattern.lower().split(".")
    n_labels = name.split(".")
    first = p_labels[0]
    if first.count("*") != 1 or len(p_labels) < 3 or "*" in ".".join(p_labels[1:]) or first.startswith("xn--"):
        return False
    if len(n_labels) != len(p_labels) or n_labels[1:] != p_labels[1:]:
        return False
    prefix, suffix = first.split("*")
    label = n_labels[0]
    if prefix and suffix:
        return False  # OpenSSL takes "f*" and "*o", never "f*o"
    if prefix or suffix:
        if label.startswith("xn--"):
            return False
    elif not label:
        return False
    return len(label) >= len(prefix) + len(suffix) and label.startswith(prefix) and label.endswith(suffix)


def match_name(cert: x509.Certificate, expected: ExpectedName) -> tuple[bool, str]:
    """Whether the certificate covers the name, and why not. No CN fallback: only subjectAltName counts."""
    san = subject_alt_names(cert)
    if san is None:
        cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
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
    hint = f"; wildcard {deeper[0]} covers exactly one label" if deeper else ""
    return False, f"{expected} not among the certificate's DNS SANs ({listed}){hint}"


# Asked on every probe of a wildcard leaf: a fleet sees the same few leaves under the same few names.
@lru_cache(maxsize=256)
def partial_wildcard_covers(der: bytes, name: str) -> str:
    """The partial-label wildcard SAN ("f*.example.com") through which alone the certificate covers the DNS
    name `name`, as OpenSSL's default name check takes it; "" when a SAN covers it by the one-label rule
    every client applies, none covers it, or the certificate does not parse."""
    try:
        expected = parse_expected_name(name)
        sans = subject_alt_names(x509.load_der_x509_certificate(der))
    except ValueError:
        return ""
    if expected.dns is None or expected.absolute or sans is None:
        return ""
    patterns = sans.get_values_for_type(x509.DNSName)
    if any(_dns_matches(p, expected.dns) for p in patterns):
        return ""
    return next((p for p in patterns if openssl_wildcard_matches(p, expected.dns)), "")
