"""`tlsfleet agents`: ask every selected vantage to describe itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from ...agent import exit_codes
from ...agent.command import fail
from ..outcomes import DescribeOutcome, VantageState


async def _describe_fleet(
    inventory: Path | None, agents: str | None, no_local: bool, timeout: float
) -> tuple[DescribeOutcome, ...]:
    from ..fleet.choose import select_vantages
    from ..fleet.fanout import describe_all

    fleet = select_vantages(inventory_path=inventory, selector_text=agents, include_local=not no_local)
    try:
        return await describe_all(fleet.vantages, timeout)
    finally:
        await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)


def run_agents(*, agents: str | None, inventory: Path | None, no_local: bool, timeout: float, json_output: bool) -> int:
    from ...agent.logs import configure_cli_logging
    from ..probing import MAX_TIMEOUT_S, MIN_TIMEOUT_S

    configure_cli_logging()
    if not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S:
        raise fail(f"--timeout {timeout:g} is out of range; accepted: {MIN_TIMEOUT_S:g}-{MAX_TIMEOUT_S:g}")
    outcomes = asyncio.run(_describe_fleet(inventory, agents, no_local, timeout))
    code = exit_codes.OK if all(o.state is VantageState.OK for o in outcomes) else exit_codes.UNANSWERED
    if json_output:
        from ..json_output import describe_outcome_json

        typer.echo(json.dumps({"exit_code": code, "agents": [describe_outcome_json(o) for o in outcomes]}, indent=2))
    else:
        from .render import make_console, print_agents

        print_agents(make_console(), outcomes)
    return code
