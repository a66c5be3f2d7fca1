"""The delivery worker against real HTTP receivers on loopback that are down, slow, failing and recovering;
runs that keep their pace whatever the receiver does; every announcement once, across a restart."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog.testing

from tests.coordinator.service.history.backends import HistoryDatabase
from tests.coordinator.service.history.test_sqlite_store import make_run
from tests.coordinator.service.test_webhooks import STALL, Receiver, alert, closed_port, receivers
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.service.alerts import alert_to_payload
from tlsfleet.coordinator.service.config import ServiceConfig, load_config
from tlsfleet.coordinator.service.delivery import Backoff, DeliveryWorker, Outcome
from tlsfleet.coordinator.service.history.store import HistoryStore, Queued
from tlsfleet.coordinator.service.metrics import FleetMetrics
from tlsfleet.coordinator.service.pipeline import Pipeline
from tlsfleet.coordinator.service.webhooks import WebhookTarget

FAST = Backoff(first_s=0.05, cap_s=0.2)


@pytest.fixture
def start() -> Iterator:
    with receivers() as starting:
        yield starting


def queue(history: HistoryStore, *keys: str, webhooks: tuple[str, ...] = ("oncall",)) -> None:
    items = [Queued(k, "finding", False, alert_to_payload(alert(k)), webhooks) for k in keys]
    history.enqueue(items, datetime.now(UTC))


def worker(history: HistoryStore, url: str, **kw) -> DeliveryWorker:
    target = WebhookTarget("oncall", url, timeout_s=kw.pop("timeout_s", 1.0))
    options = {"backoff": FAST, "poll_s": 0.05, "rng": random.Random(1), **kw}
    return DeliveryWorker(history, {"oncall": target}, **options)


def one_pass(w: DeliveryWorker) -> list[Outcome]:
    """One pass of the worker in a loop of its own, its client closed after."""

    async def go() -> list[Outcome]:
        try:
            return await w.deliver_due()
        finally:
            await w.aclose()

    return asyncio.run(go())


async def until_delivered(w: DeliveryWorker, history: HistoryStore, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while history.outbox_counts():
        assert time.monotonic() < deadline, history.outbox_pending()
        await w.deliver_due()
        await asyncio.sleep(0.05)


def test_a_receiver_that_is_down_keeps_the_row_and_backs_off(history_db: HistoryDatabase) -> None:
    metrics = FleetMetrics()
    with history_db.open() as history:  # type: ignore[attr-defined]
        queue(history, "k1")
        w = worker(history, f"http://127.0.0.1:{closed_port()}/hook", metrics=metrics, backoff=Backoff(5, 600))
        with structlog.testing.capture_logs() as events:
            (outcome,) = one_pass(w)
            assert one_pass(w) == []  # not due again before its backoff
        assert outcome.result == "failed" and "refused" in outcome.error.lower()
        (row,) = history.outbox_pending()
        assert row.attempts == 1 and "refused" in row.last_error.lower()
        assert timedelta(seconds=2.4) <= row.next_attempt_at - datetime.now(UTC) <= timedelta(seconds=5)
        (event,) = [e for e in events if e["event"] == "webhook_failed"]
        assert event["webhook"] == "oncall" and event["status"] is None and event["attempt"] == 1
        assert "SECRET" not in repr(events)
        assert (
            metrics.registry.get_sample_value(
                "tlsfleet_webhook_delivery_attempts_total", {"webhook": "oncall", "result": "failed"}
            )
            == 1
        )
        assert metrics.registry.get_sample_value("tlsfleet_webhook_outbox_pending", {"webhook": "oncall"}) == 1


def test_500_is_retried_until_it_is_delivered_once(history_db: HistoryDatabase, start) -> None:
    receiver: Receiver = start(500, 500, 200)
    with history_db.open() as history:  # type: ignore[attr-defined]
        queue(history, "k1")
        w = worker(history, receiver.url)

        async def go() -> None:
            with structlog.testing.capture_logs() as events:
                await until_delivered(w, history)
            statuses = [(e["event"], e["status"]) for e in events if e["event"].startswith("webhook_")]
            assert statuses == [("webhook_failed", 500), ("webhook_failed", 500), ("webhook_delivered", 200)]
            await w.aclose()

        asyncio.run(go())
        assert [r.json()["key"] for r in receiver.received] == ["k1"] * 3
        ((delivered, attempts, status),) = history_db.query("SELECT delivered, attempts, last_status FROM outbox")
        assert (bool(delivered), attempts, status) == (True, 3, 200)


def test_a_final_status_or_too_old_a_row_is_given_up_and_logged(history_db: HistoryDatabase, start) -> None:
    refusing = start(400)
    with history_db.open() as history:  # type: ignore[attr-defined]
        queue(history, "k1")
        with structlog.testing.capture_logs() as events:
            (outcome,) = one_pass(worker(history, refusing.url))
        assert outcome.result == "given_up" and outcome.status == 400
        assert [e["event"] for e in events if e["event"].startswith("webhook_")] == ["webhook_given_up"]
        assert history.outbox_counts() == {}
        queue(history, "k2")
        down = worker(history, f"http://127.0.0.1:{closed_port()}/hook", max_age=timedelta(milliseconds=1))
        (outcome,) = one_pass(down)
        assert outcome.result == "given_up" and "older than" in outcome.error
        assert history.outbox_counts() == {}


def test_a_failure_defers_the_webhooks_later_rows_to_keep_their_order(history_db: HistoryDatabase, start) -> None:
    receiver = start(503, 200)
    with history_db.open() as history:  # type: ignore[attr-defined]
        queue(history, "k1", "k2", "k3")
        w = worker(history, receiver.url)

        async def go() -> None:
            first = await w.deliver_due()
            assert [(o.key, o.result) for o in first] == [("k1", "failed"), ("k2", "deferred"), ("k3", "deferred")]
            await until_delivered(w, history)
            await w.aclose()

        asyncio.run(go())
        assert [r.json()["key"] for r in receiver.received] == ["k1", "k1", "k2", "k3"]


@pytest.mark.slow
def test_a_30_second_slow_receiver_costs_one_timeout_per_attempt(history_db: HistoryDatabase, start) -> None:
    slow = start(STALL)  # holds each request up to 60 s
    with history_db.open() as history:  # type: ignore[attr-defined]
        queue(history, "k1")
        started = time.monotonic()
        (outcome,) = one_pass(worker(history, slow.url, timeout_s=0.5))
        assert time.monotonic() - started < 2.0
        assert outcome.result == "failed" and "no answer within 0.5 s" in outcome.error


def service_config(tmp_path: Path, history_db: HistoryDatabase, url: str) -> ServiceConfig:
    (tmp_path / "inventory.toml").write_text("")
    path = tmp_path / "coordinator.toml"
    path.write_text(
        f"""
