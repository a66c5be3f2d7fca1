"""Fleet metrics: observe real report runs, scrape the real /metrics endpoint over HTTP, parse what it says."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import Verdict
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.service.metrics import FleetMetrics, serve_metrics
from tlsfleet.coordinator.service.report_model import AgentSnapshot, Change, ChangeKind, ReportRun, TargetRun

API = "api.example.test:443"
LOGIN = "login.example.test:443"
Sample = dict[tuple[tuple[str, str], ...], float]


def agents(*names: str, down: Sequence[str] = ()) -> tuple[AgentSnapshot, ...]:
    return tuple(
        AgentSnapshot(
            name=n,
            address=f"{n}.test:7443",
            labels=(("env", "prod"),),
            state=VantageState.TIMEOUT if n in down else VantageState.OK,
            clock_offset_ms=None if n in down else 250.0 * (i + 1),
        )
        for i, n in enumerate(names)
    )


def finding(cause: Cause, severity: Severity, *who: str) -> Finding:
    return Finding(cause=cause, severity=severity, summary=f"{cause} seen", agents=who)


def run_of(
    targets: Sequence[TargetRun],
    snapshots: Sequence[AgentSnapshot],
    *,
    report: str = "prod-edge",
    at: datetime,
    abandoned: bool = False,
) -> ReportRun:
    return ReportRun(
        report=report,
        started_at=at,
        finished_at=at + timedelta(seconds=4.5),
        targets=tuple(targets),
        agents=tuple(snapshots),
        abandoned=abandoned,
    )


def scrape(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to the endpoint over a real socket; returns status, headers and body."""

    async def go() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            async with asyncio.timeout(5):
                raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, body

    return asyncio.run(go())


class Endpoint:
    """serve_metrics running on its own loop in a thread, so plain synchronous tests can scrape it."""

    def __init__(self, metrics: FleetMetrics) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(serve_metrics(metrics.registry, "127.0.0.1", 0), self._loop)
        self.server, self.port = future.result(timeout=5)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def families(self) -> dict[str, Sample]:
        status, headers, body = scrape(self.port)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        found: dict[str, Sample] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return found


@pytest.fixture
def metrics() -> FleetMetrics:
    return FleetMetrics()


@pytest.fixture
def endpoint(metrics: FleetMetrics) -> Iterator[Endpoint]:
    served = Endpoint(metrics)
    yield served
    served.close()


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def first_run(pki: LabPKI, at: datetime) -> tuple[ReportRun, datetime, list[Change]]:
    not_after = (at + timedelta(days=12)).replace(microsecond=0)
    leaf = pki.issue_leaf("api.example.test", not_after=not_after)
    chain = (leaf.der, pki.intermediate.der)
    api = TargetRun(
        target=API,
        observation=observe(
            outcome("a1", [address("10.0.0.5", chain), address("10.0.0.6", chain)]),
            outcome("a2", [address("10.0.0.5", chain, native=Verdict.UNKNOWN_ISSUER)]),
            silent("a3"),
            req=request(),
        ),
        findings=(
            finding(Cause.PRIVATE_CA_NOT_TRUSTED, Severity.CRITICAL, "a2"),
            finding(Cause.EXPIRING_SOON, Severity.WARNING, "a1", "a2"),
            finding(Cause.VANTAGE_UNAVAILABLE, Severity.WARNING, "a3"),
        ),
        duration_ms=800,
    )
    login = TargetRun(
        target=LOGIN,
        observation=observe(
            outcome("a1", [address("10.0.1.1", chain)]),
            outcome("a2", [address("10.0.1.1", chain)]),
            req=request("login.example.test"),
        ),
        findings=(),
        duration_ms=300,
    )
    changes = [Change(kind=ChangeKind.FINDING_NEW, summary="new", target=API, cause="private_ca_not_trusted")] * 2
    return run_of([api, login], agents("a1", "a2", "a3", down=("a3",)), at=at), not_after, changes


