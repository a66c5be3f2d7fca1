"""Probe targets as people type them: `host`, `host:port`, `[v6]:port`, `::1`, `https://host[:port][/path]`."""

from __future__ import annotations

import ipaddress
import re

from ..errors import UsageError
from ..model import Target

__all__ = ["ACCEPTED", "TargetError", "is_ip_literal", "is_loopback", "normalize_host", "parse_target"]

ACCEPTED = (
    "accepted: HOST, HOST:PORT, [IPv6]:PORT, a bare IPv6 address, or https://HOST[:PORT][/path]; "
    "e.g. example.com, example.com:8443, 10.0.0.5:443, [2001:db8::1]:443, https://example.com/login"
)
MAX_LABEL = 63
MAX_NAME = 253

# Underscores are not valid in host names but do appear in internal DNS names (container service names);
# the resolver decides whether such a name exists.
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")


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
    if labels[-1].isdigit():
        raise TargetError(
            f"target {shown!r}: {name!r} is not a valid IPv4 address, and a host name cannot end in an "
            f"all-numeric label; {ACCEPTED}"
        )
    return ascii_name + "." if name != host else ascii_name


def _a_labels(name: str) -> str:
    from ..trust.names import a_labels  # loads `cryptography`: only for an internationalized name

    return a_labels(name)


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
