"""Webhook delivery: POST each alert to a receiver, retrying what may succeed later, never raising.

HTTP/1.1 over asyncio streams (stdlib only): every attempt has a deadline and is cancelled cleanly when the
service stops, which a blocking client in a worker thread cannot be. Redirects are not followed (a webhook
that moved should be reconfigured, and following a redirect would turn a POST into a GET) and proxy
variables are not consulted.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

from ... import __version__
from ...agent.documents import document
from .alerts import Alert, AlertKind

log = structlog.get_logger("tlsfleet.coordinator")

FORMATS = ("json", "slack")
MAX_RETRIES = 10
MAX_BACKOFF_S = 60.0  # one wait between attempts, Retry-After included
_MAX_RESPONSE_HEAD = 16 * 1024  # status line and headers
_MAX_ERROR_BODY = 512  # what of an error response is kept for the log
_SLACK_TEXT_LIMIT = 600


@dataclass(frozen=True)
class WebhookTarget:
    """A receiver of alerts. `retries` is how many further attempts follow a failed first one."""

    name: str
    url: str = field(repr=False)  # Slack-style URLs carry their secret in the path: never logged
    format: str = "json"
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 1.0
    max_total_s: float = 60.0  # the most one deliver() call spends on this receiver, all alerts included

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"webhook {self.name!r}: url scheme {parts.scheme!r} is not accepted; http or https")
        if not parts.hostname:
            raise ValueError(f"webhook {self.name!r}: url has no host; accepted: http(s)://host[:port]/path")
        try:
            parts.port  # noqa: B018 -- raises on a port that is not a number in range
        except ValueError as error:
            raise ValueError(f"webhook {self.name!r}: url port is not valid ({error}); accepted: 1-65535") from None
        if self.format not in FORMATS:
            raise ValueError(f"webhook {self.name!r}: format {self.format!r} is not accepted; json or slack")
        if not (0 < self.timeout_s <= 60):
            raise ValueError(f"webhook {self.name!r}: timeout {self.timeout_s} s is not accepted; above 0, at most 60")
        if not (0 <= self.retries <= MAX_RETRIES):
            raise ValueError(f"webhook {self.name!r}: retries {self.retries} is not accepted; 0 to {MAX_RETRIES}")
        if not (0 <= self.backoff_s <= MAX_BACKOFF_S):
            raise ValueError(f"webhook {self.name!r}: backoff {self.backoff_s} s is not accepted; 0 to {MAX_BACKOFF_S}")
        if not (0 < self.max_total_s <= 3600):
            raise ValueError(f"webhook {self.name!r}: max_total_s {self.max_total_s} is not accepted; above 0, ≤ 3600")

    @property
    def redacted_url(self) -> str:
        """Scheme, host and port only: safe to log."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based): exponential, capped."""
        return min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


@dataclass(frozen=True)
class AlertDelivery:
    key: str
    delivered: bool
    attempts: int
    status: int | None = None  # the last HTTP status received, None when none was
    error: str = ""  # why the last attempt failed; "" when delivered


@dataclass(frozen=True)
class DeliveryResult:
    webhook: str
    deliveries: tuple[AlertDelivery, ...]

    @property
    def delivered(self) -> tuple[str, ...]:
        """Keys of the alerts the receiver accepted."""
        return tuple(d.key for d in self.deliveries if d.delivered)

    @property
    def failed(self) -> tuple[AlertDelivery, ...]:
        return tuple(d for d in self.deliveries if not d.delivered)

    @property
    def ok(self) -> bool:
        return all(d.delivered for d in self.deliveries)


def alert_json(alert: Alert) -> dict[str, Any]:
    """The JSON body of one alert (`alert`: a finding announced, or its resolution)."""
    return document(
        "alert",
        {
            "key": alert.key,
            "alert": alert.kind.value,
            "severity": str(alert.severity),
            "title": alert.title,
            "text": alert.text,
            "report": alert.report,
            "target": alert.target,
            "agents": list(alert.agents),
            "cause": alert.cause,
            "observed_at": alert.observed_at.isoformat(),
        },
    )


def _slack_escape(text: str) -> str:
    # Slack treats these three as control characters in message text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_json(alert: Alert) -> dict[str, Any]:
    """A Slack-compatible body: one bold status, where, the title; the explanation below, shortened."""
    label = "RESOLVED" if alert.kind is AlertKind.RESOLVED else str(alert.severity).upper()
    where = f"{alert.report} · {alert.target}" if alert.target else alert.report
    text = alert.text if len(alert.text) <= _SLACK_TEXT_LIMIT else alert.text[: _SLACK_TEXT_LIMIT - 1] + "…"
    return {"text": f"*{label}* {_slack_escape(where)}: {_slack_escape(alert.title)}\n{_slack_escape(text)}"}