def test_a_run_is_exposed_on_the_metrics_endpoint(pki: LabPKI, metrics: FleetMetrics, endpoint: Endpoint) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    run, not_after, changes = first_run(pki, at)
    metrics.observe_run(run, changes)
    found = endpoint.families()

    r = "prod-edge"
    expiry = found["tlsfleet_certificate_expiry_timestamp_seconds"]
    assert expiry[labels(report=r, target=API, agent="a1")] == not_after.timestamp()
    assert expiry[labels(report=r, target=LOGIN, agent="a2")] == not_after.timestamp()
    assert len(expiry) == 4  # a3 answered nothing: it has no certificate to report
    days = found["tlsfleet_certificate_expiry_days_left"][labels(report=r, target=API, agent="a1")]
    assert days == pytest.approx(12.0, abs=1e-6)

    verdicts = found["tlsfleet_verdict_ok"]
    assert verdicts[labels(report=r, target=API, agent="a1", verdict="ok")] == 1.0
    assert verdicts[labels(report=r, target=API, agent="a2", verdict="unknown_issuer")] == 0.0
    assert not any(dict(k)["agent"] == "a3" for k in verdicts)
    assert {dict(k)["verdict"] for k in verdicts} <= {v.value for v in Verdict}

    findings = found["tlsfleet_findings"]
    assert findings == {
        labels(report=r, target=API, cause="private_ca_not_trusted", severity="critical"): 1.0,
        labels(report=r, target=API, cause="expiring_soon", severity="warning"): 1.0,
        labels(report=r, target=API, cause="vantage_unavailable", severity="warning"): 1.0,
    }

    assert found["tlsfleet_agent_up"] == {
        labels(report=r, agent="a1"): 1.0,
        labels(report=r, agent="a2"): 1.0,
        labels(report=r, agent="a3"): 0.0,
    }
    assert found["tlsfleet_agent_clock_offset_seconds"] == {
        labels(report=r, agent="a1"): 0.25,
        labels(report=r, agent="a2"): 0.5,
    }
    assert found["tlsfleet_report_run_duration_seconds"] == {labels(report=r): 4.5}
    assert found["tlsfleet_report_run_timestamp_seconds"] == {labels(report=r): run.finished_at.timestamp()}
    assert found["tlsfleet_report_run_abandoned"] == {labels(report=r): 0.0}
    assert found["tlsfleet_report_changes"] == {labels(report=r, kind="finding_new"): 2.0}


def test_targets_and_agents_that_leave_the_report_lose_their_series(
    pki: LabPKI, metrics: FleetMetrics, endpoint: Endpoint
) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    run, _, changes = first_run(pki, at)
    metrics.observe_run(run, changes)
    leaf = pki.issue_leaf("api.example.test")
    api = TargetRun(
        target=API,
        observation=observe(outcome("a1", [address("10.0.0.5", (leaf.der,))]), req=request()),
        findings=(),
        duration_ms=100,
    )
    metrics.observe_run(run_of([api], agents("a1"), at=at + timedelta(minutes=15)), [])
    found = endpoint.families()

    for name in ("tlsfleet_certificate_expiry_timestamp_seconds", "tlsfleet_verdict_ok"):
        assert {dict(k)["target"] for k in found[name]} == {API}, name
        assert {dict(k)["agent"] for k in found[name]} == {"a1"}, name
    assert "tlsfleet_findings" not in found  # the API's findings went away, LOGIN went entirely
    assert set(found["tlsfleet_agent_up"]) == {labels(report="prod-edge", agent="a1")}
    assert "tlsfleet_report_changes" not in found


