"""Prometheus metrics of the fleet, from each report run, and a small `/metrics` endpoint.

Each run replaces every series of its report, so series of targets and agents that left the report go with
the next run instead of lingering. Label values are bounded: targets and agents come from the configuration
and inventory, causes, severities, verdicts and change kinds from their enums; on top, each metric holds at
most `max_series_per_metric` series and counts the ones it had to drop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...agent.model import Verdict
from ...agent.trust.certinfo import CertificateParseError, summarize
from ..outcomes import VantageState
from .report_model import Change, ReportRun, TargetRun

log = structlog.get_logger("tlsfleet.coordinator")

DEFAULT_MAX_SERIES = 10_000
Labels = tuple[str, ...]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    help: str
    labels: Labels

    @property
    def per_target(self) -> bool:
        return "target" in self.labels


CERT_NOT_AFTER = MetricSpec(
    "tlsfleet_certificate_expiry_timestamp_seconds",
    "notAfter of the leaf served to the agent, unix seconds (the earliest when its addresses serve several).",
    ("report", "target", "agent"),
)
CERT_DAYS_LEFT = MetricSpec(
    "tlsfleet_certificate_expiry_days_left",
    "Days from the run's start to that leaf's notAfter; negative once expired.",
    ("report", "target", "agent"),
)
VERDICT_OK = MetricSpec(
    "tlsfleet_verdict_ok",
    "1 when the agent's native client accepted the chain on every address, else 0; `verdict` says what it saw.",
    ("report", "target", "agent", "verdict"),
)
FINDINGS = MetricSpec(
    "tlsfleet_findings",
    "Findings of the last run, by cause and severity.",
    ("report", "target", "cause", "severity"),
)
AGENT_UP = MetricSpec("tlsfleet_agent_up", "1 when the agent answered in the last run, else 0.", ("report", "agent"))
AGENT_CLOCK_OFFSET = MetricSpec(
    "tlsfleet_agent_clock_offset_seconds",
    "The agent's clock minus the coordinator's, estimated in the last run.",
    ("report", "agent"),
)
RUN_DURATION = MetricSpec("tlsfleet_report_run_duration_seconds", "How long the last run took.", ("report",))
RUN_TIMESTAMP = MetricSpec(
    "tlsfleet_report_run_timestamp_seconds", "When the last run finished, unix seconds.", ("report",)
)
RUN_ABANDONED = MetricSpec(
    "tlsfleet_report_run_abandoned",
    "1 when the last run stopped before probing every target (deadline or shutdown).",
    ("report",),
)
CHANGES = MetricSpec(
    "tlsfleet_report_changes", "Changes since the previous run, by kind, in the last run.", ("report", "kind")
)
SPECS: tuple[MetricSpec, ...] = (
    CERT_NOT_AFTER,
    CERT_DAYS_LEFT,
    VERDICT_OK,
    FINDINGS,
    AGENT_UP,
    AGENT_CLOCK_OFFSET,
    RUN_DURATION,
    RUN_TIMESTAMP,
    RUN_ABANDONED,
    CHANGES,
)
DROPPED_NAME = "tlsfleet_metrics_series_dropped"  # exposed as ..._total

Series = dict[Labels, float]
Snapshot = dict[str, Series]  # metric name -> its series for one report


class FleetMetrics:
    """The fleet's gauges in a registry of their own; feed it every finished run."""

    def __init__(self, *, max_series_per_metric: int = DEFAULT_MAX_SERIES) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric {max_series_per_metric} is not accepted; 1 or more")
        self.max_series_per_metric = max_series_per_metric
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()  # the exposition runs in a worker thread
        self._reports: dict[str, Snapshot] = {}
        self.dropped = Counter(
            DROPPED_NAME,
            "Series not exported because their metric reached its cap.",
            ("metric",),
            registry=self.registry,
        )
        # Webhook delivery (delivery.py): webhooks come from the configuration, results from a fixed set.
        self.outbox_pending = Gauge(
            "tlsfleet_webhook_outbox_pending",
            "Alerts queued for the webhook and not yet delivered nor given up.",
            ("webhook",),
            registry=self.registry,
        )
        self.delivery_attempts = Counter(
            "tlsfleet_webhook_delivery_attempts",
            "Webhook delivery attempts by result: delivered, failed (retried later), given_up, deferred.",
            ("webhook", "result"),
            registry=self.registry,
        )
        self.registry.register(_SnapshotCollector(self))

    def observe_run(self, run: ReportRun, changes: Sequence[Change] = ()) -> None:
        """Replace the report's series with this run's. An abandoned run keeps the previous series of the
        targets it did not reach: they are still configured, just not re-measured."""
        fresh = _snapshot(run, changes)
        with self._lock:
            old = self._reports.get(run.report, {})
            if run.abandoned:
                reached = {t.target for t in run.targets}
                for spec in SPECS:
                    if spec.per_target:
                        for labels, value in old.get(spec.name, {}).items():
                            if labels[1] not in reached:
                                fresh[spec.name][labels] = value
            dropped = self._cap(run.report, fresh)
            self._reports[run.report] = fresh
        for name, count in dropped.items():
            self.dropped.labels(metric=name).inc(count)
            log.warning("metrics_series_dropped", report=run.report, metric=name, dropped=count)

    def forget_report(self, report: str) -> None:
        """Remove every series of a report that is no longer configured."""
        with self._lock:
            self._reports.pop(report, None)

    def series_count(self, name: str) -> int:
        with self._lock:
            return sum(len(snapshot.get(name, {})) for snapshot in self._reports.values())

    def _cap(self, report: str, fresh: Snapshot) -> dict[str, int]:
        dropped: dict[str, int] = {}
        for name, series in fresh.items():
            others = sum(len(s.get(name, {})) for r, s in self._reports.items() if r != report)
            room = max(0, self.max_series_per_metric - others)
            if len(series) > room:
                kept = sorted(series)[:room]  # sorted: the same series survive from run to run
                fresh[name] = {labels: series[labels] for labels in kept}
                dropped[name] = len(series) - room
        return dropped

    def _families(self) -> Iterator[Metric]:
        with self._lock:
            merged: dict[str, list[tuple[Labels, float]]] = {spec.name: [] for spec in SPECS}
            for snapshot in self._reports.values():
                for name, series in snapshot.items():
                    merged[name].extend(series.items())
        for spec in SPECS:
            family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in sorted(merged[spec.name]):
                family.add_metric(labels, value)
            yield family


