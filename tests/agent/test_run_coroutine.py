"""The commands' event loop runner: the result comes back whole and is never turned into text on the way."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tlsfleet.agent.command import run_coroutine


class Loud:
    """A result that counts every repr() made of it (a report run's repr is tens of megabytes)."""

    reprs = 0

    def __repr__(self) -> str:
        Loud.reprs += 1
        return "Loud()"


async def answer() -> tuple[Loud, list[int]]:
    await asyncio.sleep(0)
    return Loud(), [1, 2]


def test_the_result_comes_back_without_any_repr() -> None:
    Loud.reprs = 0
    result, numbers = run_coroutine(answer())
    assert isinstance(result, Loud) and numbers == [1, 2]
    assert Loud.reprs == 0


def test_plain_asyncio_run_reprs_the_result_which_is_why_the_runner_exists() -> None:
    # Guards the reason: were CPython to stop doing this, run_coroutine could go. asyncio.Runner swaps the
    # SIGINT handler (and builds that repr) only where SIGINT has Python's default handler: a process started
    # in the background inherits it ignored, so the default is put back for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        Loud.reprs = 0
        asyncio.run(answer())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert Loud.reprs >= 1


def test_an_exception_passes_through() -> None:
    async def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        run_coroutine(broken())
