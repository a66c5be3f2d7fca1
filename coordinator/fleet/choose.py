"""Turn an inventory and a selector into the vantages a command talks to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...agent.errors import UsageError
from .inventory import Inventory, load_inventory
from .selector import parse_selector
from .vantage import Vantage


class FleetError(UsageError):
    """The fleet cannot be assembled: no vantage selected, unusable credentials."""


@dataclass(frozen=True)
class FleetChoice:
    inventory: Inventory
    vantages: tuple[Vantage, ...]


def select_vantages(*, inventory_path: Path | None, selector_text: str | None, include_local: bool) -> FleetChoice:
    """Load the inventory, pick the agents the selector matches, and build a vantage for each.

    Raises InventoryError, SelectorError, CredentialError or FleetError with a one-line message."""
    from ...agent.pki.credentials import load_credentials
    from ...agent.pki.fleet_ca import default_pki_dir
    from .grpc_vantage import GrpcVantage
    from .local_vantage import LOCAL_NAME, LocalVantage

    inventory = load_inventory(inventory_path, pki_dir=default_pki_dir())
    selector = parse_selector(selector_text)
    chosen = [a for a in inventory.agents if selector.matches(a.name, dict(a.labels))]
    vantages: list[Vantage] = []
    if include_local and selector.matches(LOCAL_NAME, {}):
        vantages.append(LocalVantage())
    if any(not a.insecure for a in chosen):
        c = inventory.credentials
        credentials = load_credentials(c.ca, c.cert, c.key, expect_role="coordinator")
    else:
        credentials = None
    vantages.extend(GrpcVantage(a, credentials) for a in chosen)
    if not vantages:
        where = f"inventory {inventory.path}" if inventory.path else "no inventory (only 'local' exists)"
        raise FleetError(
            f"no vantage matches {selector_text!r} in {where}"
            + ("; --no-local leaves out this machine" if not include_local else "")
        )
    return FleetChoice(inventory=inventory, vantages=tuple(vantages))