class _SnapshotCollector(Collector):
    def __init__(self, metrics: FleetMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._families())

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(spec.name, spec.help, labels=spec.labels) for spec in SPECS]


def _snapshot(run: ReportRun, changes: Sequence[Change]) -> Snapshot:
    snap: Snapshot = {spec.name: {} for spec in SPECS}
    r = run.report
    at = run.started_at
    for target_run in run.targets:
        _target_series(snap, r, target_run, at)
    for agent in run.agents:
        up = agent.state is VantageState.OK
        snap[AGENT_UP.name][(r, agent.name)] = 1.0 if up else 0.0
        if up and agent.clock_offset_ms is not None:
            snap[AGENT_CLOCK_OFFSET.name][(r, agent.name)] = agent.clock_offset_ms / 1000.0
    snap[RUN_DURATION.name][(r,)] = max(run.duration_s, 0.0)
    snap[RUN_TIMESTAMP.name][(r,)] = run.finished_at.timestamp()
    snap[RUN_ABANDONED.name][(r,)] = 1.0 if run.abandoned else 0.0
    for change in changes:
        key = (r, change.kind.value)
        snap[CHANGES.name][key] = snap[CHANGES.name].get(key, 0.0) + 1.0
    return snap


def _target_series(snap: Snapshot, report: str, target_run: TargetRun, at: datetime) -> None:
    t = target_run.target
    verdicts: dict[str, list[Verdict]] = {}
    not_after: dict[str, datetime] = {}
    for outcome in target_run.observation.answered:
        verdicts.setdefault(outcome.vantage.name, [])
    for row in target_run.observation.rows:
        verdicts.setdefault(row.agent, []).append(row.address.native.verdict)
        if row.address.chain:
            try:
                leaf = summarize(row.address.chain[0])
            except CertificateParseError:
                continue
            earliest = not_after.get(row.agent)
            if earliest is None or leaf.not_after < earliest:
                not_after[row.agent] = leaf.not_after
    for agent, seen in verdicts.items():
        # No address answered at all (resolution failed, every connect refused) reads as "no chain".
        worst = next((v for v in seen if v is not Verdict.OK), Verdict.OK if seen else Verdict.NO_CHAIN)
        snap[VERDICT_OK.name][(report, t, agent, worst.value)] = 1.0 if worst is Verdict.OK else 0.0
    for agent, when in not_after.items():
        snap[CERT_NOT_AFTER.name][(report, t, agent)] = when.timestamp()
        snap[CERT_DAYS_LEFT.name][(report, t, agent)] = (when - at).total_seconds() / 86400.0
    for finding in target_run.findings:
        key = (report, t, finding.cause.value, str(finding.severity))
        snap[FINDINGS.name][key] = snap[FINDINGS.name].get(key, 0.0) + 1.0


