"""The fleet page's routes on the metrics address: `/`, `/reports/NAME`, `/runs/ID`, `/targets/NAME/TARGET`;
and `/healthz`.

History reads are synchronous store calls and rendering takes milliseconds to seconds for a large run:
both run in a worker thread, at most `MAX_RENDERS` at once, so pages never hold up the probes on the event
loop nor crowd out the pipeline's own history writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ...agent.logs import get_logger
from .changes import changes_between
from .config import ReportConfig
from .fleet_page import (
    MAX_RUNS,
    agent_sightings,
    render_not_found,
    render_overview,
    render_report_page,
    render_run_page,
    render_target_page,
    render_unavailable,
    report_href,
    report_line,
    run_href,
    slim_run,
    target_history,
    target_href,
)
from .history.store import HistoryError, HistoryStore, RunSummary, first_seen_lookup
from .metrics import TEXT, HttpReply, HttpRequest
from .report_model import Change, ReportRun

if TYPE_CHECKING:  # the link registry's wire code loads only where a service runs an agent link
    from ..fleet.link_registry import LinkedAgentInfo, LinkRegistry

log = get_logger("tlsfleet.coordinator")

MAX_RENDERS = 2
HEALTH_TIMEOUT_S = 3.0
_MAX_RUN_ID_DIGITS = 18
Page = tuple[int, bytes]  # HTTP status, HTML body


class FleetPages:
    """Answers the fleet page's paths from the configured reports, the history, and the agent link's registry."""

    def __init__(
        self,
        reports: Sequence[ReportConfig],
        history: HistoryStore,
        registry: LinkRegistry | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reports = {r.name: r for r in reports}
        self._history = history
        self._registry = registry
        self._clock = clock
        self._renders = asyncio.Semaphore(MAX_RENDERS)

    async def answer(self, path: str) -> Page:
        """The page at `path` (already stripped of its query): status and HTML."""
        # The registry changes on the event loop: read it here, render from the copy in the thread.
        linked = self._registry.agents() if self._registry is not None and path == "/" else None
        async with self._renders:
            try:
                status, text = await asyncio.to_thread(self._page, path, linked)
            except HistoryError as error:
                status, text = 503, render_unavailable(f"The history cannot be read: {error}")
            except Exception:
                log.exception("fleet_page_failed", path=path[:200])
                status, text = 500, render_unavailable("This page failed to render; the service log says why.")
        return status, text.encode("utf-8")

    def _page(self, path: str, linked: list[LinkedAgentInfo] | None) -> tuple[int, str]:
        parts = [unquote(p, errors="replace") for p in path.split("/")[1:]]
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # one trailing slash is the same page
        match parts:
            case [""]:
                return 200, self._overview(linked if self._registry is not None else None)
            case ["reports", name]:
                return self._report(name)
            case ["runs", run_id]:
                return self._run(run_id)
            case ["targets", name, target]:
                return self._target(name, target)
        return 404, render_not_found(
            f"There is no page at {path[:200]}.",
            "The fleet overview and the reports",
            [("Fleet overview", "/"), *self._report_links()],
        )

    def _report_links(self) -> list[tuple[str, str]]:
        return [(f"Report {name}", report_href(name)) for name in self._reports]

    def _no_report(self, name: str) -> tuple[int, str]:
        return 404, render_not_found(
            f"No report named {name!r} is configured.", "Reports configured", self._report_links()
        )

    def _overview(self, linked: list[LinkedAgentInfo] | None) -> str:
        lines, seen = [], []
        for name in self._reports:
            run = self._history.latest_run(name)
            lines.append(report_line(name, run))
            if run is not None:
                # Only the agents are needed from here on, without their trust stores' roots.
                seen.append(replace(run, targets=(), agents=tuple(replace(a, stores=()) for a in run.agents)))
        return render_overview(lines, agent_sightings(seen), linked, now=self._clock())

    def _report(self, name: str) -> tuple[int, str]:
        config = self._reports.get(name)
        if config is None:
            return self._no_report(name)
        latest = self._history.latest_run(name)
        changes: tuple[Change, ...] = ()
        targets = list(config.targets)
        if latest is not None:
            changes = self._changes_to(latest)
            targets += [t.target for t in latest.targets if t.target not in config.targets]
        runs = self._history.list_runs(name, MAX_RUNS)
        return 200, render_report_page(
            name,
            latest,
            changes,
            runs,
            targets,
            expiry_warning_days=config.expiry_warning_days,
            expiry_critical_days=config.expiry_critical_days,
        )

    def _changes_to(self, run: ReportRun) -> tuple[Change, ...]:
        # Runs read from the history always have their id.
        previous = self._history.run_to_compare(run.report, run.run_id) if run.run_id is not None else None
        return changes_between(previous, run, first_seen_lookup(self._history))

    def _run(self, text: str) -> tuple[int, str]:
        run = None
        if text.isascii() and text.isdigit() and len(text) <= _MAX_RUN_ID_DIGITS:
            run = self._history.get_run(int(text))
        if run is None:
            kept = self._history.list_runs(None, MAX_RUNS)
            return 404, render_not_found(
                f"No run with id {text[:40]!r} is kept.",
                "The latest runs kept",
                [(f"run {r.run_id} of {r.report}", run_href(r.run_id)) for r in kept],
            )
        config = self._reports.get(run.report)
        thresholds: dict[str, float] = {}
        if config is not None:
            thresholds = {
                "expiry_warning_days": config.expiry_warning_days,
                "expiry_critical_days": config.expiry_critical_days,
            }
        return 200, render_run_page(run, self._changes_to(run), **thresholds)

    def _target(self, name: str, target: str) -> tuple[int, str]:
        config = self._reports.get(name)
        if config is None:
            return self._no_report(name)
        # Oldest first; each run is cut down to this target as soon as it is read.
        ids = [r.run_id for r in reversed(self._history.list_runs(name, MAX_RUNS))]
        runs = [slim_run(run, target) for run in map(self._history.get_run, ids) if run is not None]
        history = target_history(name, target, runs)
        if target not in config.targets and not history.probed:
            return 404, render_not_found(
                f"Report {name!r} has no target {target!r} in its configuration or its last {MAX_RUNS} runs.",
                f"Targets of {name}",
                [(t, target_href(name, t)) for t in config.targets],
            )
        return 200, render_target_page(
            history,
            now=self._clock(),
            expiry_warning_days=config.expiry_warning_days,
            expiry_critical_days=config.expiry_critical_days,
        )


class ServiceHealth:
    """`/healthz`: 200 "ok" when the service is running and its history answers a read within
    HEALTH_TIMEOUT_S; 503 with the reason otherwise. It is answered on the event loop that runs the schedules
    and probes, so an answer at all says that loop is alive. One history read at a time: checks that arrive
    while one is pending wait for it rather than pile up threads behind a hung database."""

    def __init__(self, history: HistoryStore, *, stopping: Callable[[], bool] = lambda: False) -> None:
        self._history = history
        self._stopping = stopping
        self._pending: asyncio.Future[list[RunSummary]] | None = None

    async def answer(self, _request: HttpRequest) -> HttpReply:
        if self._stopping():
            return _unhealthy("stopping: the service is shutting down and abandoning its runs in flight")
        pending = self._pending
        if pending is None or pending.done():
            pending = self._pending = asyncio.ensure_future(asyncio.to_thread(self._history.list_runs, None, 1))
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, also when late
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await asyncio.shield(pending)
        except TimeoutError:
            return _unhealthy(f"the history did not answer a read within {HEALTH_TIMEOUT_S:g} s")
        except Exception as error:
            return _unhealthy(
                f"the history cannot be read: {' '.join(str(error).split())[:500] or type(error).__name__}"
            )
        return HttpReply(200, TEXT, b"ok\n")


def _unhealthy(reason: str) -> HttpReply:
    log.warning("healthz_unhealthy", reason=reason)
    return HttpReply(503, TEXT, (reason + "\n").encode())
