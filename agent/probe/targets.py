"""Probe targets as people type them: `host`, `host:port`, `[v6]:port`, `::1`, `https://host[:port][/path]`."""

from __future__ import annotations

import ipaddress
import re

from ..errors import UsageError
from ..model import Target

__all__ = [
    "ACCEPTED",
    "TargetError",
    "inet_aton",
    "ip_sni_problem",
    "is_ip_literal",
    "is_loopback",
    "normalize_host",
    "parse_target",
]

ACCEPTED = (
    "accepted: HOST, HOST:PORT, [IPv6]:PORT, a bare IPv6 address, or https://HOST[:PORT][/path]; "
    "e.g. example.com, example.com:8443, 10.0.0.5:443, [2001:db8::1]:443, https://example.com/login; "
    "an IPv4 address also as inet_aton reads it (127.1, 0x7f.0.0.1, 2130706433), as curl and getaddrinfo do"
)
MAX_LABEL = 63
MAX_NAME = 253

# Underscores are not valid in host names but do appear in internal DNS names (container service names);
# the resolver decides whether such a name exists.
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
# One part of an IPv4 address as inet_aton reads it: hexadecimal after 0x, octal after a leading 0, else decimal.
_ATON_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")
# What looks like such a part though it may not read as one (08, 0x, 0x1ffffffff): a host of these alone was meant
# as an address, and is not a name to ask the resolver for.
_NUMERIC_SHAPE = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")
_ATON_MAX_DIGITS = 40  # far past any part's largest value (2**32 in octal is 11 digits) with leading zeros


class TargetError(UsageError):
    """A target that cannot be probed; the message names the problem and what is accepted."""


def parse_target(text: str, default_port: int = 443) -> Target:
    """Parse a target as typed; the host comes back lower-case, IDNA (A-label) encoded, or as a canonical IP."""
    if not isinstance(text, str) or not text:
        raise TargetError(f"empty target; {ACCEPTED}")
    if any(c.isspace() for c in text):
        raise TargetError(f"target {text!r} contains whitespace; {ACCEPTED}")
    rest = text
    scheme, sep, after = text.partition("://")
    if sep:
        if scheme.lower() != "https":
            raise TargetError(f"target {text!r} has scheme {scheme!r}; only https:// URLs are probed; {ACCEPTED}")
        # The path, query and fragment say nothing about the handshake.
        rest = re.split(r"[/?#]", after, maxsplit=1)[0]
        if "@" in rest:
            raise TargetError(f"target {text!r} carries user information before '@'; {ACCEPTED}")
        if not rest:
            raise TargetError(f"target {text!r} has no host after https://; {ACCEPTED}")
        if rest.startswith("[") and "%25" in rest:
            rest = rest.replace("%25", "%", 1)  # a URL writes an IPv6 zone as %25 (RFC 6874), as curl reads it
    host, port_text = _split(rest, text)
    port = default_port if port_text is None else _port(port_text, text)
    return Target(host=normalize_host(host, context=text), port=port)


def _split(rest: str, original: str) -> tuple[str, str | None]:
    """(host, port text or None)."""
    if rest.startswith("["):
        inside, sep, after = rest[1:].partition("]")
        if not sep:
            raise TargetError(f"target {original!r} opens '[' without a closing ']'; {ACCEPTED}")
        if not _is_ipv6(inside):
            raise TargetError(f"target {original!r}: {inside!r} in brackets is not an IPv6 address; {ACCEPTED}")
        if not after:
            return inside, None
        if not after.startswith(":"):
            raise TargetError(f"target {original!r} has {after!r} after ']' where ':PORT' belongs; {ACCEPTED}")
        return inside, after[1:]
    if rest.count(":") > 1:
        # Several colons without brackets can only be a bare IPv6 address (which then has no port).
        if _is_ipv6(rest):
            return rest, None
        raise TargetError(
            f"target {original!r} is neither an IPv6 address nor HOST:PORT; put IPv6 addresses with a port "
            f"in brackets; {ACCEPTED}"
        )
    host, sep, port_text = rest.partition(":")
    return host, (port_text if sep else None)


