"""Webhook delivery against a real HTTP receiver on loopback: bodies, retries, final errors, deadlines."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog.testing

from tlsfleet.coordinator.diagnosis.model import Severity
from tlsfleet.coordinator.service.alerts import Alert, AlertKind
from tlsfleet.coordinator.service.webhooks import DeliveryResult, WebhookTarget, alert_json, deliver

STALL = -1  # a scripted "status" that never answers


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A threaded HTTP server that answers POSTs with scripted statuses (the last one repeats)."""

    script: list[int | tuple[int, dict[str, str]]]
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/T000/SECRET"

    def next_answer(self) -> tuple[int, dict[str, str]]:
        index = min(len(self.received) - 1, len(self.script) - 1)
        answer = self.script[index]
        return answer if isinstance(answer, tuple) else (answer, {})


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers = receiver.next_answer()
            if status == STALL:
                receiver.release.wait(timeout=10)
                return
            payload = b"ok" if status < 300 else b"invalid_payload: missing text"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[tuple[Receiver, threading.Thread]] = []

    def start(*script: int | tuple[int, dict[str, str]]) -> Receiver:
        receiver = Receiver(list(script))
        receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
        receiver.server.daemon_threads = True
        thread = threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((receiver, thread))
        return receiver

    yield start
    for receiver, thread in started:
        receiver.release.set()
        assert receiver.server is not None
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)