_MAX_REQUEST_HEAD = 8 * 1024
_READ_TIMEOUT_S = 5.0
_MAX_CONNECTIONS = 16
# Other paths' pages, when the service serves them (the fleet page): path in, (status, HTML) out.
PageSource = Callable[[str], Awaitable[tuple[int, bytes]]]


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *, pages: PageSource | None = None
) -> tuple[asyncio.Server, int]:
    """Serve `GET /metrics` in the Prometheus text format on host:port (0 picks a free port), and every
    other path from `pages` when given.

    Returns the server and the port it is bound to; stop it with `server.close()` then
    `await server.wait_closed()`. At most 16 connections are served at once (others get 503), and a client
    has 5 s to send its request.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port {port} is not accepted; 0 (any free port) to 65535")
    slots = asyncio.Semaphore(_MAX_CONNECTIONS)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if slots.locked():
                await _respond(writer, 503, "text/plain; charset=utf-8", b"busy: too many scrapes at once\n")
                return
            async with slots:
                await _serve_one(registry, reader, writer, pages)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or was too slow: nothing to answer
        finally:
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                pass

    try:
        server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_HEAD)
    except OSError as error:
        raise OSError(
            error.errno, f"metrics endpoint cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None
    bound = server.sockets[0].getsockname()[1]
    log.info("metrics_listening", host=host, port=bound)
    return server, bound


async def _serve_one(
    registry: CollectorRegistry,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    pages: PageSource | None = None,
) -> None:
    async with asyncio.timeout(_READ_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    path = rest.partition(" ")[0].partition("?")[0]
    if method not in ("GET", "HEAD"):
        await _respond(writer, 405, "text/plain; charset=utf-8", b"only GET and HEAD are served\n", allow=True)
        return
    if path != "/metrics" and pages is not None:
        status, page = await pages(path)
        await _respond(writer, status, "text/html; charset=utf-8", page, head_only=method == "HEAD")
        return
    if path != "/metrics":
        await _respond(writer, 404, "text/plain; charset=utf-8", b"not found; metrics are at /metrics\n")
        return
    # Rendering thousands of series takes milliseconds: off the event loop that runs the probes.
    body = await asyncio.to_thread(generate_latest, registry)
    await _respond(writer, 200, CONTENT_TYPE_LATEST, body, head_only=method == "HEAD")


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool = False,
    allow: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow:
        lines.append("Allow: GET, HEAD")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))
    async with asyncio.timeout(_READ_TIMEOUT_S):
        await writer.drain()
