"""The service's HTTP routes beside /metrics, on the real endpoint over real sockets: /healthz in both states
(a history that answers, one that fails, one that hangs, and a service shutting down), /probe when it is off,
and requests the router refuses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tlsfleet.coordinator.service.history.sqlite_store import SqliteHistory
from tlsfleet.coordinator.service.http_routes import HEALTH_TIMEOUT_S, ServiceHealth
from tlsfleet.coordinator.service.metrics import FleetMetrics, HttpReply, HttpRequest, Route, serve_metrics
from tlsfleet.coordinator.service.probe_endpoint import probe_disabled

Reply = tuple[int, dict[str, str], bytes]


class Served:
    """serve_metrics with `routes` on a loop of its own in a thread; `make_routes` runs on that loop."""

    def __init__(self, make_routes: Callable[[], dict[str, Route]]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def start() -> tuple[asyncio.Server, int]:
            return await serve_metrics(FleetMetrics().registry, "127.0.0.1", 0, routes=make_routes())

        self.server, self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=5)

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        return asyncio.run_coroutine_threadsafe(request(self.port, path, headers, timeout), self.loop).result(
            timeout + 5
        )

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


async def request(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
    """One GET over a real socket: status, headers (lower-case names) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


@pytest.fixture
def history(tmp_path: Path) -> Iterator[SqliteHistory]:
    store = SqliteHistory(tmp_path / "history.sqlite")
    yield store
    store.close()


@contextmanager
def serve(routes: Callable[[], dict[str, Route]]) -> Iterator[Served]:
    served = Served(routes)
    try:
        yield served
    finally:
        served.close()


def test_healthz_is_ok_while_the_history_answers(history: SqliteHistory) -> None:
    with serve(lambda: {"/healthz": ServiceHealth(history).answer}) as served:
        status, headers, body = served.get("/healthz")
        assert (status, body) == (200, b"ok\n")
        assert headers["content-type"].startswith("text/plain")


def test_healthz_is_503_with_the_reason_when_the_history_fails(tmp_path: Path) -> None:
    broken = SqliteHistory(tmp_path / "history.sqlite")
    broken.close()  # every read now fails
    with serve(lambda: {"/healthz": ServiceHealth(broken).answer}) as served:
        status, _, body = served.get("/healthz")
        assert status == 503
        assert body.startswith(b"the history cannot be read: ") and body.count(b"\n") == 1


class HangingHistory:
    """A history whose reads block until released: a database that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads = 0

    def list_runs(self, report: str | None = None, limit: int = 50) -> list[object]:
        self.reads += 1
        self.release.wait(30)
        return []


@pytest.mark.slow  # waits out the health check's deadline, twice
def test_healthz_is_503_when_the_history_hangs_and_waits_on_one_read_at_a_time() -> None:
    hanging = HangingHistory()
    health = ServiceHealth(hanging)  # type: ignore[arg-type]
    try:
        with serve(lambda: {"/healthz": health.answer}) as served:
            for _ in range(2):
                status, _, body = served.get("/healthz", timeout=HEALTH_TIMEOUT_S + 5)
                assert status == 503
                assert body == f"the history did not answer a read within {HEALTH_TIMEOUT_S:g} s\n".encode()
            assert hanging.reads == 1  # the second check waited on the first read, no new thread
            hanging.release.set()
            status, _, _ = served.get("/healthz")
            assert status == 200
    finally:
        hanging.release.set()


def test_healthz_is_503_while_the_service_stops(history: SqliteHistory) -> None:
    stopping = threading.Event()
    with serve(lambda: {"/healthz": ServiceHealth(history, stopping=stopping.is_set).answer}) as served:
        assert served.get("/healthz")[0] == 200
        stopping.set()
        status, _, body = served.get("/healthz")
        assert status == 503 and body.startswith(b"stopping:")


def test_probe_when_off_is_404_saying_how_to_turn_it_on_and_why_it_is_off() -> None:
    with serve(lambda: {"/probe": probe_disabled}) as served:
        status, _, body = served.get("/probe?target=example.com:443")
        assert status == 404
        assert b"[probe_endpoint]" in body and b"no authentication" in body


def test_routes_see_the_query_and_the_headers_and_too_many_parameters_are_refused() -> None:
    seen: list[HttpRequest] = []

    async def echo(req: HttpRequest) -> HttpReply:
        seen.append(req)
        return HttpReply(200, "text/plain; charset=utf-8", b"seen\n")

    routes: dict[str, Route] = {"/echo": echo}
    with serve(lambda: routes) as served:
        status, _, _ = served.get(
            "/echo?target=a%3A443&agents=env%3Dprod", {"X-Prometheus-Scrape-Timeout-Seconds": "9"}
        )
        assert status == 200
        [req] = seen
        assert req.query == {"target": ["a:443"], "agents": ["env=prod"]}
        assert req.headers["x-prometheus-scrape-timeout-seconds"] == "9"
        status, _, body = served.get("/echo?" + "&".join(f"p{n}=1" for n in range(40)))
        assert status == 400 and b"more than 32 query parameters" in body
        assert len(seen) == 1
        assert served.get("/metrics")[0] == 200  # the metrics themselves stay where they were


@pytest.mark.parametrize("where", ["path", "headers"])
def test_a_request_head_over_the_cap_is_answered_431_not_dropped(where: str) -> None:
    with serve(lambda: {}) as served:
        if where == "path":
            status, _, body = served.get("/targets/" + "a" * 10_000)
        else:
            status, _, body = served.get("/metrics", {f"X-Big-{n}": "a" * 100 for n in range(100)})
        assert status == 431 and body == b"the request head is larger than 8 KiB\n"
        assert served.get("/metrics")[0] == 200
