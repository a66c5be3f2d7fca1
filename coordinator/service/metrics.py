"""Prometheus metrics of the fleet, from each report run, and the small HTTP server that serves `/metrics` (and
the service's other paths: `/healthz`, `/probe`, the fleet page).

Each run replaces every series of its report, so series of targets and agents that left the report go with
the next run instead of lingering. Label values are bounded: targets and agents come from the configuration
and inventory, causes, severities, verdicts and change kinds from their enums; on top, each metric holds at
most `max_series_per_metric` series and counts the ones it had to drop. Certificate identities (fingerprint,
subject, issuer, serial) are bounded per target and agent too: at most `MAX_CERTIFICATES_PER_AGENT`, the
earliest to expire, and the rest counted as dropped.

The probe metrics are named after blackbox_exporter's and ssl_exporter's with the `tlsfleet_` prefix, so that a
query written for those finds its equivalent here (the README lists the mapping). `probe_series` computes them
for one probe: report runs label them with their report, `/probe` (probe_endpoint.py) answers them as they are.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ... import __version__
from ...agent.logs import get_logger
from ...agent.model import Failure, Verdict
from ...agent.trust.certinfo import CertSummary
from ..diagnosis.model import Finding
from ..matrix import visible
from ..observation import Observation
from ..outcomes import VantageState
from .report_model import Change, ReportRun

log = get_logger("tlsfleet.coordinator")

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

    @property
    def probe_labels(self) -> Labels:
        """The labels of one probe's series, as probe_series keys them: all but the report."""
        return tuple(label for label in self.labels if label != "report")


