"""Ask many vantages at once under one deadline; every vantage ends in an explicit state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ...agent.model import ProbeRequest
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageInfo, VantageState
from .vantage import Vantage

MAX_PARALLEL_VANTAGES = 128
# Time beyond the deadline we wait for a vantage's own timeout to fire before declaring it ourselves.
_GRACE_S = 0.5

Outcome = TypeVar("Outcome", ProbeOutcome, DescribeOutcome)


async def probe_all(
    vantages: Sequence[Vantage], request: ProbeRequest, timeout_s: float, *, parallel: int = MAX_PARALLEL_VANTAGES
) -> tuple[ProbeOutcome, ...]:
    """One outcome per vantage, in the order given."""
    return await _gather(
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
        vantages,
        lambda v: v.describe(timeout_s, target_host, include_roots=include_roots),
        lambda info, state, error, ms: DescribeOutcome(info, state, error=error, duration_ms=ms),
        timeout_s,
        parallel,
    )


async def _gather(
    vantages: Sequence[Vantage],
    call: Callable[[Vantage], Awaitable[Outcome]],
    failed: Callable[[VantageInfo, VantageState, str, float], Outcome],
    timeout_s: float,
    parallel: int,
) -> tuple[Outcome, ...]:
    gate = asyncio.Semaphore(parallel)

    async def one(vantage: Vantage) -> Outcome:
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

    return tuple(await asyncio.gather(*(one(v) for v in vantages)))
