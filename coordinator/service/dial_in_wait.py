"""Right after a coordinator starts, the agents that dial in are still dialling back: a run made at once
would probe from whichever had reconnected, or fail for want of any. A run in that window waits, until at
most `[agent_link] wait_at_start` after the listener started, for the agents that answered its report's
previous run over a stream to hold one again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from ..fleet.selector import parse_selector
from ..outcomes import VantageState
from .report_model import ReportRun

POLL_S = 0.25


def awaited_agents(previous: ReportRun | None, selector_text: str | None, listed: Iterable[str]) -> frozenset[str]:
    """The agents of `previous` that answered, that the report still selects, and that only a stream
    reaches: an inventory agent without one is dialled at its address, and this machine is no agent."""
    if previous is None:
        return frozenset()
    selector = parse_selector(selector_text)
    listed = set(listed)
    return frozenset(
        agent.name
        for agent in previous.agents
        if agent.state is VantageState.OK
        and agent.name not in listed
        and agent.address != "local"  # this machine's own vantage
        and selector.matches(agent.name, dict(agent.labels))
    )


async def wait_for_agents(
    names: Iterable[str],
    connected: Callable[[str], bool],
    deadline: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, ...]:
    """Wait until each of `names` is `connected` or `deadline` (on `clock`) passes; the ones still missing."""
    wanted = sorted(set(names))
    while True:
        missing = tuple(name for name in wanted if not connected(name))
        left = deadline - clock()
        if not missing or left <= 0:
            return missing
        await asyncio.sleep(min(POLL_S, left))