[coordinator]
inventory = "inventory.toml"
reports_dir = "reports"

{history_db.storage_toml()}
[[report]]
name = "prod-edge"
targets = ["svc0.example.test:443"]
interval = "1m"
notify_min_severity = "warning"
webhooks = ["oncall"]

[[webhook]]
name = "oncall"
url = "{url}"
timeout = "0.5s"
"""
    )
    return load_config(path)


def expiring_run(pki: LabPKI, n: int):
    leaf = pki.issue_leaf("svc0.example.test", not_after=datetime.now(UTC) + timedelta(days=3 + n))
    return make_run(pki, datetime.now(UTC) - timedelta(minutes=10 - n), leaf=leaf, hosts=1)


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["down", STALL, 500])
def test_runs_keep_their_pace_and_every_alert_arrives_once_after_a_restart(
    tmp_path: Path, history_db: HistoryDatabase, pki: LabPKI, start, answer: object
) -> None:
    """Three runs back to back while the receiver is down, stalls or fails: each takes what it takes
    without a receiver. Then a new service on the same history, with the receiver back, sends each once."""
    port = closed_port()
    failing = None if answer == "down" else start(answer, port=port)
    url = f"http://127.0.0.1:{port}/hook/T000/SECRET"
    config = service_config(tmp_path, history_db, url)
    report = config.reports[0]

    async def first_service() -> tuple[list[float], int]:
        with history_db.open() as history:  # type: ignore[attr-defined]
            pipeline = Pipeline(config, history)
            stop = asyncio.Event()
            delivering = asyncio.create_task(pipeline.delivery.run(stop))
            durations, queued = [], 0
            for n in range(3):
                started = time.monotonic()
                done = await pipeline.complete(report, expiring_run(pki, n))
                durations.append(time.monotonic() - started)
                queued += done.queued
                await asyncio.sleep(0.6)  # the worker meanwhile tries the receiver
            delivering.cancel()  # a stop in mid-attempt: rows go back to the outbox
            await asyncio.gather(delivering, return_exceptions=True)
            await pipeline.close()
            return durations, queued

    durations, queued = asyncio.run(first_service())
    assert queued >= 3
    assert max(durations) < 0.45, durations  # under one webhook timeout: no run waited for the receiver
    if failing is not None:
        assert failing.received, "the worker tried the receiver meanwhile"
        failing.release.set()
        assert failing.server is not None
        failing.server.shutdown()
        failing.server.server_close()
    receiver = start(200, port=port)

    async def second_service() -> None:
        with history_db.open() as history:  # type: ignore[attr-defined]
            pipeline = Pipeline(config, history)
            pending = history.outbox_counts()
            assert pending == {"oncall": queued}
            await until_delivered(pipeline.delivery, history, limit_s=20)
            await pipeline.delivery.aclose()
            await pipeline.close()

    asyncio.run(second_service())
    keys = [r.json()["key"] for r in receiver.received]
    assert len(keys) == len(set(keys)) == queued


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command",
    [["-m", "tlsfleet.coordinator.cli", "--help"], ["-c", "import tlsfleet.coordinator.service.pipeline"]],
    ids=["help", "pipeline"],
)
def test_httpx_loads_only_when_something_is_delivered(tmp_path: Path, command: list[str]) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "tlsfleet" in loaded  # the list is real
    assert [name for name in loaded if name == "httpx" or name.startswith("httpx.")] == []


@pytest.mark.e2e
def test_report_run_delivers_once_and_leaves_failures_queued(tmp_path: Path, start) -> None:
    import subprocess
    import sys

    receiver = start(503, 200)
    config = tmp_path / "coordinator.toml"
    config.write_text(
        '[storage]\npath = "history.sqlite"\n'
        f'[[report]]\nname = "edge"\ntargets = ["127.0.0.1:{closed_port()}"]\ninterval = "1h"\n'
        'include_local = true\nnotify_min_severity = "warning"\nwebhooks = ["oncall"]\n'
        f'[[webhook]]\nname = "oncall"\nurl = "{receiver.url}"\ntimeout = "2s"\n'
    )
    command = [sys.executable, "-m", "tlsfleet.coordinator.cli", "report", "run", "edge", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "delivering 1 queued alerts once (at most 16 s" in done.stderr, done.stderr
    assert "webhooks: 0 delivered, 0 given up, 1 left queued for the service to retry" in done.stdout, done.stdout
    assert len(receiver.received) == 1
    with HistoryDatabase("sqlite", str(tmp_path / "history.sqlite")).open() as history:  # type: ignore[attr-defined]
        (row,) = history.outbox_pending()
        assert row.attempts == 1 and row.last_error.startswith("HTTP 503")