def _port(port_text: str, original: str) -> int:
    if not _PORT_RE.match(port_text):
        raise TargetError(f"target {original!r}: port {port_text!r} is not a number; accepted: 1-65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise TargetError(f"target {original!r}: port {port} is out of range; accepted: 1-65535")
    return port


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address (IPv6 with an optional %scope)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def normalize_host(host: str, *, context: str | None = None) -> str:
    """A canonical IP literal, or the DNS name lower-cased in IDNA A-labels. A trailing dot is kept: OpenSSL
    and Python send "host.example." in SNI and check it as written (curl drops it), so a probe asks as they do."""
    shown = context if context is not None else host
    if not host:
        raise TargetError(f"target {shown!r} has no host; {ACCEPTED}")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if (numeric := inet_aton(host)) is not None:
        return numeric
    name = host[:-1] if host.endswith(".") else host
    if not name:
        raise TargetError(f"target {shown!r} has no host name; {ACCEPTED}")
    for label in name.split("."):
        # Said before the IDNA codec sees them: its error names only itself ("label empty or too long").
        if not label or (label.isascii() and len(label) > MAX_LABEL):
            what = "is empty (a leading dot, or two dots in a row)" if not label else "is longer than 63 characters"
            raise TargetError(f"target {shown!r}: a label of host name {name!r} {what}; {ACCEPTED}")
    try:
        # Unicode labels become xn-- A-labels as curl and browsers write them (IDNA 2008); ASCII ones pass through.
        ascii_name = name.lower() if name.isascii() else _a_labels(name)
    except UnicodeError as error:
        raise TargetError(
            f"target {shown!r}: host name {name!r} cannot be IDNA-encoded ({error}); every label must be "
            f"1-{MAX_LABEL} characters; {ACCEPTED}"
        ) from None
    labels = ascii_name.split(".")
    for label in labels:
        if not label or len(label) > MAX_LABEL:
            raise TargetError(
                f"target {shown!r}: label {label!r} is empty or longer than {MAX_LABEL} characters; {ACCEPTED}"
            )
        if not _LABEL_RE.match(label):
            raise TargetError(
                f"target {shown!r}: label {label!r} is not a valid host name label (letters, digits, hyphens "
                f"not at either end, underscores); {ACCEPTED}"
            )
    if len(ascii_name) > MAX_NAME:
        raise TargetError(
            f"target {shown!r}: host name is {len(ascii_name)} characters long; accepted: at most {MAX_NAME}"
        )
    if labels[-1].isdigit() or all(_NUMERIC_SHAPE.match(label) for label in labels):
        raise TargetError(
            f"target {shown!r}: {name!r} is not a valid IPv4 address (1-4 parts, decimal, 0-octal or 0x-hex, each "
            f"at most 255 and the last filling the bytes left; no trailing dot), and a host name cannot end in an "
            f"all-numeric label; {ACCEPTED}"
        )
    return ascii_name + "." if name != host else ascii_name


def inet_aton(text: str) -> str | None:
    """The dotted-quad address glibc's inet_aton (so getaddrinfo, curl, `openssl s_client -connect`) reads in
    `text`: 1 to 4 parts, each decimal, 0-octal or 0x-hex, the last filling the bytes left (127.1 is 127.0.0.1,
    2130706433 too); None when they would not read it as an address (256.1, 08.1, a trailing dot)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(len(p) <= _ATON_MAX_DIGITS and _ATON_PART.match(p) for p in parts):
        return None
    values = [int(p, 16) if p[1:2] in ("x", "X") else int(p, 8) if p.startswith("0") else int(p) for p in parts]
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for position, value in enumerate(leading):
        number |= value << (8 * (3 - position))
    return str(ipaddress.IPv4Address(number))


def _a_labels(name: str) -> str:
    from ..trust.names import a_labels  # loads `cryptography`: only for an internationalized name

    return a_labels(name)


def ip_sni_problem(name: str, option: str = "--sni") -> str | None:
    """Why `name` cannot be sent in SNI when it is an IP address in any form a client reads (RFC 6066 3 allows
    only a DNS host name; curl and Python send none for an address, nor does s_client unless told to); None
    for anything else, which the probe itself judges as a name."""
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if not (is_ip_literal(bare) or inet_aton(bare) is not None):
        return None
    return (
        f"{option} {name[:64]!r} is an IP address, and SNI carries only a DNS name (RFC 6066; curl and Python "
        f"send none for an address); accepted: a DNS name, e.g. {option} api.example.com; to probe without SNI, "
        "use --no-sni (a target given as an address is probed without SNI by itself)"
    )


def is_loopback(address: str) -> bool:
    """True for "localhost", 127.0.0.0/8, ::1 (and ::ffff:127.x.y.z, which is 127.x.y.z over IPv6)."""
    if address.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
