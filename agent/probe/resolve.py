"""Name resolution through the host's own resolver: what this host's applications would connect to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable

from ..model import Failure, Resolution

# (host, port, timeout seconds, address cap) -> what the resolver returned
Resolver = Callable[[str, int, float, int], Awaitable[Resolution]]

__all__ = ["resolve"]


async def resolve(host: str, port: int, timeout: float, cap: int) -> Resolution:
    """Every address (IPv4 and IPv6, deduplicated, in resolver order) for `host`, at most `cap` of them.

    IP literals resolve to themselves without a lookup. Failures are returned, never raised:
    DNS_TIMEOUT when `timeout` seconds pass, DNS_ERROR for anything the resolver reports.
    """
    if cap < 1:
        raise ValueError(f"address cap {cap} is not accepted; at least 1")
    if timeout <= 0:
        raise ValueError(f"resolve timeout {timeout} s is not accepted; above 0")
    started = time.perf_counter()
    try:
        return Resolution(addresses=(str(ipaddress.ip_address(host)),), duration_ms=0.0)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return _failed(started, Failure.DNS_TIMEOUT, f"no answer from the resolver within {timeout:g} s")
    except socket.gaierror as error:
        # The kind is the same for every resolver error; the resolver's own words become the message.
        return _failed(started, Failure.DNS_ERROR, f"{host}: {error.strerror or error}")
    except UnicodeError as error:
        # getaddrinfo IDNA-encodes the name first; an unencodable name never reaches the resolver.
        return _failed(started, Failure.DNS_ERROR, f"{host!r} is not a resolvable name: {error}")
    except OSError as error:
        return _failed(started, Failure.DNS_ERROR, f"{host}: {error.strerror or error}")
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    duration_ms = _elapsed_ms(started)
    if not addresses:
        return Resolution((), duration_ms, Failure.DNS_ERROR, f"{host}: the resolver returned no addresses")
    truncated_from = len(addresses) if len(addresses) > cap else 0
    return Resolution(tuple(addresses[:cap]), duration_ms, truncated_from=truncated_from)


def _failed(started: float, failure: Failure, error: str) -> Resolution:
    return Resolution(addresses=(), duration_ms=_elapsed_ms(started), failure=failure, error=error)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
