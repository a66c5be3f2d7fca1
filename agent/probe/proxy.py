"""Probing through the host's HTTPS proxy, as its applications would: the proxy from the environment as
curl chooses it, NO_PROXY as curl matches it, and one HTTP CONNECT per connection.

curl's rules, which Python's `requests` and most tools share in their essentials: for an https URL the
proxy is `https_proxy`, else `HTTPS_PROXY`, else `all_proxy` / `ALL_PROXY`; a proxy URL without a scheme is
http, without a port port 1080; user and password in the URL become Basic Proxy-Authorization.
`no_proxy` (or `NO_PROXY`) lists names and addresses separated by commas or spaces: `*` alone matches
everything; a name matches itself and every name under it (a leading dot is ignored, so `.corp` and
`corp` both cover `api.corp` and `corp`); an IP address matches itself, and `addr/bits` a network.
Names are compared case-insensitively, without a trailing dot; ports in entries are not supported by
curl and are not here either.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..hostfacts import redact_proxy
from ..model import Failure
from .request_limits import RequestError

__all__ = [
    "DEFAULT_PROXY_PORT",
    "MAX_HEADER_LINES",
    "MAX_LINE_BYTES",
    "Proxy",
    "ProxyFailed",
    "bypasses",
    "connect_through",
    "parse_proxy",
    "proxy_for",
]

DEFAULT_PROXY_PORT = 1080  # curl's, for a proxy URL without a port
MAX_LINE_BYTES = 8192
MAX_HEADER_LINES = 100
_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy that CONNECT goes through; `label` is its URL as reported (password redacted)."""

    host: str
    port: int
    label: str
    authorization: str = field(default="", repr=False)  # "Basic ..." when the URL carried credentials

    def __str__(self) -> str:
        return self.label


class ProxyFailed(Exception):
    """The proxy did not open the tunnel; `failure` says how, the message in words, `status` the HTTP status of
    a refusal (0 when it gave none)."""

    def __init__(self, failure: Failure, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.status = status


def parse_proxy(value: str, variable: str) -> Proxy:
    """The proxy `value` (of `variable`) names; RequestError naming what is accepted when it is not one."""
    text = value.strip()
    shown = redact_proxy(text)[:200]
    url = urlsplit(text if "://" in text else f"http://{text}")
    scheme = url.scheme.lower()
    if scheme != "http":
        raise RequestError(
            f"{variable}={shown!r}: a {scheme}:// proxy is not supported; accepted: http://[user:password@]host[:port]"
        )
    try:
        port = url.port or DEFAULT_PROXY_PORT
    except ValueError:
        raise RequestError(f"{variable}={shown!r} has a port that is not a number 1-65535") from None
    if not url.hostname:
        raise RequestError(f"{variable}={shown!r} names no proxy host; accepted: http://[user:password@]host[:port]")
    authorization = ""
    if url.username is not None:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Proxy(host=url.hostname, port=port, label=shown, authorization=authorization)


def proxy_for(host: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy an https client on this host uses for `host`; None when none is set or NO_PROXY bypasses it."""
    for variable in _PROXY_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            break
    else:
        return None
    no_proxy = next((environ[v] for v in _NO_PROXY_VARIABLES if environ.get(v, "").strip()), "")
    if bypasses(host, no_proxy):
        return None
    return parse_proxy(value, variable)


def bypasses(host: str, no_proxy: str) -> bool:
    """Whether the NO_PROXY list `no_proxy` sends `host` (a name or an IP literal) around the proxy."""
    name = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        address = None
    for entry in no_proxy.replace(",", " ").split():
        entry = entry.strip().lower()
        if entry == "*":
            return True
        if address is not None:
            if _address_matches(address, entry):
                return True
            continue
        entry = entry.removeprefix(".").rstrip(".")
        if entry and (name == entry or name.endswith(f".{entry}")):
            return True
    return False


def _address_matches(address: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str) -> bool:
    entry = entry.removeprefix("[").replace("]", "")
    try:
        if "/" in entry:
            return address in ipaddress.ip_network(entry, strict=False)
        return address == ipaddress.ip_address(entry)
    except ValueError:
        return False


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def connect_through(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: Proxy,
    host: str,
    port: int,
    deadline: float,
) -> None:
    """Ask `proxy` (already connected over reader/writer) for a tunnel to `host`:`port` by `deadline` (a
    `time.perf_counter()` value). Raises ProxyFailed: PROXY_REFUSED with the status line for a non-2xx
    answer, PROXY_ERROR for an answer that is not HTTP or none in time."""
    authority = _authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", "User-Agent: tlsfleet"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    left = max(deadline - time.perf_counter(), 0.0)
    try:
        async with asyncio.timeout(left):
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "replace"))
            await writer.drain()
            status = await _line(reader)
            for _ in range(MAX_HEADER_LINES):
                if not await _line(reader):
                    break
            else:
                raise ProxyFailed(Failure.PROXY_ERROR, f"proxy {proxy}: more than {MAX_HEADER_LINES} header lines")
    except TimeoutError:
        raise ProxyFailed(Failure.PROXY_ERROR, f"proxy {proxy} did not answer CONNECT within {left:.3g} s") from None
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        raise ProxyFailed(
            Failure.PROXY_ERROR, f"proxy {proxy} closed the connection before answering CONNECT"
        ) from None
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProxyFailed(Failure.PROXY_ERROR, f"proxy {proxy} answered CONNECT with {_shown(status)}, not HTTP")
    if not 200 <= int(parts[1]) < 300:
        raise ProxyFailed(
            Failure.PROXY_REFUSED, f"proxy {proxy} refused CONNECT {authority}: {_shown(status)}", int(parts[1])
        )


async def _line(reader: asyncio.StreamReader) -> str:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        line = b"x" * (MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES:
        raise ProxyFailed(Failure.PROXY_ERROR, f"the proxy sent a line longer than {MAX_LINE_BYTES} bytes")
    return line.rstrip(b"\r\n").decode("latin-1")


def _shown(text: str) -> str:
    return repr("".join(c if c.isprintable() else "?" for c in text[:120]))
