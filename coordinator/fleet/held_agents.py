"""The inventory's agents dialled once and held, for a service that answers many short requests (`/probe`):
each request then costs the probe, not reading the inventory, loading the coordinator's credentials and a
mutual-TLS connection to every agent it asks.

The inventory and the credential files are re-read when their file status changes (checked on each
request: a `stat` per file), so an edit, a new agent or a rotated certificate shows on the next request with
no restart. The channels of agents that left or changed are closed once the longest request that may still
use them has had its time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...agent.logs import get_logger
from ..outcomes import DescribeOutcome, ProbeOutcome
from .coordinator_identity import ca_hint, load_coordinator_credentials
from .inventory import AgentEntry, Inventory, load_inventory
from .vantage import Vantage

if TYPE_CHECKING:
    from ...agent.model import ProbeRequest
    from ...agent.pki.credentials import FleetCredentials
    from .grpc_vantage import GrpcVantage

log = get_logger("tlsfleet.coordinator")

# What tells a file changed without reading it: None when it is absent or unreadable.
Stamp = tuple[int, int, int, int] | None


def file_stamp(path: Path | None) -> Stamp:
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@dataclass(frozen=True)
class _Read:
    stamp: Stamp
    inventory: Inventory


class HeldAgents:
    """Dialled agents kept between requests; `close` when the service stops."""

    def __init__(self, inventory_path: Path | None, *, retire_after_s: float) -> None:
        """`retire_after_s`: how long a channel that is no longer wanted stays open for requests in flight."""
        self._inventory_path = inventory_path
        self._retire_after_s = retire_after_s
        self._read: _Read | None = None
        self._credentials: tuple[tuple[Path, Path, Path, Stamp, Stamp, Stamp], FleetCredentials] | None = None
        self._held: dict[AgentEntry, GrpcVantage] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def inventory(self) -> Inventory:
        """The inventory as it is on disk now, read again only when its file changed.

        Raises InventoryError as `load_inventory` does; a broken edit is refused on every request until fixed."""
        from ...agent.pki.location import default_pki_dir
        from .inventory import default_inventory_path

        path = (self._inventory_path or default_inventory_path()).expanduser()
        stamp = file_stamp(path)
        if self._read is not None and stamp is not None and self._read.stamp == stamp:
            return self._read.inventory
        inventory = load_inventory(self._inventory_path, pki_dir=default_pki_dir())
        self._read = _Read(stamp, inventory) if stamp is not None else None
        return inventory

    def vantages(self, inventory: Inventory, entries: Sequence[AgentEntry]) -> list[Vantage]:
        """A held vantage for each entry, dialled on first use; its `close` leaves the channel open.

        Raises CredentialError when an agent needs mutual TLS and the coordinator's identity cannot be loaded."""
        from .grpc_vantage import GrpcVantage

        credentials = self._current_credentials(inventory) if any(not e.insecure for e in entries) else None
        hint = ca_hint(inventory.credentials.ca)
        chosen: list[Vantage] = []
        for entry in entries:
            held = self._held.get(entry)
            if held is None:
                held = GrpcVantage(entry, None if entry.insecure else credentials, ca_hint=hint)
                self._held[entry] = held
            chosen.append(_Lent(held))
        self._retire_unlisted(inventory)
        return chosen

    async def close(self) -> None:
        held, self._held = list(self._held.values()), {}
        await asyncio.gather(*(v.close() for v in held), return_exceptions=True)
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _current_credentials(self, inventory: Inventory) -> FleetCredentials:
        paths = inventory.credentials
        key = (paths.ca, paths.cert, paths.key, file_stamp(paths.ca), file_stamp(paths.cert), file_stamp(paths.key))
        if self._credentials is not None and self._credentials[0] == key:
            return self._credentials[1]
        credentials = load_coordinator_credentials(inventory)
        if self._credentials is not None:
            log.info("coordinator_credentials_reloaded", cert=str(paths.cert))
            # Every mutual-TLS channel was made with the old identity: dial again with the new one.
            self._retire([e for e in self._held if not e.insecure])
        self._credentials = (key, credentials)
        return credentials

    def _retire_unlisted(self, inventory: Inventory) -> None:
        listed = set(inventory.agents)
        self._retire([e for e in self._held if e not in listed])

    def _retire(self, entries: Sequence[AgentEntry]) -> None:
        for entry in entries:
            vantage = self._held.pop(entry)
            task = asyncio.get_running_loop().create_task(self._close_later(vantage))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _close_later(self, vantage: GrpcVantage) -> None:
        try:
            await asyncio.sleep(self._retire_after_s)
        finally:  # also when `close` cuts the wait short
            await vantage.close()


class _Lent:
    """A held vantage as one request sees it: everything but `close`, which leaves the channel to its holder."""

    def __init__(self, held: GrpcVantage) -> None:
        self._held = held
        self.info = held.info

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome:
        return await self._held.probe(request, timeout_s)

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome:
        return await self._held.describe(timeout_s, target_host, include_roots=include_roots)

    async def close(self) -> None:
        return None
