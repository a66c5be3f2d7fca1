"""A live line on stderr while a verb waits: "vantages answered 2/3 · 1.2 s", gone when the verb ends.

Only on a terminal: a pipe or a log file gets no progress bytes, and --json turns it off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from ...agent.model import ProbeRequest
from ..fleet.fanout import Progress, reporting_progress
from ..outcomes import DescribeOutcome, ProbeOutcome

if TYPE_CHECKING:
    from rich.text import Text

REFRESH_PER_SECOND = 8


class VantageProgress:
    """The vantages that answered one fan-out so far (the probe of `request`; None: a Describe), in the order
    they answered, kept so that an interrupted verb can still show them."""

    def __init__(self, request: ProbeRequest | None) -> None:
        self._request = request
        self.total = 0
        self.outcomes: list[ProbeOutcome | DescribeOutcome] = []

    def __call__(self, step: Progress) -> None:
        # `is`: the variants of a probe (other SNI) are requests of their own, asked after this one.
        if step.request is not self._request:
            return
        self.total = step.total
        if step.outcome is not None:
            self.outcomes.append(step.outcome)

    def words(self) -> str:
        return f"vantages answered {len(self.outcomes)}/{self.total}"

    def interrupted(self) -> str:
        if not self.total:
            return "interrupted: before any vantage was asked"
        return f"interrupted: {len(self.outcomes)} of {self.total} answered"


class TargetProgress:
    """The targets of a report run whose probe fan-out ended, out of `total`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._done: set[str] = set()

    def __call__(self, step: Progress) -> None:
        if step.request is not None and step.outcome is not None and step.done == step.total:
            self._done.add(str(step.request.target))

    @property
    def done(self) -> int:
        return min(len(self._done), self.total)

    def words(self) -> str:
        return f"targets done {self.done}/{self.total}"

    def interrupted(self) -> str:
        return f"interrupted: {self.done} of {self.total} targets done"


class _Line:
    """Rendered at each refresh, so the seconds run on between answers."""

    def __init__(self, words: Callable[[], str]) -> None:
        self._words = words
        self._started = time.monotonic()

    def __rich__(self) -> Text:
        from rich.text import Text

        return Text(f"{self._words()} · {time.monotonic() - self._started:.1f} s", style="dim")


@contextmanager
def showing(tracker: VantageProgress | TargetProgress, *, enabled: bool = True) -> Iterator[None]:
    """Fan-outs in this context tell `tracker`; on a terminal (and when `enabled`) a transient line on
    stderr shows its words."""
    with ExitStack() as stack:
        stack.enter_context(reporting_progress(tracker))
        # rich only when there may be a line to show: `--json` and a run whose stderr is no terminal (cron, a
        # pipe) never load it. rich also takes FORCE_COLOR and TTY_COMPATIBLE for a terminal.
        if enabled and (sys.stderr.isatty() or os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE")):
            from rich.console import Console
            from rich.live import Live

            console = Console(stderr=True)
            if console.is_terminal:
                live = Live(
                    _Line(tracker.words), console=console, transient=True, refresh_per_second=REFRESH_PER_SECOND
                )
                stack.enter_context(live)
        yield
