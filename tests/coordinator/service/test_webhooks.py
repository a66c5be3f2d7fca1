"""One webhook attempt against a real HTTP receiver on loopback: bodies, what may be retried, final errors,
deadlines, proxies."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tlsfleet.coordinator.diagnosis.model import Severity
from tlsfleet.coordinator.service.alerts import Alert, AlertKind
from tlsfleet.coordinator.service.webhooks import Attempt, WebhookTarget, alert_json, open_client, post_alert

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
                receiver.release.wait(timeout=60)
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


@contextmanager
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start receivers (`start(*script, port=0)`); every one is stopped when the block ends."""
    started: list[tuple[Receiver, threading.Thread]] = []

    def start(*script: int | tuple[int, dict[str, str]], port: int = 0) -> Receiver:
        receiver = Receiver(list(script))
        receiver.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
        receiver.server.daemon_threads = True
        thread = threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((receiver, thread))
        return receiver

    try:
        yield start
    finally:
        for receiver, thread in started:
            receiver.release.set()
            assert receiver.server is not None
            receiver.server.shutdown()
            receiver.server.server_close()
            thread.join(timeout=5)


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    with receivers() as start:
        yield start


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


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
    options: dict[str, object] = {"timeout_s": 2.0, **kw}
    return WebhookTarget("oncall", url, **options)  # type: ignore[arg-type]


def post(target: WebhookTarget, *alerts: Alert) -> list[Attempt]:
    async def go() -> list[Attempt]:
        async with open_client(4) as client:
            return [await post_alert(client, target, a) for a in alerts]

    return asyncio.run(go())


def test_json_body_carries_every_alert_field(receiver_factory) -> None:
    receiver = receiver_factory(200)
    (attempt,) = post(hook(receiver.url), alert())
    assert attempt.ok and (attempt.status, attempt.error) == (200, "")
    (got,) = receiver.received
    assert got.path == "/hook/T000/SECRET"
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["user-agent"].startswith("tlsfleet/")
    assert got.json() == alert_json(alert())
    assert got.json()["severity"] == "critical" and got.json()["agents"] == ["a1", "a2"]
    assert got.json()["observed_at"] == "2025-01-02T03:04:05+00:00"


def test_slack_body_is_one_text_field_with_a_bold_status_and_escaped_text(receiver_factory) -> None:
    receiver = receiver_factory(200)
    attempts = post(
        hook(receiver.url, format="slack"), alert(text="Served <leaf> & friends."), alert("k2", kind=AlertKind.RESOLVED)
    )
    assert all(a.ok for a in attempts)
    first, second = (r.json() for r in receiver.received)
    assert list(first) == ["text"]
    assert first["text"].startswith("*CRITICAL* prod-edge · api.example.test:443: Private CA not trusted")
    assert "Served &lt;leaf&gt; &amp; friends." in first["text"]
    assert second["text"].startswith("*RESOLVED* ")


@pytest.mark.parametrize("status", [500, 503, 408])
def test_5xx_and_408_may_be_retried_and_say_what_the_receiver_said(receiver_factory, status: int) -> None:
    receiver = receiver_factory(status)
    (attempt,) = post(hook(receiver.url), alert())
    assert not attempt.ok and attempt.retryable and attempt.status == status
    assert f"HTTP {status}" in attempt.error and "invalid_payload" in attempt.error


def test_429_carries_its_retry_after(receiver_factory) -> None:
    receiver = receiver_factory((429, {"Retry-After": "7"}))
    (attempt,) = post(hook(receiver.url), alert())
    assert attempt.retryable and attempt.retry_after_s == 7.0


def test_400_is_final(receiver_factory) -> None:
    receiver = receiver_factory(400)
    (attempt,) = post(hook(receiver.url), alert())
    assert not attempt.ok and not attempt.retryable and attempt.status == 400 and "HTTP 400" in attempt.error


def test_redirects_are_final_and_not_followed(receiver_factory) -> None:
    receiver = receiver_factory((302, {"Location": "http://127.0.0.1:1/elsewhere"}))
    (attempt,) = post(hook(receiver.url), alert())
    assert not attempt.ok and not attempt.retryable and "not followed" in attempt.error
    assert len(receiver.received) == 1


def test_a_stalled_receiver_costs_one_timeout(receiver_factory) -> None:
    receiver = receiver_factory(STALL)
    started = time.monotonic()
    (attempt,) = post(hook(receiver.url, timeout_s=0.3), alert())
    elapsed = time.monotonic() - started
    assert attempt.retryable and attempt.status is None and "no answer within 0.3 s" in attempt.error
    assert 0.3 <= elapsed < 1.5


def test_a_closed_port_fails_without_raising() -> None:
    (attempt,) = post(hook(f"http://127.0.0.1:{closed_port()}/hook"), alert())
    assert attempt.retryable and attempt.status is None and "refused" in attempt.error.lower()


def test_the_proxy_variables_are_honoured(receiver_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY sends the POST through the proxy (here the receiver itself, which sees the absolute URL);
    NO_PROXY exempts a host."""
    proxy = receiver_factory(200)
    assert proxy.server is not None
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    unreachable = f"http://127.0.0.1:{closed_port()}/via-proxy"
    (attempt,) = post(hook(unreachable), alert())
    assert attempt.ok
    (got,) = proxy.received
    assert got.path == unreachable
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    (direct,) = post(hook(unreachable), alert())
    assert not direct.ok and "refused" in direct.error.lower()


@pytest.mark.parametrize(
    ("url", "kw", "message"),
    [
        ("ftp://127.0.0.1/hook", {}, "scheme 'ftp' is not accepted"),
        ("http:///hook", {}, "has no host"),
        ("http://127.0.0.1:99999/hook", {}, "port is not valid"),
        ("http://127.0.0.1/hook", {"format": "xml"}, "format 'xml' is not accepted"),
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
