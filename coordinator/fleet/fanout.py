"""Ask many vantages at once under one deadline; every vantage ends in an explicit state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from ...agent.model import ProbeRequest
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageInfo, VantageState
from .vantage import Vantage

MAX_PARALLEL_VANTAGES = 128
# Time beyond the deadline we wait for a vantage's own timeout to fire before declaring it ourselves.
_GRACE_S = 0.5

Outcome = TypeVar("Outcome", ProbeOutcome, DescribeOutcome)


@dataclass(frozen=True)
class Progress:
    """One step of a fan-out: it started (`outcome` None, `done` 0), or one more vantage ended."""

    request: ProbeRequest | None  # None: a Describe fan-out
    outcome: ProbeOutcome | DescribeOutcome | None
    done: int
    total: int


# Who wants to hear of each step. A context variable rather than a parameter: the fan-out sits below the
# probing road every verb shares (observe, report runs), and only a terminal front end listens.
_listener: ContextVar[Callable[[Progress], None] | None] = ContextVar("fanout_listener", default=None)


@contextmanager
def reporting_progress(listener: Callable[[Progress], None]) -> Iterator[None]:
    """Fan-outs started in this context (tasks and `asyncio.run` inherit it) tell `listener` of each step.
    It is called on the event loop and must not block; what it raises is its own affair, not the probe's."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


async def probe_all(
    vantages: Sequence[Vantage], request: ProbeRequest, timeout_s: float, *, parallel: int = MAX_PARALLEL_VANTAGES
) -> tuple[ProbeOutcome, ...]:
    """One outcome per vantage, in the order given."""
    return await _gather(
        request,
        vantages,
        lambda v: v.probe(request, timeout_s),
        lambda info, state, error, ms: ProbeOutcome(info, state, error=error, duration_ms=ms),
        timeout_s,
        parallel,
    )


async def describe_all(
    vantages: Sequence[Vantage],
    timeout_s: float,
    target_host: str | None = None,
    *,
    include_roots: bool = False,
    parallel: int = MAX_PARALLEL_VANTAGES,
) -> tuple[DescribeOutcome, ...]:
    return await _gather(
        None,
        vantages,
        lambda v: v.describe(timeout_s, target_host, include_roots=include_roots),
        lambda info, state, error, ms: DescribeOutcome(info, state, error=error, duration_ms=ms),
        timeout_s,
        parallel,
    )


async def _gather(
    request: ProbeRequest | None,
    vantages: Sequence[Vantage],
    call: Callable[[Vantage], Awaitable[Outcome]],
    failed: Callable[[VantageInfo, VantageState, str, float], Outcome],
    timeout_s: float,
    parallel: int,
) -> tuple[Outcome, ...]:
    gate = asyncio.Semaphore(parallel)
    listener = _listener.get()
    done = 0

    def tell(outcome: Outcome | None) -> None:
        if listener is not None:
            with suppress(Exception):  # a display that fails must not cost the results
                listener(Progress(request, outcome, done, len(vantages)))

    async def one(vantage: Vantage) -> Outcome:
        nonlocal done
        outcome = await ask(vantage)
        done += 1
        tell(outcome)
        return outcome

    async def ask(vantage: Vantage) -> Outcome:
        started = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        async with gate:
            try:
                async with asyncio.timeout(timeout_s + _GRACE_S):
                    return await call(vantage)
            except TimeoutError:
                return failed(vantage.info, VantageState.TIMEOUT, f"no answer within {timeout_s:g} s", elapsed())
            except Exception as error:  # one vantage's failure must not lose the others' results
                return failed(vantage.info, VantageState.ERROR, f"{type(error).__name__}: {error}", elapsed())

    tell(None)
    return tuple(await asyncio.gather(*(one(v) for v in vantages)))
