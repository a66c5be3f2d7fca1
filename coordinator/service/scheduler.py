"""`tlsfleet coordinator serve`: run every report on its schedule until SIGTERM.

Each report has its own loop: sleep until the next start (jitter included), then start a run unless
the previous run of the same report is still going (then that start is skipped and logged). All runs
share one bound on probes in flight. Alerts are delivered from the history's outbox by a loop of their
own (delivery.py). On SIGTERM no new run starts; runs in flight get a grace period to
finish and are then abandoned (what they probed is kept, marked abandoned).
"""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import UTC, datetime, timedelta

import structlog

from ...agent.errors import UsageError
from .config import ReportConfig, ServiceConfig
from .history import HistoryStore, open_history
from .pipeline import Pipeline
from .reports.writer import prune_reports
from .schedule import Schedule

log = structlog.get_logger("tlsfleet.coordinator")
PRUNE_EVERY = timedelta(hours=1)
ABANDON_WAIT_S = 15.0  # an abandoned run still saves what it probed


class CoordinatorService:
    def __init__(self, config: ServiceConfig, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._running: dict[str, asyncio.Task[None]] = {}

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        history = open_history(self._config.storage)
        pipeline = Pipeline(self._config, history)
        try:
            await pipeline.start_metrics()
            log.info(
                "coordinator_started",
                reports=[r.name for r in self._config.reports],
                metrics=pipeline.metrics_address,
                history=self._config.storage.location,
            )
            loops = [asyncio.create_task(self._schedule(r, pipeline, stop)) for r in self._config.reports]
            loops.append(asyncio.create_task(self._prune(history, stop)))
            # Alerts go out from the outbox on their own loop: a slow receiver never holds up a run.
            loops.append(asyncio.create_task(pipeline.delivery.run(stop), name="webhook-delivery"))
            await stop.wait()
            in_flight = sorted(name for name, task in self._running.items() if not task.done())
            log.info("coordinator_stopping", in_flight=in_flight, grace_s=self._config.shutdown_grace_s)
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._drain(pipeline)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await pipeline.close()
            history.close()
            log.info("coordinator_stopped")

    async def _schedule(self, report: ReportConfig, pipeline: Pipeline, stop: asyncio.Event) -> None:
        schedule = Schedule(cron=report.schedule, interval_s=report.interval_s, jitter_s=report.jitter_s)
        # An interval report runs once at start; a cron report waits for its first slot.
        now = datetime.now(UTC)
        slot = now if report.schedule is None else schedule.next_slot(now)
        while not stop.is_set():
            when = schedule.jittered(slot, self._rng)
            delay = (when - datetime.now(UTC)).total_seconds()
            if delay > 0:
                log.debug("run_scheduled", report=report.name, at=when.isoformat())
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            running = self._running.get(report.name)
            if running is not None and not running.done():
                log.warning("run_skipped_overlap", report=report.name, reason="the previous run is still going")
            else:
                self._running[report.name] = asyncio.create_task(
                    self._run_one(pipeline, report), name=f"report-{report.name}"
                )
            slot = schedule.next_slot(slot)

    @staticmethod
    async def _run_one(pipeline: Pipeline, report: ReportConfig) -> None:
        """One run; a failure is logged with its reason and the schedule goes on."""
        try:
            await pipeline.run(report)
        except (UsageError, OSError) as error:
            log.error("report_run_failed", report=report.name, reason=str(error))
        except Exception:
            log.exception("report_run_failed", report=report.name, reason="internal error")

    async def _prune(self, history: HistoryStore, stop: asyncio.Event) -> None:
        retention = timedelta(days=self._config.storage.retention_days)
        while not stop.is_set():
            cutoff = datetime.now(UTC) - retention
            removed = await asyncio.to_thread(history.prune, cutoff)
            files = await asyncio.to_thread(prune_reports, self._config.reports_dir, cutoff)
            if removed or files:
                log.info("history_pruned", runs=removed, report_files=files)
            try:
                await asyncio.wait_for(stop.wait(), timeout=PRUNE_EVERY.total_seconds())
            except TimeoutError:
                continue

    async def _drain(self, pipeline: Pipeline) -> None:
        """Let runs in flight finish; past the grace period, abandon them (they keep and save what they
        probed); cancel only what still hangs after that."""
        running = [t for t in self._running.values() if not t.done()]
        if not running:
            return
        _done, pending = await asyncio.wait(running, timeout=self._config.shutdown_grace_s)
        if not pending:
            return
        pipeline.abandon.set()
        _done, stuck = await asyncio.wait(pending, timeout=ABANDON_WAIT_S)
        for task in stuck:
            log.error("run_cancelled", task=task.get_name(), reason="did not stop after being abandoned")
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
