"""A server that runs its own asyncio loop in a daemon thread: started, stopped and waited for from
synchronous code (tests, benchmarks, the demo). Subclasses open their listener and close it again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class BackgroundServer(ABC):
    """`start()` returns once the listener is open (and `port` holds the real port); `stop()` ends the
    loop and joins the thread, and is safe to call twice."""

    kind = "server"  # for messages: "TLS server", "proxy"

    def __init__(self, host: str, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range; accepted: 0-65535 (0 picks a free port)")
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @abstractmethod
    async def _listen(self) -> None:
        """Open the listener and start serving; set `self.port` to the bound port."""

    @abstractmethod
    async def _close(self) -> None:
        """Stop serving and close every connection."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"this {self.kind} is already started")
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-{self.host}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"the {self.kind} on {self.host} did not start within {START_TIMEOUT:g} s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise error
        return self

    def stop(self) -> None:
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended on its own
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"the {self.kind} thread on {self.host}:{self.port} did not stop")
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as error:  # reported to start(); the thread must not die silently
            self._error = error
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        await self._listen()
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await self._close()


def serve_until_signalled(server: BackgroundServer) -> int:
    """For a server run as its own process: announce `LISTENING host port`, serve until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    print(f"LISTENING {server.host} {server.port}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0
