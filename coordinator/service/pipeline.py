"""What happens to a report run: saved to history, compared with the previous run, written as reports,
its alerts queued in the history's outbox for the delivery worker, and exported as metrics. Used by the
service and by `tlsfleet report run`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ...agent.logs import get_logger
from ..diagnosis.model import Severity
from ..fleet.probe_slots import ProbeSlots
from .alerts import Alert, AlertKind, alert_to_payload, plan_alerts
from .changes import changes_between
from .config import ConfigError, ReportConfig, ServiceConfig
from .delivery import DeliveryWorker
from .dial_in_wait import awaited_agents, wait_for_agents
from .history.store import HistoryError, HistoryStore, Queued, first_seen_lookup
from .metrics import FleetMetrics, Route, serve_metrics
from .report_model import Change, ReportRun
from .reports.writer import write_reports
from .runner import run_report
from .webhooks import WebhookTarget

if TYPE_CHECKING:  # the agent link's gRPC servicers load only where a service runs one, the routes likewise
    from .agent_link import AgentLinkServer
    from .probe_endpoint import ProbeEndpoint

log = get_logger("tlsfleet.coordinator")
# Empty runs (interrupted, abandoned early) passed over to find the previous run; past them, an empty one is it.
MAX_EMPTY_RUNS_PASSED = 100


@dataclass(frozen=True)
class CompletedRun:
    run: ReportRun  # with its run id
    changes: tuple[Change, ...]
    written: tuple[Path, ...]
    alerts: tuple[Alert, ...]
    queued: int  # outbox rows the alerts added, one per (alert, webhook)


class Pipeline:
    def __init__(self, config: ServiceConfig, history: HistoryStore, *, runs_in_metrics: bool = True) -> None:
        """`runs_in_metrics` False: completed runs are not turned into series (`report run`, which serves no
        /metrics: for a fleet-sized run that is some 80 ms of the run's serial end)."""
        self._config = config
        self._history = history
        self._runs_in_metrics = runs_in_metrics
        self.metrics = FleetMetrics()
        # Posts the outbox; the service runs it as a loop of its own, `report run` for one pass.
        self.delivery = DeliveryWorker(
            history, {w.name: self._webhook(w.name) for w in config.webhooks}, metrics=self.metrics
        )
        # One bound on probes in flight for every run this pipeline makes, whatever their number.
        self.probe_slots = ProbeSlots(config.max_probes_in_flight)
        self.abandon = asyncio.Event()  # set on shutdown: runs in flight stop and keep what they have
        self._metrics_server: asyncio.Server | None = None
        self.metrics_address: str | None = None
        self.agent_link: AgentLinkServer | None = None  # agents that dial in, when [agent_link] is configured
        self.probe_endpoint: ProbeEndpoint | None = None  # /probe, when [probe_endpoint] is configured
        # Runs of different reports may finish together; history and alert bookkeeping take one at a time.
        self._completing = asyncio.Lock()
        # The run each report's metrics show, as (started_at, run id): its own, or one `follow` found.
        self._shown: dict[str, tuple[datetime, int]] = {}

    async def start_metrics(self) -> None:
        """The service's listeners: /metrics and the fleet page, and the agent link when configured."""
        from ...agent.endpoints import join_host_port, split_host_port
        from .http_routes import FleetPages, ServiceHealth
        from .probe_endpoint import ProbeEndpoint, probe_disabled

        if self._config.agent_link is not None:
            await self._start_agent_link()
        if self._config.metrics_listen is None:
            return
        host, port = split_host_port(self._config.metrics_listen, allow_port_zero=True)
        registry = self.agent_link.registry if self.agent_link is not None else None
        pages = FleetPages(self._config.reports, self._history, registry)
        health = ServiceHealth(self._history, stopping=self.abandon.is_set)
        routes: dict[str, Route] = {"/healthz": health.answer, "/probe": probe_disabled}
        if self._config.probe_endpoint is not None:
            self.probe_endpoint = ProbeEndpoint(
                self._config.probe_endpoint,
                inventory=self._config.inventory,
                slots=self.probe_slots,
                link_registry=registry,
            )
            routes["/probe"] = self.probe_endpoint.answer
        self._metrics_server, bound = await serve_metrics(
            self.metrics.registry, host, port, pages=pages.answer, routes=routes
        )
        self.metrics_address = join_host_port(host, bound)

    async def _start_agent_link(self) -> None:
        from ...agent.pki.credentials import load_credentials
        from ...agent.pki.location import default_pki_dir
        from ..fleet.inventory import load_inventory
        from .agent_link import AgentLinkServer

        assert self._config.agent_link is not None
        inventory = load_inventory(self._config.inventory, pki_dir=default_pki_dir())
        paths = inventory.credentials
        credentials = load_credentials(paths.ca, paths.cert, paths.key, expect_role="coordinator")
        link = AgentLinkServer(self._config.agent_link, credentials, frozenset(a.name for a in inventory.agents))
        await link.start()
        self.agent_link = link

    async def close(self) -> None:
        if self.agent_link is not None:
            await self.agent_link.stop()
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
        if self.probe_endpoint is not None:  # after its listener: no request still uses its channels
            await self.probe_endpoint.close()

    async def run(self, report: ReportConfig) -> CompletedRun:
        log.info("report_run_started", report=report.name, targets=len(report.targets))
        from ..fleet.linked_vantage import linked_candidates

        # The run to compare with is read while the agents probe: decoding a fleet-sized run costs about
        # what writing its reports does, and a probing coordinator mostly waits.
        # Read early only where the wait for dial-ins needs the previous run's agents; otherwise complete()
        # reads it once this run is saved, without the targets that came out the same, which costs far less.
        read_early = (
            asyncio.ensure_future(asyncio.to_thread(self._latest_probing, report.name))
            if self._awaiting_dial_ins()
            else None
        )
        try:
            if read_early is not None:
                await self._await_dial_ins(report, read_early)
            run = await run_report(
                report,
                inventory=self._config.inventory,
                slots=self.probe_slots,
                abandon=self.abandon,
                linked=linked_candidates(self.agent_link.registry) if self.agent_link is not None else (),
            )
        except BaseException:
            if read_early is not None:
                read_early.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        return await self.complete(report, run, read_early=read_early)

    def _awaiting_dial_ins(self) -> bool:
        link, config = self.agent_link, self._config.agent_link
        if link is None or config is None or link.started_at is None:
            return False
        return time.monotonic() < link.started_at + config.wait_at_start_s

    async def _await_dial_ins(self, report: ReportConfig, read_early: asyncio.Future[ReportRun | None]) -> None:
        """Soon after start, wait for the agents that answered the report's previous run over a stream to
        dial back (see dial_in_wait); those still missing at the deadline are left out, and logged."""
        link, config = self.agent_link, self._config.agent_link
        if link is None or config is None or link.started_at is None:
            return
        deadline = link.started_at + config.wait_at_start_s
        if time.monotonic() >= deadline:
            return
        try:
            previous = await asyncio.shield(read_early)
        except HistoryError:
            return  # complete() says so when it reads the previous run again
        names = awaited_agents(previous, report.agents, link.registry.policy.inventory_names)
        started = time.monotonic()
        missing = await wait_for_agents(names, lambda name: link.registry.session(name) is not None, deadline)
        waited_s = round(time.monotonic() - started, 3)
        if missing:
            log.warning(
                "run_started_without_agents",
                report=report.name,
                agents=list(missing[:20]),
                missing=len(missing),
                waited_s=waited_s,
                reason="they answered the previous run and have not dialled in since this coordinator started",
            )
        elif names:
            log.info("run_waited_for_agents", report=report.name, agents=len(names), waited_s=waited_s)

    async def complete(
        self, report: ReportConfig, run: ReportRun, *, read_early: asyncio.Future[ReportRun | None] | None = None
    ) -> CompletedRun:
        """Save `run`, compare it with the previous run, write its reports, queue its alerts. `read_early`:
        the previous run as read before `run` was saved, used if it is still the one to compare with."""
        async with self._completing:
            run_id = await asyncio.to_thread(self._history.save_run, run)
            run = replace(run, run_id=run_id)
            previous = await self._previous_of(run, read_early)
            changes = await asyncio.to_thread(changes_between, previous, run, first_seen_lookup(self._history))
            # plan_alerts asks the history what was announced: a database read, so off the event loop.
            alerts = await asyncio.to_thread(
                plan_alerts,
                run,
                changes,
                min_severity=report.notify_min_severity,
                expiry_warning_days=report.expiry_warning_days,
                expiry_critical_days=report.expiry_critical_days,
                already_announced=self._history.announced,
                previous=previous,
            )
            # The previous run is the largest thing held besides this one; reports do not need it.
            del previous
            try:
                written = await asyncio.to_thread(
                    write_reports,
                    run,
                    changes,
                    self._config.reports_dir,
                    report.formats,
                    expiry_warning_days=report.expiry_warning_days,
                    expiry_critical_days=report.expiry_critical_days,
                )
            except OSError as error:  # a full disk, a directory made read-only: the run and its alerts still count
                log.error(
                    "reports_not_written", report=run.report, directory=str(self._config.reports_dir), reason=str(error)
                )
                written = []
            queued = await self._enqueue(report, run, alerts)
            if self._runs_in_metrics:
                self.metrics.observe_run(run, changes)
            self._shown[run.report] = (run.started_at, run_id)
        severities = [f.severity for t in run.targets for f in t.findings]
        counts = {str(s): severities.count(s) for s in (Severity.CRITICAL, Severity.WARNING)}
        log.info(
            "report_run_done",
            report=run.report,
            run_id=run_id,
            duration_s=round(run.duration_s, 3),
            targets=len(run.targets),
            abandoned=run.abandoned,
            changes=len(changes),
            alerts=len(alerts),
            reports=[str(p) for p in written],
            **counts,
        )
        return CompletedRun(run, tuple(changes), tuple(written), tuple(alerts), queued)

    async def follow(self) -> list[str]:
        """Show in the metrics each report's latest run in the history when it is newer than the run shown:
        runs that other coordinators sharing the history made, and at start the runs made before it. Every
        coordinator scraped then tells the same; returns the reports refreshed."""
        refreshed = []
        for report in self._config.reports:
            newest = await asyncio.to_thread(self._history.list_runs, report.name, 1)
            if not newest or not self._newer(report.name, newest[0].started_at, newest[0].run_id):
                continue
            async with self._completing:  # never beside a run of this coordinator's being completed
                summary = newest[0]
                if not self._newer(report.name, summary.started_at, summary.run_id):
                    continue
                run = await asyncio.to_thread(self._history.get_run, summary.run_id)
                if run is None:  # pruned meanwhile
                    continue
                previous = await asyncio.to_thread(self._history.run_to_compare, report.name, summary.run_id)
                changes = await asyncio.to_thread(changes_between, previous, run, first_seen_lookup(self._history))
                del previous
                self.metrics.observe_run(run, changes)
                self._shown[report.name] = (summary.started_at, summary.run_id)
            refreshed.append(report.name)
        return refreshed

    def _newer(self, report: str, started_at: datetime, run_id: int) -> bool:
        shown = self._shown.get(report)
        return shown is None or (started_at, run_id) > shown

    async def _previous_of(
        self, run: ReportRun, read_early: asyncio.Future[ReportRun | None] | None
    ) -> ReportRun | None:
        """The run to compare the run just saved with: the one read early when the history's list of runs
        says it is still the latest run before this one that probed something (another coordinator on the
        same history may have saved one since), else the history's run_to_compare."""
        assert run.run_id is not None
        early = await read_early if read_early is not None else None
        if early is not None:
            listed = await asyncio.to_thread(self._history.list_runs, run.report, 5)
            wanted = next((s.run_id for s in listed if s.run_id < run.run_id and s.targets), None)
            if wanted == early.run_id:
                return early
        return await asyncio.to_thread(self._history.run_to_compare, run.report, run.run_id)

    def _latest_probing(self, report: str) -> ReportRun | None:
        """The latest run that probed something, whole. A run interrupted with its coordinator, or abandoned
        before its first target, knows nothing to compare."""
        previous = self._history.latest_run(report)
        for _ in range(MAX_EMPTY_RUNS_PASSED):
            if previous is None or previous.targets or previous.run_id is None:
                break
            previous = self._history.latest_run(report, previous.run_id)
        return previous

    async def _enqueue(self, report: ReportConfig, run: ReportRun, alerts: list[Alert]) -> int:
        """Queue each alert for every webhook of the report and mark it announced, in one transaction: the
        run never waits for a receiver, and a run planned again after a crash finds its alerts queued."""
        if not alerts:
            return 0
        items = [
            Queued(a.key, a.kind.value, a.kind is AlertKind.RESOLVED, alert_to_payload(a), report.webhooks)
            for a in alerts
        ]
        queued = await asyncio.to_thread(self._history.enqueue, items, run.finished_at)
        if queued:
            self.delivery.wake()
        return queued

    def _webhook(self, name: str) -> WebhookTarget:
        hook = self._config.webhook(name)
        try:
            return WebhookTarget(name=hook.name, url=hook.url, format=hook.format, timeout_s=hook.timeout_s)
        except ValueError as error:  # what the config's own checks let through (a port out of range)
            raise ConfigError(f"[[webhook]] {error}") from None