MAX_CERTIFICATES_PER_AGENT = 20
MAX_LABEL_CHARS = 256  # a subject or issuer name longer than this is cut, ending in "..."

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
PROBE_SUCCESS = MetricSpec(
    "tlsfleet_probe_success",
    "1 when the agent completed the TLS handshake on every address the target resolved to and its native "
    "(openssl view) verdict accepted the chain on each, else 0: also when an address refused, timed out or "
    "never finished the handshake, when nothing resolved, and when the agent did not answer (tlsfleet_agent_up).",
    ("report", "target", "agent"),
)
TLS_VERSION_INFO = MetricSpec(
    "tlsfleet_probe_tls_version_info",
    "1 for each TLS version the agent negotiated with the target (an address each, at least).",
    ("report", "target", "agent", "version"),
)
TLS_CIPHER_INFO = MetricSpec(
    "tlsfleet_probe_tls_cipher_info",
    "1 for each cipher suite the agent negotiated with the target (an address each, at least).",
    ("report", "target", "agent", "cipher"),
)
EARLIEST_EXPIRY = MetricSpec(
    "tlsfleet_probe_ssl_earliest_cert_expiry",
    "The earliest notAfter of any certificate served to the agent (every address, leaf and intermediates), "
    "unix seconds.",
    ("report", "target", "agent"),
)
CERT_EXPIRY = MetricSpec(
    "tlsfleet_ssl_cert_not_after",
    "notAfter of each distinct certificate served to the agent, unix seconds; at most "
    f"{MAX_CERTIFICATES_PER_AGENT} per target and agent (the earliest to expire), the others counted in "
    "tlsfleet_metrics_series_dropped_total.",
    ("report", "target", "agent", "fingerprint", "subject", "issuer", "serial_no"),
)
PROBE_DURATION = MetricSpec(
    "tlsfleet_probe_duration_seconds",
    "How long the agent took to answer the probe, or to be given up on.",
    ("report", "target", "agent"),
)
PHASE_DURATION = MetricSpec(
    "tlsfleet_probe_phase_duration_seconds",
    "Time of each phase of the agent's probe: resolve (its resolver), connect and handshake (the slowest address).",
    ("report", "target", "agent", "phase"),
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
# What one probe of one target says, labelled as in SPECS without the report.
PROBE_SPECS: tuple[MetricSpec, ...] = (
    PROBE_SUCCESS,
    TLS_VERSION_INFO,
    TLS_CIPHER_INFO,
    EARLIEST_EXPIRY,
    CERT_EXPIRY,
    PROBE_DURATION,
    PHASE_DURATION,
    CERT_NOT_AFTER,
    CERT_DAYS_LEFT,
    VERDICT_OK,
    FINDINGS,
)
SPECS: tuple[MetricSpec, ...] = (
    *PROBE_SPECS,
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

    def __init__(
        self,
        *,
        max_series_per_metric: int = DEFAULT_MAX_SERIES,
        max_certificates_per_agent: int = MAX_CERTIFICATES_PER_AGENT,
    ) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric {max_series_per_metric} is not accepted; 1 or more")
        if max_certificates_per_agent < 1:
            raise ValueError(f"max_certificates_per_agent {max_certificates_per_agent} is not accepted; 1 or more")
        self.max_series_per_metric = max_series_per_metric
        self.max_certificates_per_agent = max_certificates_per_agent
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
        build = Gauge(
            "tlsfleet_build_info",
            "1, labelled with the versions of tlsfleet, Python, OpenSSL and grpcio this service runs.",
            ("version", "python", "openssl", "grpcio"),
            registry=self.registry,
        )
        build.labels(**build_labels()).set(1)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)  # python_info
        self.registry.register(_SnapshotCollector(self))

    def observe_run(self, run: ReportRun, changes: Sequence[Change] = ()) -> None:
        """Replace the report's series with this run's. An abandoned run keeps the previous series of the
        targets it did not reach: they are still configured, just not re-measured."""
        fresh, dropped_certificates = _snapshot(run, changes, self.max_certificates_per_agent)
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
        if dropped_certificates:
            dropped[CERT_EXPIRY.name] = dropped.get(CERT_EXPIRY.name, 0) + dropped_certificates
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


def build_labels() -> dict[str, str]:
    """tlsfleet_build_info's labels: what a person asks first when two coordinators disagree."""
    try:
        grpcio = importlib.metadata.version("grpcio")
    except importlib.metadata.PackageNotFoundError:
        grpcio = "absent"
    return {
        "version": __version__,
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "grpcio": grpcio,
    }


def _snapshot(run: ReportRun, changes: Sequence[Change], max_certificates: int) -> tuple[Snapshot, int]:
    snap: Snapshot = {spec.name: {} for spec in SPECS}
    r = run.report
    at = run.started_at
    dropped = 0
    for target_run in run.targets:
        probe, cut = probe_series(
            target_run.target, target_run.observation, target_run.findings, at, max_certificates=max_certificates
        )
        dropped += cut
        for name, series in probe.items():
            snap[name].update(((r, *labels), value) for labels, value in series.items())
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
    return snap, dropped


def probe_series(
    target: str,
    observation: Observation,
    findings: Sequence[Finding],
    at: datetime,
    *,
    max_certificates: int = MAX_CERTIFICATES_PER_AGENT,
) -> tuple[Snapshot, int]:
    """The PROBE_SPECS series of one probe of `target`, labelled without the report, and how many certificate
    identities were left out by `max_certificates` per agent. `at` is when the probe started (for days left)."""
    snap: Snapshot = {spec.name: {} for spec in PROBE_SPECS}
    t = target
    dropped = 0
    for outcome in observation.outcomes:
        agent = outcome.vantage.name
        snap[PROBE_DURATION.name][(t, agent)] = max(outcome.duration_ms, 0.0) / 1000.0
        snap[PROBE_SUCCESS.name][(t, agent)] = 0.0  # until its rows say otherwise
        if outcome.state is VantageState.OK and outcome.result is not None:
            snap[PHASE_DURATION.name][(t, agent, "resolve")] = outcome.result.resolution.duration_ms / 1000.0
    for agent, rows in observation.rows_by_agent.items():
        handshakes = [r.address.handshake for r in rows if r.connected and not r.handshake_failed]
        # Every address completed its handshake and was accepted: a refused or silent address is a failure.
        success = all(
            r.connected and r.address.handshake.failure is Failure.NONE and r.address.native.verdict is Verdict.OK
            for r in rows
        )
        snap[PROBE_SUCCESS.name][(t, agent)] = 1.0 if success else 0.0
        for handshake in handshakes:
            if handshake.tls_version:
                snap[TLS_VERSION_INFO.name][(t, agent, _bounded(handshake.tls_version))] = 1.0
            if handshake.cipher:
                snap[TLS_CIPHER_INFO.name][(t, agent, _bounded(handshake.cipher))] = 1.0
        connects = [r.address.connect_ms for r in rows if r.address.connect_ms is not None]
        if connects:
            snap[PHASE_DURATION.name][(t, agent, "connect")] = max(connects) / 1000.0
        if handshakes:
            snap[PHASE_DURATION.name][(t, agent, "handshake")] = max(h.duration_ms for h in handshakes) / 1000.0
        # No address answered at all (resolution failed, every connect refused) reads as "no chain".
        seen = [r.address.native.verdict for r in rows]
        worst = next((v for v in seen if v is not Verdict.OK), Verdict.OK)
        snap[VERDICT_OK.name][(t, agent, worst.value)] = 1.0 if worst is Verdict.OK else 0.0
        leaves = [r.leaf for r in rows if r.leaf is not None]
        if leaves:
            when = min(leaf.not_after for leaf in leaves)
            snap[CERT_NOT_AFTER.name][(t, agent)] = when.timestamp()
            snap[CERT_DAYS_LEFT.name][(t, agent)] = (when - at).total_seconds() / 86400.0
        served = {c.sha256: c for r in rows for c in r.certificates()}
        if served:
            snap[EARLIEST_EXPIRY.name][(t, agent)] = min(c.not_after for c in served.values()).timestamp()
        kept = sorted(served.values(), key=lambda c: (c.not_after, c.sha256))
        dropped += max(0, len(kept) - max_certificates)
        for cert in kept[:max_certificates]:
            snap[CERT_EXPIRY.name][(t, agent, *_identity(cert))] = cert.not_after.timestamp()
    for outcome in observation.answered:
        if outcome.vantage.name not in observation.rows_by_agent:
            snap[VERDICT_OK.name][(t, outcome.vantage.name, Verdict.NO_CHAIN.value)] = 0.0
    for finding in findings:
        key = (t, finding.cause.value, str(finding.severity))
        snap[FINDINGS.name][key] = snap[FINDINGS.name].get(key, 0.0) + 1.0
    return snap, dropped


def _identity(cert: CertSummary) -> Labels:
    return (cert.sha256, _bounded(cert.subject), _bounded(cert.issuer), cert.serial[:MAX_LABEL_CHARS])


def _bounded(text: str) -> str:
    text = visible(text)  # an agent's or a certificate's words, read with curl in a terminal too
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 3] + "..."


