"""The identity the coordinator presents to the agents it dials, as the inventory names it."""

from __future__ import annotations

from pathlib import Path

from .inventory import Inventory


def load_coordinator_credentials(inventory: Inventory):  # -> FleetCredentials
    """The coordinator identity the inventory names, loaded and checked; CredentialError in words."""
    from ...agent.pki.credentials import CredentialError, load_credentials
    from ...agent.pki.location import from_pki_env, pki_dir_problem

    c = inventory.credentials
    if not c.ca.is_file() and (problem := pki_dir_problem(c.ca.parent)):
        raise CredentialError(problem)
    try:
        return load_credentials(c.ca, c.cert, c.key, expect_role="coordinator")
    except CredentialError as error:
        if from_pki_env(c.ca):
            raise CredentialError(f"{error} (PKI directory from $TLSFLEET_PKI_DIR)") from None
        raise


def ca_hint(ca: Path) -> str:
    """The fleet CA file, and $TLSFLEET_PKI_DIR when that is where it came from: the first thing to check
    when an agent's certificate is refused."""
    from ...agent.pki.location import from_pki_env

    return f"{ca}, PKI directory from $TLSFLEET_PKI_DIR" if from_pki_env(ca) else str(ca)
