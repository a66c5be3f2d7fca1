"""Turn an inventory and a selector into the vantages a command talks to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...agent.errors import UsageError
from .coordinator_identity import ca_hint, load_coordinator_credentials
from .inventory import Inventory, load_inventory
from .selector import check_names_exist, parse_selector
from .vantage import LOCAL_NAME, Vantage

if TYPE_CHECKING:
    from .held_agents import HeldAgents


class FleetError(UsageError):
    """The fleet cannot be assembled: no vantage selected, unusable credentials."""


@dataclass(frozen=True)
class FleetChoice:
    """The inventory read and the vantages chosen from it."""

    inventory: Inventory
    vantages: tuple[Vantage, ...]


def select_vantages(
    *,
    inventory_path: Path | None,
    selector_text: str | None,
    include_local: bool,
    linked: Sequence[tuple[Vantage, bool]] = (),
    names_must_exist: bool = False,
    without_local: str = "--no-local leaves out this machine",
    streamed: bool = False,
    held: HeldAgents | None = None,
) -> FleetChoice:
    """Load the inventory, pick the agents the selector matches, and build a vantage for each.

    `linked` are the agents that dial in, each with whether it holds a stream now: one that does is
    reached over its stream, also when the inventory lists it; one that does not is left to the
    inventory's address when there is one.

    With `names_must_exist`, a name in the selector that is no vantage's (a typo) is an error naming the close
    ones, rather than a vantage quietly left out. `without_local` says, when nothing matched, what left this
    machine out (the CLI's flag, a report's setting). `streamed`: dialled agents are sent their probes over
    one stream each (a report run's many), rather than a call per probe. `held`: the inventory and the dialled
    agents come from it, read and dialled again only when they changed (a service's /probe).

    Raises InventoryError, SelectorError, CredentialError or FleetError with a one-line message."""
    from ...agent.pki.location import default_pki_dir

    inventory = held.inventory() if held is not None else load_inventory(inventory_path, pki_dir=default_pki_dir())
    selector = parse_selector(selector_text)
    listed = {a.name for a in inventory.agents}
    if names_must_exist:
        where = f"inventory {inventory.path}" if inventory.path else "no inventory (only 'local' exists)"
        check_names_exist(selector, [LOCAL_NAME, *listed, *(v.info.name for v, _ in linked)], where)
    dialling_in = [
        v
        for v, connected in linked
        if (connected or v.info.name not in listed) and selector.matches(v.info.name, dict(v.info.labels))
    ]
    reached_by_stream = {v.info.name for v in dialling_in}
    chosen = [
        a for a in inventory.agents if a.name not in reached_by_stream and selector.matches(a.name, dict(a.labels))
    ]
    vantages: list[Vantage] = []
    if include_local and selector.matches(LOCAL_NAME, {}):
        # The probe engine only where this machine probes: a fleet of agents alone starts without it.
        from .local_vantage import LocalVantage

        vantages.append(LocalVantage())
    if chosen and held is not None:
        vantages.extend(held.vantages(inventory, chosen))
    elif chosen:
        # gRPC only when an agent is dialled: a probe from this machine alone starts without it.
        from .grpc_vantage import GrpcVantage

        credentials = load_coordinator_credentials(inventory) if any(not a.insecure for a in chosen) else None
        hint = ca_hint(inventory.credentials.ca)
        vantages.extend(GrpcVantage(a, credentials, ca_hint=hint, streamed=streamed) for a in chosen)
    vantages.extend(dialling_in)
    if not vantages:
        where = f"inventory {inventory.path}" if inventory.path else "no inventory (only 'local' exists)"
        wanted = f"no vantage matches {selector_text!r}" if selector_text else "no vantage to probe from"
        raise FleetError(
            f"{wanted} in {where}, nor among the agents that dial in ({len(linked)} known)"
            + (f"; {without_local}" if not include_local else "")
        )
    return FleetChoice(inventory=inventory, vantages=tuple(vantages))
