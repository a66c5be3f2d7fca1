"""An agent's own view of names: an /etc/hosts-format file consulted before the host's resolver.

For trying a cut-over before DNS changes, or for giving lab agents different answers without root.
Names not in the file go to the host's resolver as usual.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from pathlib import Path

from ..bounded_read import FileTooLarge, read_capped_text
from ..errors import UsageError
from ..model import Resolution
from .resolve import Resolver

MAX_HOSTS_FILE_BYTES = 1024 * 1024


class HostsFileError(UsageError):
    """The override file cannot be used; the message names the line and what is accepted."""


def load_hosts_file(path: Path) -> dict[str, tuple[str, ...]]:
    """Name (lower case) to its addresses, in file order, as /etc/hosts lists them: `ADDRESS NAME [NAME...]`."""
    try:
        text = read_capped_text(path, MAX_HOSTS_FILE_BYTES)
    except FileTooLarge:
        raise HostsFileError(f"hosts file {path} is larger than {MAX_HOSTS_FILE_BYTES // 2**20} MiB") from None
    except OSError as error:
        raise HostsFileError(f"hosts file {path} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise HostsFileError(f"hosts file {path} is not UTF-8 text") from None
    table: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            address = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            raise HostsFileError(
                f"hosts file {path} line {number}: {fields[0]!r} is not an IP address; "
                "accepted: ADDRESS NAME [NAME...] as in /etc/hosts"
            ) from None
        if len(fields) < 2:
            raise HostsFileError(f"hosts file {path} line {number}: no name after {address}")
        for name in fields[1:]:
            addresses = table.setdefault(name.lower().rstrip("."), [])
            if address not in addresses:
                addresses.append(address)
    return {name: tuple(addresses) for name, addresses in table.items()}


def with_overrides(table: Mapping[str, tuple[str, ...]], fallback: Resolver) -> Resolver:
    """A resolver that answers names in `table` itself and asks `fallback` for the rest."""

    async def resolve(host: str, port: int, timeout: float, cap: int) -> Resolution:
        addresses = table.get(host.lower().rstrip("."))
        if addresses is None:
            return await fallback(host, port, timeout, cap)
        started = time.perf_counter()
        kept = addresses[:cap]
        return Resolution(
            addresses=kept,
            duration_ms=(time.perf_counter() - started) * 1000,
            truncated_from=len(addresses) if len(addresses) > cap else 0,
        )

    return resolve
