"""Webhook bodies and one delivery attempt: POST one alert to a receiver with a deadline, never raising.

The client is httpx, opened once per delivery worker (`open_client`): it honours HTTPS_PROXY, HTTP_PROXY,
NO_PROXY and SSL_CERT_FILE as the host's other clients do. Redirects are not followed (a webhook that moved
should be reconfigured, and following one would turn a POST into a GET). Retrying is the delivery worker's
business (delivery.py): an attempt only says whether a later one may succeed. httpx is imported here only
inside functions, so that nothing but the coordinator's delivery path loads it.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ... import __version__
from ...agent.documents import document
from .alerts import Alert, AlertKind

if TYPE_CHECKING:
    import httpx

FORMATS = ("json", "slack")
_MAX_ERROR_BODY = 512  # what of an error response is kept for the log
_SLACK_TEXT_LIMIT = 600
_RETRYABLE_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class WebhookTarget:
    """A receiver of alerts."""

    name: str
    url: str = field(repr=False)  # Slack-style URLs carry their secret in the path: never logged
    format: str = "json"
    timeout_s: float = 5.0  # one attempt, connection to the end of the answer

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

    @property
    def redacted_url(self) -> str:
        """Scheme, host and port only: safe to log."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


@dataclass(frozen=True)
class Attempt:
    """What one POST came to. `retryable`: a later attempt may succeed (timeouts, refused, 408, 429, 5xx)."""

    status: int | None  # None when no HTTP answer came
    error: str  # "" when delivered
    retryable: bool
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


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


def open_client(max_connections: int) -> httpx.AsyncClient:
    """The client every attempt of a worker shares: pooled connections, at most `max_connections`."""
    import httpx

    return httpx.AsyncClient(
        trust_env=True,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers={"User-Agent": f"tlsfleet/{__version__}"},
    )


async def post_alert(client: httpx.AsyncClient, target: WebhookTarget, alert: Alert) -> Attempt:
    """One POST of the alert's body, within `target.timeout_s` from connecting to the end of the answer."""
    import httpx

    body = body_of(target, alert)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    try:
        async with asyncio.timeout(target.timeout_s):
            async with client.stream(
                "POST", target.url, content=body, headers=headers, timeout=target.timeout_s
            ) as response:
                if response.is_success:
                    return Attempt(response.status_code, "", retryable=False)
                return await _failed(response)
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(None, f"no answer within {target.timeout_s:g} s", retryable=True)
    except httpx.HTTPError as error:
        tls = _tls_error(error)
        if tls is not None:
            # A certificate the coordinator does not trust will not be trusted on the next attempt either.
            return Attempt(None, f"TLS to the receiver failed: {tls}", retryable=False)
        return Attempt(None, f"{type(error).__name__}: {_reason(error)}", retryable=True)


async def _failed(response: httpx.Response) -> Attempt:
    status = response.status_code
    detail = await _error_body(response)
    error = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in _RETRYABLE_STATUSES or 500 <= status <= 599:
        return Attempt(status, error, retryable=True, retry_after_s=_retry_after(response.headers.get("retry-after")))
    if 300 <= status < 400:
        error += " (redirects are not followed; configure the final URL)"
    return Attempt(status, error, retryable=False)


async def _error_body(response: httpx.Response) -> str:
    """The start of an error response's body, for the log; never more than _MAX_ERROR_BODY bytes read."""
    import httpx

    data = b""
    try:
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) >= _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return " ".join(data[:_MAX_ERROR_BODY].decode("utf-8", "replace").split())[:200]


def _tls_error(error: BaseException) -> str | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(error: BaseException) -> str:
    """The innermost cause's words: httpx wraps the OS error that says what happened."""
    inner: BaseException = error
    while (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    if isinstance(inner, OSError) and inner is not error:
        return f"{type(inner).__name__}: {inner}"
    return str(error) or type(error).__name__


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare from webhook receivers and is ignored."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
