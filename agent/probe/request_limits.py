"""Bounds on what a probe request may ask of an agent; anything outside them is refused by name."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace

from ..errors import UsageError
from ..model import ProbeRequest

MAX_ADDRESSES = 64
MAX_PHASE_TIMEOUT_S = 60.0
MAX_PROBE_TIMEOUT_S = 300.0  # the longest a caller may wait for one probe (`tlsfleet probe --timeout`)
MAX_ALPN_PROTOCOLS = 16
MAX_HOST_LENGTH = 253
MAX_REQUEST_ID_CHARS = 64


class RequestError(UsageError):
    """A probe request that the agent will not run; the message names the field and what is accepted."""


def request_id_of(given: str) -> str:
    """The caller's request id as logged and returned: printable ASCII, at most MAX_REQUEST_ID_CHARS, or a
    fresh one when it is empty."""
    # A caller's id lands in every log line of its probe: no control characters, no unbounded lines.
    kept = "".join(c for c in given[: MAX_REQUEST_ID_CHARS * 4] if c.isascii() and c.isprintable())
    return kept[:MAX_REQUEST_ID_CHARS] or new_request_id()


def new_request_id() -> str:
    """16 random hex digits: a request's id in logs and results."""
    return os.urandom(8).hex()  # uuid4's randomness without importing uuid (and platform) into a probe


def validate_request(request: ProbeRequest) -> ProbeRequest:
    """Return the request unchanged when every field is within bounds, else raise RequestError."""
    target, o = request.target, request.options
    if not target.host or len(target.host) > MAX_HOST_LENGTH or not _printable(target.host):
        raise RequestError(
            f"target host {target.host!r} is not a host name or address (1-{MAX_HOST_LENGTH} characters, no spaces)"
        )
    if not 1 <= target.port <= 65535:
        raise RequestError(f"target port {target.port} is out of range; accepted: 1-65535")
    if not 1 <= o.max_addresses <= MAX_ADDRESSES:
        raise RequestError(f"max_addresses {o.max_addresses} is out of range; accepted: 1-{MAX_ADDRESSES}")
    for phase, value in (
        ("resolve", o.resolve_timeout),
        ("connect", o.connect_timeout),
        ("handshake", o.handshake_timeout),
    ):
        if not 0 < value <= MAX_PHASE_TIMEOUT_S:
            raise RequestError(
                f"{phase} timeout {value} s is out of range; accepted: above 0, at most {MAX_PHASE_TIMEOUT_S:g} s"
            )
    if len(o.alpn) > MAX_ALPN_PROTOCOLS or any(not 1 <= len(p.encode()) <= 255 for p in o.alpn):
        raise RequestError(
            f"ALPN list {list(o.alpn)!r} is not accepted; at most {MAX_ALPN_PROTOCOLS} protocols of 1-255 bytes"
        )
    if o.pin_address is not None:
        try:
            ipaddress.ip_address(o.pin_address)
        except ValueError:
            raise RequestError(
                f"pinned address {o.pin_address!r} is not an IP address; accepted: an IPv4 or IPv6 literal"
            ) from None
    if o.sni is not None and (not o.sni or len(o.sni) > MAX_HOST_LENGTH or not _printable(o.sni)):
        raise RequestError(f"SNI name {o.sni!r} is not accepted; 1-{MAX_HOST_LENGTH} characters")
    if o.min_version and o.max_version and _order(o.min_version) > _order(o.max_version):
        raise RequestError(f"TLS minimum {o.min_version} is above the maximum {o.max_version}")
    return request


def fit_to_deadline(request: ProbeRequest, seconds_left: float | None) -> ProbeRequest:
    """Shrink the per-phase timeouts so that the whole probe ends before the caller's deadline."""
    if seconds_left is None:
        return request
    o = request.options
    budget = max(seconds_left - 0.2, 0.05)  # leave room to judge chains and send the reply
    total = o.resolve_timeout + o.connect_timeout + o.handshake_timeout
    if total <= budget:
        return request
    scale = budget / total
    return replace(
        request,
        options=replace(
            o,
            resolve_timeout=o.resolve_timeout * scale,
            connect_timeout=o.connect_timeout * scale,
            handshake_timeout=o.handshake_timeout * scale,
        ),
    )


def _printable(name: str) -> bool:
    """No spaces or control characters: nothing a resolver or SNI extension should ever carry."""
    return name.isprintable() and not any(c.isspace() for c in name)


def _order(version: str) -> tuple[int, ...]:
    # "TLSv1" < "TLSv1.1" < "TLSv1.2" < "TLSv1.3"
    return tuple(int(part) for part in version.removeprefix("TLSv").split("."))