def test_an_abandoned_run_keeps_the_targets_it_did_not_reach(
    pki: LabPKI, metrics: FleetMetrics, endpoint: Endpoint
) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    run, _, changes = first_run(pki, at)
    metrics.observe_run(run, changes)
    api = TargetRun(
        target=API,
        observation=observe(outcome("a1", [address("10.0.0.5", (pki.issue_leaf("api.example.test").der,))])),
        findings=(),
        duration_ms=100,
    )
    metrics.observe_run(run_of([api], agents("a1", "a2"), at=at + timedelta(minutes=15), abandoned=True))
    found = endpoint.families()
    assert found["tlsfleet_report_run_abandoned"] == {labels(report="prod-edge"): 1.0}
    expiry = found["tlsfleet_certificate_expiry_timestamp_seconds"]
    assert {(dict(k)["target"], dict(k)["agent"]) for k in expiry} == {(API, "a1"), (LOGIN, "a1"), (LOGIN, "a2")}
    assert "tlsfleet_findings" not in found  # API was measured again: its findings are gone


def test_reports_keep_their_own_series(pki: LabPKI, metrics: FleetMetrics) -> None:
    at = datetime.now(UTC)
    run, _, changes = first_run(pki, at)
    metrics.observe_run(run, changes)
    other = TargetRun(target="intranet.corp.test:443", observation=observe(), findings=(), duration_ms=1)
    metrics.observe_run(run_of([other], agents("b1"), report="corp", at=at))
    assert metrics.series_count("tlsfleet_agent_up") == 4
    metrics.observe_run(run_of([other], agents("b1"), report="corp", at=at + timedelta(minutes=1)))
    assert metrics.series_count("tlsfleet_agent_up") == 4
    metrics.forget_report("prod-edge")
    assert metrics.series_count("tlsfleet_agent_up") == 1
    assert metrics.series_count("tlsfleet_verdict_ok") == 0


def test_series_per_metric_are_capped_and_the_drops_counted() -> None:
    metrics = FleetMetrics(max_series_per_metric=3)
    at = datetime.now(UTC)
    names = [f"agent-{n:02d}" for n in range(5)]
    metrics.observe_run(run_of([], agents(*names), at=at))
    assert metrics.series_count("tlsfleet_agent_up") == 3
    metrics.observe_run(run_of([], agents(*names[:2]), report="second", at=at))
    assert metrics.series_count("tlsfleet_agent_up") == 3  # the first report holds all the room
    served = Endpoint(metrics)
    try:
        found = served.families()
    finally:
        served.close()
    assert sorted(dict(k)["agent"] for k in found["tlsfleet_agent_up"]) == names[:3]
    dropped = found["tlsfleet_metrics_series_dropped_total"]
    assert dropped[labels(metric="tlsfleet_agent_up")] == 4.0  # 2 from the first report, 2 from the second
    assert dropped[labels(metric="tlsfleet_agent_clock_offset_seconds")] == 4.0


def test_the_endpoint_answers_only_metrics(metrics: FleetMetrics, endpoint: Endpoint) -> None:
    assert scrape(endpoint.port, "/")[0] == 404
    status, headers, _ = scrape(endpoint.port, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = scrape(endpoint.port, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert scrape(endpoint.port, "/metrics?name[]=x")[0] == 200


def test_a_stopped_endpoint_refuses_connections(metrics: FleetMetrics) -> None:
    served = Endpoint(metrics)
    port = served.port
    served.close()
    with pytest.raises(OSError):
        scrape(port)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_series_per_metric 0 is not accepted"):
        FleetMetrics(max_series_per_metric=0)
    with pytest.raises(ValueError, match="port 70000 is not accepted"):
        asyncio.run(serve_metrics(FleetMetrics().registry, "127.0.0.1", 70000))


def test_a_port_in_use_is_named_in_the_error(metrics: FleetMetrics, endpoint: Endpoint) -> None:
    with pytest.raises(OSError, match=f"metrics endpoint cannot listen on 127.0.0.1:{endpoint.port}"):
        asyncio.run(serve_metrics(metrics.registry, "127.0.0.1", endpoint.port))
