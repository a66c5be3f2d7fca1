"""`tlsfleet coordinator serve`: run every report on its schedule until SIGTERM.

Each report has its own loop: sleep until the next start (jitter included), then claim the slot's lease
in the history and run it, unless the slot is claimed already (by another coordinator sharing the
history: each slot runs once) or the previous run of the same report is still going anywhere (then the
start is skipped and logged). The holder renews its lease while the run goes and marks it done with the
run's id; a lease that expired unfinished (its holder was killed or cut off) is recorded as an
interrupted run by the first coordinator to sweep, and never run again. All runs share one bound on
probes in flight. Alerts are delivered from the history's outbox by a loop of their own (delivery.py).
On SIGTERM no new run starts; runs in flight get a grace period to finish and are then abandoned (what
they probed is kept, marked abandoned).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
from datetime import UTC, datetime, timedelta

from ...agent import startup_collection
from ...agent.errors import UsageError
from ...agent.logs import get_logger
from .config import ReportConfig, ServiceConfig
from .history import HistoryError, HistoryStore, open_history
from .pipeline import Pipeline
from .reports.writer import prune_reports
from .schedule import Schedule

log = get_logger("tlsfleet.coordinator")
PRUNE_EVERY = timedelta(hours=1)
ABANDON_WAIT_S = 15.0  # an abandoned run still saves what it probed
RENEWALS_PER_EXPIRY = 3  # a lease is renewed (and expired ones swept) this often within its expiry


def replica_identity() -> str:
    """host:pid:suffix: names a coordinator process in leases and logs; the suffix tells apart processes
    of the same pid (containers, restarts) on one host name."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class CoordinatorService:
    def __init__(self, config: ServiceConfig, *, owner: str | None = None) -> None:
        self._config = config
        self.owner = owner or replica_identity()
        self._lease = timedelta(seconds=config.storage.lease_expiry_s)
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
                replica=self.owner,
                lease_expiry_s=self._lease.total_seconds(),
            )
            loops = [asyncio.create_task(self._schedule(r, pipeline, history, stop)) for r in self._config.reports]
            loops.append(asyncio.create_task(self._prune(history, stop)))
            loops.append(asyncio.create_task(self._sweep_loop(history, pipeline, stop), name="lease-sweep"))
            # Alerts go out from the outbox on their own loop: a slow receiver never holds up a run.
            loops.append(asyncio.create_task(pipeline.delivery.run(stop), name="webhook-delivery"))
            startup_collection.serving()
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

    async def _schedule(
        self, report: ReportConfig, pipeline: Pipeline, history: HistoryStore, stop: asyncio.Event
    ) -> None:
        schedule = Schedule(cron=report.schedule, interval_s=report.interval_s, jitter_s=report.jitter_s)
        # An interval report starts with its current slot (run late unless it ran already); cron waits.
        now = datetime.now(UTC)
        slot = schedule.first_slot(now)
        catching_up = schedule.jittered(slot, report.name) < now
        while not stop.is_set():
            when = schedule.jittered(slot, report.name)
            delay = (when - datetime.now(UTC)).total_seconds()
            if delay > 0:
                log.debug("run_scheduled", report=report.name, at=when.isoformat())
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            ran = await self._start(report, slot, pipeline, history)
            # Slots missed by more than the jitter (a process suspended, a database that hung) are not
            # made up one by one: the next is the first one after that.
            late = datetime.now(UTC) - timedelta(seconds=report.jitter_s)
            following = schedule.next_slot(max(slot, late))
            if catching_up and ran:
                # The current slot run late at start: this coordinator's next run is an interval on at
                # least, not moments later (the slot between is left to the others, if any).
                following = schedule.next_slot(following)
            catching_up = False
            slot = following

    async def _start(self, report: ReportConfig, slot: datetime, pipeline: Pipeline, history: HistoryStore) -> bool:
        """Run `slot` here when this coordinator wins its lease; True when it does."""
        running = self._running.get(report.name)
        if running is not None and not running.done():
            log.warning(
                "run_skipped_overlap",
                report=report.name,
                slot=slot.isoformat(),
                reason="the previous run is still going",
            )
            return False
        await self._sweep(history)  # a lease of this report that expired is recorded before the claim
        now = datetime.now(UTC)
        try:
            lease = await asyncio.to_thread(history.claim_slot, report.name, slot, self.owner, now, now + self._lease)
        except HistoryError as error:
            log.error("run_skipped_history", report=report.name, slot=slot.isoformat(), reason=str(error))
            return False
        if lease.slot != slot:
            log.warning(
                "run_skipped_overlap",
                report=report.name,
                slot=slot.isoformat(),
                reason="the previous run is still going",
                holder=lease.owner,
                running_slot=lease.slot.isoformat(),
            )
            return False
        if lease.owner != self.owner:
            log.debug(
                "run_skipped_held_elsewhere",
                report=report.name,
                slot=slot.isoformat(),
                holder=lease.owner,
                replica=self.owner,
            )
            return False
        log.info("run_claimed", report=report.name, slot=slot.isoformat(), replica=self.owner)
        self._running[report.name] = asyncio.create_task(
            self._run_leased(pipeline, history, report, slot), name=f"report-{report.name}"
        )
        return True

    async def _run_leased(
        self, pipeline: Pipeline, history: HistoryStore, report: ReportConfig, slot: datetime
    ) -> None:
        """The run of a claimed slot, its lease renewed meanwhile and marked done with the run's id after.
        Cancelled, it leaves the lease to expire: another coordinator then records the run interrupted. A
        renewal that finds the lease gone (this coordinator was cut off past its expiry and the slot is
        already recorded interrupted) drops the run before it saves a second record of the slot."""
        run = asyncio.ensure_future(self._run_one(pipeline, report))
        renewing = asyncio.create_task(self._renew(history, report.name, slot, run), name=f"lease-{report.name}")
        try:
            run_id = await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the service is stopping
            log.error(
                "run_lease_lost",
                report=report.name,
                slot=slot.isoformat(),
                reason="its lease expired while the history was out of reach and the slot is recorded as "
                "interrupted; the run is dropped unsaved",
            )
            return
        finally:
            run.cancel()
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        try:
            finished = await asyncio.to_thread(
                history.finish_slot, report.name, slot, self.owner, datetime.now(UTC), run_id
            )
        except HistoryError as error:
            log.error("run_lease_not_finished", report=report.name, slot=slot.isoformat(), reason=str(error))
            return
        if not finished:
            log.error(
                "run_lease_lost",
                report=report.name,
                slot=slot.isoformat(),
                run_id=run_id,
                reason="its lease expired before the run ended; the slot is also recorded as interrupted",
            )

    async def _renew(self, history: HistoryStore, report: str, slot: datetime, run: asyncio.Future[int | None]) -> None:
        every = self._lease.total_seconds() / RENEWALS_PER_EXPIRY
        while True:
            await asyncio.sleep(every)
            now = datetime.now(UTC)
            try:
                held = await asyncio.to_thread(history.renew_slot, report, slot, self.owner, now, now + self._lease)
            except HistoryError as error:
                log.warning("run_lease_not_renewed", report=report, slot=slot.isoformat(), reason=str(error))
                continue
            if not held:
                run.cancel()
                return

    async def _sweep(self, history: HistoryStore) -> None:
        """Record runs whose holder went silent as interrupted; a failure is logged, the next sweep retries."""
        try:
            interrupted = await asyncio.to_thread(history.interrupt_expired, datetime.now(UTC))
        except HistoryError as error:
            log.error("lease_sweep_failed", reason=str(error))
            return
        for lease in interrupted:
            log.warning(
                "run_interrupted",
                report=lease.report,
                slot=lease.slot.isoformat(),
                holder=lease.owner,
                silent_since=lease.renewed_at.isoformat(),
                run_id=lease.run_id,
                replica=self.owner,
            )

    async def _sweep_loop(self, history: HistoryStore, pipeline: Pipeline, stop: asyncio.Event) -> None:
        """Sweep expired leases; and show in the metrics the runs other coordinators made (at start: the
        runs made before this one started), so that every coordinator scraped tells the same."""
        every = self._lease.total_seconds() / RENEWALS_PER_EXPIRY
        while not stop.is_set():
            await self._sweep(history)
            try:
                followed = await pipeline.follow()
            except HistoryError as error:
                log.error("metrics_follow_failed", reason=str(error))
            else:
                if followed:
                    log.info("metrics_followed_history", reports=followed, replica=self.owner)
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                continue

    @staticmethod
    async def _run_one(pipeline: Pipeline, report: ReportConfig) -> int | None:
        """One run, returning its run id; a failure is logged with its reason (None) and the schedule goes on."""
        try:
            return (await pipeline.run(report)).run.run_id
        except (UsageError, OSError) as error:
            log.error("report_run_failed", report=report.name, reason=str(error))
        except Exception:
            log.exception("report_run_failed", report=report.name, reason="internal error")
        return None

    async def _prune(self, history: HistoryStore, stop: asyncio.Event) -> None:
        retention = timedelta(days=self._config.storage.retention_days)
        files_kept = timedelta(days=self._config.storage.report_files_days)
        while not stop.is_set():
            now = datetime.now(UTC)
            removed = await asyncio.to_thread(history.prune, now - retention)
            files = await asyncio.to_thread(prune_reports, self._config.reports_dir, now - files_kept)
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