_MAX_REQUEST_HEAD = 8 * 1024
_READ_TIMEOUT_S = 5.0
_MAX_CONNECTIONS = 16
_MAX_QUERY_FIELDS = 32
# Other paths' pages, when the service serves them (the fleet page): path in, (status, HTML) out.
PageSource = Callable[[str], Awaitable[tuple[int, bytes]]]
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class HttpRequest:
    method: str  # GET or HEAD
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case


@dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: bytes


# Paths answered by the service beside /metrics (/healthz, /probe): the request in, the reply out.
Route = Callable[[HttpRequest], Awaitable[HttpReply]]


async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    pages: PageSource | None = None,
    routes: Mapping[str, Route] | None = None,
) -> tuple[asyncio.Server, int]:
    """Serve `GET /metrics` in the Prometheus text format on host:port (0 picks a free port), the paths of
    `routes` by their handlers, and every other path from `pages` when given.

    Returns the server and the port it is bound to; stop it with `server.close()` then
    `await server.wait_closed()`. At most 16 connections are served at once (others get 503), and a client
    has 5 s to send its request.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port {port} is not accepted; 0 (any free port) to 65535")
    slots = asyncio.Semaphore(_MAX_CONNECTIONS)
    handlers = dict(routes or {})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if slots.locked():
                await _respond(writer, 503, TEXT, b"busy: too many scrapes at once\n")
                return
            async with slots:
                await _serve_one(registry, reader, writer, pages, handlers)
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


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, path, query string and headers of a request head."""
    first, *lines = head.decode("latin-1").split("\r\n")
    method, _, rest = first.partition(" ")
    path, _, query = rest.partition(" ")[0].partition("?")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, path, query, headers


async def _serve_one(
    registry: CollectorRegistry,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    pages: PageSource | None,
    routes: Mapping[str, Route],
) -> None:
    try:
        async with asyncio.timeout(_READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:  # said, rather than a connection closed without a word
        await _respond(writer, 431, TEXT, f"the request head is larger than {_MAX_REQUEST_HEAD // 1024} KiB\n".encode())
        return
    method, path, query, headers = _parse_head(head)
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await _respond(writer, 405, TEXT, b"only GET and HEAD are served\n", allow=True)
        return
    route = routes.get(path)
    if route is not None:
        try:
            fields = parse_qs(query, max_num_fields=_MAX_QUERY_FIELDS)
        except ValueError:
            reply = HttpReply(400, TEXT, f"more than {_MAX_QUERY_FIELDS} query parameters\n".encode())
        else:
            reply = await route(HttpRequest(method, path, fields, headers))
        await _respond(writer, reply.status, reply.content_type, reply.body, head_only=head_only)
        return
    if path != "/metrics" and pages is not None:
        status, page = await pages(path)
        await _respond(writer, status, "text/html; charset=utf-8", page, head_only=head_only)
        return
    if path != "/metrics":
        await _respond(writer, 404, TEXT, b"not found; metrics are at /metrics\n")
        return
    # Rendering thousands of series takes milliseconds: off the event loop that runs the probes.
    body = await asyncio.to_thread(generate_latest, registry)
    await _respond(writer, 200, CONTENT_TYPE_LATEST, body, head_only=head_only)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
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
