"""`tlsfleet agents`: ask every selected vantage to describe itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import typer

from ...agent import exit_codes
from ...agent.command import fail, run_coroutine
from ..fleet.inventory import MergedLabels, merge_labels
from ..outcomes import DescribeOutcome, VantageState


async def _describe_fleet(
    inventory: Path | None, agents: str | None, no_local: bool, timeout: float, coordinator: str | None = None
) -> tuple[tuple[DescribeOutcome, MergedLabels], ...]:
    """The selected vantages' descriptions, each with its labels: the inventory's merged with the agent's."""
    from ...agent.pki.location import default_pki_dir
    from ..fleet.choose import FleetError, select_vantages
    from ..fleet.fanout import describe_all
    from ..fleet.inventory import load_inventory
    from ..fleet.selector import check_names_exist, parse_selector
    from ..fleet.vantage import LOCAL_NAME

    selector = parse_selector(agents)
    listed_inventory = load_inventory(inventory, pki_dir=default_pki_dir())
    listed = {a.name: a.labels for a in listed_inventory.agents}
    where = f"inventory {listed_inventory.path}" if listed_inventory.path else "no inventory (only 'local' exists)"
    no_match = FleetError(
        f"no vantage matches {agents!r} in {where}, labels the agents report included"
        + ("; --no-local leaves out this machine" if no_local else "")
    )
    relay = None
    if coordinator:  # $TLSFLEET_COORDINATOR arrives here too, through the option
        from ..fleet.relay import relay_for

        relay = await relay_for(coordinator, inventory, timeout)  # the user's deadline caps the listing too
    try:
        linked = relay.candidates if relay is not None else ()
        check_names_exist(selector, [LOCAL_NAME, *listed, *(v.info.name for v, _ in linked)], where)
        # Labels an agent reports count too, so choose by name here and by labels once agents answer; one
        # whose inventory labels already fail the selector is not asked.
        try:
            fleet = select_vantages(
                inventory_path=inventory, selector_text=selector.names_text(), include_local=not no_local, linked=linked
            )
        except FleetError:
            raise no_match from None
        try:
            described = await describe_all(
                [v for v in fleet.vantages if not selector.rules_out(v.info.name, dict(listed.get(v.info.name, ())))],
                timeout,
            )
        finally:
            await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)
    finally:
        if relay is not None:
            await relay.close()
    chosen = []
    for outcome in described:
        reported = _reported_labels(outcome, listed)
        labels = merge_labels(listed.get(outcome.vantage.name, ()), reported or ())
        # One that did not answer, and whose inventory labels cannot decide, may match: it is listed so.
        if reported is None or selector.matches(outcome.vantage.name, dict(labels.labels)):
            chosen.append((replace(outcome, vantage=replace(outcome.vantage, labels=labels.labels)), labels))
    if not chosen:
        raise no_match
    return tuple(chosen)


def _reported_labels(outcome: DescribeOutcome, listed: Mapping[str, object]) -> tuple[tuple[str, str], ...] | None:
    """What an agent says of itself: its description's labels; when it did not answer, the labels it
    registered with if it dials in; None for a listed agent that did not answer (its vantage carries the
    inventory's labels, not its own)."""
    if outcome.description is not None:
        return outcome.description.identity.labels
    return None if outcome.vantage.name in listed else outcome.vantage.labels


def _conflicts_json(labels: MergedLabels) -> dict[str, dict[str, str]]:
    return {key: {"inventory": listed, "agent": reported} for key, listed, reported in labels.conflicts}


def run_agents(
    *,
    agents: str | None,
    inventory: Path | None,
    no_local: bool,
    timeout: float,
    json_output: bool,
    coordinator: str | None = None,
) -> int:
    from ..probing import MAX_TIMEOUT_S, MIN_TIMEOUT_S
    from .cli_logging import configure_cli_logging

    configure_cli_logging()
    if not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S:
        raise fail(f"--timeout {timeout:g} is out of range; accepted: {MIN_TIMEOUT_S:g}-{MAX_TIMEOUT_S:g}")
    from .progress import VantageProgress, showing

    answered = VantageProgress(None)
    try:
        with showing(answered, enabled=not json_output):
            chosen = run_coroutine(_describe_fleet(inventory, agents, no_local, timeout, coordinator))
    except KeyboardInterrupt:
        # Ctrl-C: the agents that answered so far, and how many that is.
        if not json_output and answered.outcomes:
            from .render import make_console, print_agents

            print_agents(make_console(), [o for o in answered.outcomes if isinstance(o, DescribeOutcome)])
        typer.echo(answered.interrupted(), err=True)
        return exit_codes.INTERRUPTED
    code = exit_codes.OK if all(o.state is VantageState.OK for o, _ in chosen) else exit_codes.UNANSWERED
    if json_output:
        from ..json_output import describe_outcome_json

        listed = [{**describe_outcome_json(o), "label_conflicts": _conflicts_json(m)} for o, m in chosen]
        from ...agent.documents import document

        typer.echo(json.dumps(document("agents", {"exit_code": code, "agents": listed}), indent=2))
    else:
        from .render import make_console, print_agents

        # A label the agent reports otherwise than the inventory is shown with both values.
        shown = [replace(o, vantage=replace(o.vantage, labels=m.shown())) for o, m in chosen]
        print_agents(make_console(), shown)
    return code