def body_of(target: WebhookTarget, alert: Alert) -> bytes:
    data = slack_json(alert) if target.format == "slack" else alert_json(alert)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class _Attempt:
    status: int | None
    error: str
    retryable: bool
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def deliver(target: WebhookTarget, alerts: Sequence[Alert]) -> DeliveryResult:
    """POST each alert in order; retry 429, 5xx, timeouts and connection failures with exponential backoff.

    Other statuses are final. Never raises: each alert's outcome is in the result. The whole call takes at
    most `target.max_total_s`; alerts not attempted by then are reported undelivered.
    """
    deadline = time.monotonic() + target.max_total_s
    deliveries: list[AlertDelivery] = []
    for alert in alerts:
        try:
            deliveries.append(await _deliver_one(target, alert, deadline))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must not take the report run down with it
            log.exception("webhook_failed", webhook=target.name, key=alert.key, error=repr(error))
            deliveries.append(AlertDelivery(alert.key, delivered=False, attempts=0, error=f"internal error: {error}"))
    return DeliveryResult(webhook=target.name, deliveries=tuple(deliveries))


async def _deliver_one(target: WebhookTarget, alert: Alert, deadline: float) -> AlertDelivery:
    body = body_of(target, alert)
    attempts = 0
    last = _Attempt(status=None, error="", retryable=True)
    while attempts <= target.retries:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if attempts == 0:
                last = _Attempt(None, f"not attempted: the {target.max_total_s:g} s delivery budget was spent", False)
            break
        attempts += 1
        last = await _post(target, body, min(target.timeout_s, remaining))
        if last.ok:
            log.info(
                "webhook_delivered",
                webhook=target.name,
                key=alert.key,
                kind=alert.kind.value,
                status=last.status,
                attempts=attempts,
            )
            return AlertDelivery(alert.key, delivered=True, attempts=attempts, status=last.status)
        if not last.retryable or attempts > target.retries:
            break
        wait = target.backoff(attempts)
        if last.retry_after_s is not None:
            wait = min(max(wait, last.retry_after_s), MAX_BACKOFF_S)
        if time.monotonic() + wait >= deadline:
            last = _Attempt(last.status, f"{last.error}; no time left to retry within {target.max_total_s:g} s", False)
            break
        log.warning(
            "webhook_retry", webhook=target.name, key=alert.key, attempt=attempts, error=last.error, wait_s=wait
        )
        await asyncio.sleep(wait)
    log.error(
        "webhook_failed",
        webhook=target.name,
        url=target.redacted_url,
        key=alert.key,
        kind=alert.kind.value,
        status=last.status,
        attempts=attempts,
        error=last.error,
    )
    return AlertDelivery(alert.key, delivered=False, attempts=attempts, status=last.status, error=last.error)


async def _post(target: WebhookTarget, body: bytes, timeout_s: float) -> _Attempt:
    parts = urlsplit(target.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    host_header = parts.netloc.rpartition("@")[2]
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        f"User-Agent: tlsfleet/{__version__}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl.create_default_context() if https else None,
                server_hostname=host if https else None,
                limit=_MAX_RESPONSE_HEAD,
            )
            writer.write(head + body)
            await writer.drain()
            return await _read_response(reader)
    except TimeoutError:
        return _Attempt(None, f"no answer within {timeout_s:g} s", retryable=True)
    except ssl.SSLError as error:
        # A certificate the coordinator does not trust will not be trusted on the next attempt either.
        return _Attempt(None, f"TLS to the receiver failed: {error.reason or error}", retryable=False)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        return _Attempt(None, f"{type(error).__name__}: {error}", retryable=True)
    finally:
        if writer is not None:
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass


async def _read_response(reader: asyncio.StreamReader) -> _Attempt:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/") or not status_parts[1].isdigit():
        return _Attempt(None, f"not an HTTP response: {lines[0][:80]!r}", retryable=False)
    status = int(status_parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if 200 <= status < 300:
        return _Attempt(status, "", retryable=False)
    detail = await _error_body(reader, headers)
    error = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429 or 500 <= status <= 599 or status == 408:
        return _Attempt(status, error, retryable=True, retry_after_s=_retry_after(headers.get("retry-after")))
    if 300 <= status < 400:
        error += " (redirects are not followed; configure the final URL)"
    return _Attempt(status, error, retryable=False)


async def _error_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> str:
    """The start of an error response's body, for the log; best effort, short wait."""
    length = headers.get("content-length", "")
    want = min(int(length), _MAX_ERROR_BODY) if length.isdigit() else _MAX_ERROR_BODY
    if want == 0:
        return ""
    try:
        async with asyncio.timeout(1.0):
            data = await reader.read(want)
    except (TimeoutError, OSError):
        return ""
    return " ".join(data.decode("utf-8", "replace").split())[:200]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare from webhook receivers and is ignored."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