def alert(key: str = "finding:abc", *, kind: AlertKind = AlertKind.FINDING, text: str = "") -> Alert:
    return Alert(
        key=key,
        kind=kind,
        severity=Severity.CRITICAL,
        title="Private CA not trusted on some hosts: api.example.test:443",
        text=text or "The chain leads to 'Corp Root CA', which a1 lacks. Fix: add it to the system store on a1.",
        report="prod-edge",
        target="api.example.test:443",
        agents=("a1", "a2"),
        cause="private_ca_not_trusted",
        observed_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def hook(url: str, **kw: object) -> WebhookTarget:
    options: dict[str, object] = {"timeout_s": 2.0, "retries": 3, "backoff_s": 0.01, **kw}
    return WebhookTarget("oncall", url, **options)  # type: ignore[arg-type]


def run_deliver(target: WebhookTarget, alerts: Sequence[Alert]) -> DeliveryResult:
    return asyncio.run(deliver(target, alerts))


def test_json_body_carries_every_alert_field(receiver_factory) -> None:
    receiver = receiver_factory(200)
    result = run_deliver(hook(receiver.url), [alert()])
    assert result.ok and result.delivered == ("finding:abc",)
    (delivery,) = result.deliveries
    assert (delivery.attempts, delivery.status, delivery.error) == (1, 200, "")
    (got,) = receiver.received
    assert got.path == "/hook/T000/SECRET"
    assert got.headers["content-type"].startswith("application/json")
    assert got.json() == alert_json(alert())
    assert got.json()["severity"] == "critical" and got.json()["agents"] == ["a1", "a2"]
    assert got.json()["observed_at"] == "2025-01-02T03:04:05+00:00"


def test_slack_body_is_one_text_field_with_a_bold_status_and_escaped_text(receiver_factory) -> None:
    receiver = receiver_factory(200)
    alerts = [alert(text="Served <leaf> & friends."), alert("finding:def", kind=AlertKind.RESOLVED)]
    result = run_deliver(hook(receiver.url, format="slack"), alerts)
    assert result.ok
    first, second = (r.json() for r in receiver.received)
    assert list(first) == ["text"]
    assert first["text"].startswith("*CRITICAL* prod-edge · api.example.test:443: Private CA not trusted")
    assert "Served &lt;leaf&gt; &amp; friends." in first["text"]
    assert second["text"].startswith("*RESOLVED* ")


def test_alerts_are_delivered_in_order(receiver_factory) -> None:
    receiver = receiver_factory(204)
    keys = [f"finding:{n}" for n in range(4)]
    result = run_deliver(hook(receiver.url), [alert(k) for k in keys])
    assert result.delivered == tuple(keys)
    assert [r.json()["key"] for r in receiver.received] == keys


def test_503_twice_then_success_is_retried_and_delivered(receiver_factory) -> None:
    receiver = receiver_factory(503, 503, 200)
    result = run_deliver(hook(receiver.url, retries=3), [alert()])
    (delivery,) = result.deliveries
    assert delivery.delivered and delivery.attempts == 3 and delivery.status == 200
    assert len(receiver.received) == 3
    assert receiver.received[0].body == receiver.received[2].body


def test_429_honours_a_short_retry_after(receiver_factory) -> None:
    receiver = receiver_factory((429, {"Retry-After": "0.2"}), 200)
    started = time.monotonic()
    result = run_deliver(hook(receiver.url), [alert()])
    assert result.ok and result.deliveries[0].attempts == 2
    assert time.monotonic() - started >= 0.2


def test_retries_stop_after_the_configured_number(receiver_factory) -> None:
    receiver = receiver_factory(500)
    result = run_deliver(hook(receiver.url, retries=2), [alert()])
    (delivery,) = result.deliveries
    assert not delivery.delivered and delivery.attempts == 3 and delivery.status == 500
    assert "HTTP 500" in delivery.error and "invalid_payload" in delivery.error
    assert len(receiver.received) == 3
    assert result.failed == (delivery,)


def test_400_is_final_and_not_retried(receiver_factory) -> None:
    receiver = receiver_factory(400)
    result = run_deliver(hook(receiver.url, retries=5), [alert(), alert("finding:second")])
    assert [d.attempts for d in result.deliveries] == [1, 1]
    assert not result.ok and result.delivered == ()
    assert result.deliveries[0].status == 400 and "HTTP 400" in result.deliveries[0].error
    assert len(receiver.received) == 2  # one per alert, no retry


def test_redirects_are_final_and_not_followed(receiver_factory) -> None:
    receiver = receiver_factory((302, {"Location": "http://127.0.0.1:1/elsewhere"}))
    (delivery,) = run_deliver(hook(receiver.url), [alert()]).deliveries
    assert not delivery.delivered and delivery.attempts == 1 and "not followed" in delivery.error


@pytest.mark.slow
def test_a_stalled_receiver_times_out_each_attempt(receiver_factory) -> None:
    receiver = receiver_factory(STALL)
    started = time.monotonic()
    result = run_deliver(hook(receiver.url, timeout_s=0.3, retries=1), [alert()])
    elapsed = time.monotonic() - started
    (delivery,) = result.deliveries
    assert not delivery.delivered and delivery.attempts == 2 and delivery.status is None
    assert "no answer within 0.3 s" in delivery.error
    assert 0.6 <= elapsed < 2.0
    assert len(receiver.received) == 2


@pytest.mark.slow
def test_the_whole_delivery_is_bounded_by_its_budget(receiver_factory) -> None:
    receiver = receiver_factory(STALL)
    started = time.monotonic()
    result = run_deliver(
        hook(receiver.url, timeout_s=0.3, retries=10, max_total_s=0.8), [alert(), alert("finding:later")]
    )
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    first, second = result.deliveries
    assert not first.delivered and 1 <= first.attempts <= 3
    assert not second.delivered and second.attempts == 0 and "budget" in second.error


def test_a_closed_port_fails_without_raising() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    result = run_deliver(hook(f"http://127.0.0.1:{port}/hook", retries=1), [alert()])
    (delivery,) = result.deliveries
    assert not delivery.delivered and delivery.attempts == 2 and "ConnectionRefused" in delivery.error


@pytest.mark.parametrize(
    ("url", "kw", "message"),
    [
        ("ftp://127.0.0.1/hook", {}, "scheme 'ftp' is not accepted"),
        ("http:///hook", {}, "has no host"),
        ("http://127.0.0.1:99999/hook", {}, "port is not valid"),
        ("http://127.0.0.1/hook", {"format": "xml"}, "format 'xml' is not accepted"),
        ("http://127.0.0.1/hook", {"retries": 11}, "retries 11 is not accepted"),
        ("http://127.0.0.1/hook", {"timeout_s": 0}, "timeout 0 s is not accepted"),
    ],
)
def test_bad_targets_are_refused_with_what_is_accepted(url: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookTarget("oncall", url, **kw)  # type: ignore[arg-type]


def test_the_secret_path_of_a_url_stays_out_of_repr() -> None:
    target = WebhookTarget("oncall", "https://hooks.example.test/services/T000/B000/XXXXSECRET")
    assert "XXXXSECRET" not in repr(target)
    assert target.redacted_url == "https://hooks.example.test/…"


def test_outcomes_are_logged_as_webhook_events_without_the_secret(receiver_factory) -> None:
    ok = receiver_factory(200)
    bad = receiver_factory(400)
    with structlog.testing.capture_logs() as events:
        run_deliver(hook(ok.url), [alert()])
        run_deliver(hook(bad.url), [alert()])
    names = [e["event"] for e in events]
    assert names == ["webhook_delivered", "webhook_failed"]
    assert events[1]["status"] == 400 and events[1]["webhook"] == "oncall"
    assert "SECRET" not in repr(events)
