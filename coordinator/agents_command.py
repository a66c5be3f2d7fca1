"""`tlsfleet agents`: ask every selected vantage to describe itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from tlsfleet.coordinator import exit_codes
from tlsfleet.coordinator.vantage import DescribeOutcome, VantageState


async def _describe_fleet(
    inventory: Path | None, agents: str | None, no_local: bool, timeout: float
) -> tuple[DescribeOutcome, ...]:
    from tlsfleet.coordinator.fanout import describe_all
    from tlsfleet.coordinator.fleet import select_vantages

    fleet = select_vantages(inventory_path=inventory, selector_text=agents, include_local=not no_local)
    try:
        return await describe_all(fleet.vantages, timeout)
    finally:
        await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)


def run_agents(*, agents: str | None, inventory: Path | None, no_local: bool, timeout: float, json_output: bool) -> int:
    from tlsfleet.agent.fleet_credentials import CredentialError
    from tlsfleet.agent.logs import configure_cli_logging
    from tlsfleet.coordinator.fleet import FleetError
    from tlsfleet.coordinator.inventory import InventoryError
    from tlsfleet.coordinator.probe_command import MAX_TIMEOUT_S, MIN_TIMEOUT_S
    from tlsfleet.coordinator.selector import SelectorError

    configure_cli_logging()
    if not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S:
        typer.echo(
            f"error: --timeout {timeout:g} is out of range; accepted: {MIN_TIMEOUT_S:g}-{MAX_TIMEOUT_S:g}", err=True
        )
        return exit_codes.USAGE
    try:
        outcomes = asyncio.run(_describe_fleet(inventory, agents, no_local, timeout))
    except (InventoryError, SelectorError, CredentialError, FleetError) as error:
        typer.echo(f"error: {error}", err=True)
        return exit_codes.USAGE
    code = exit_codes.OK if all(o.state is VantageState.OK for o in outcomes) else exit_codes.UNANSWERED
    if json_output:
        from tlsfleet.coordinator.json_output import describe_outcome_json

        typer.echo(json.dumps({"exit_code": code, "agents": [describe_outcome_json(o) for o in outcomes]}, indent=2))
    else:
        from tlsfleet.coordinator.render import make_console, print_agents

        print_agents(make_console(), outcomes)
    return code
