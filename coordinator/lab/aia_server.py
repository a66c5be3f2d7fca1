"""A tiny HTTP/1.1 server for AIA caIssuers URLs: it serves fixed bytes (a CA certificate's DER) at fixed paths,
and, for the agent's limits, paths that misbehave: a redirect (`redirect`) and a body sent a byte at a time
(`trickle`).

Threaded, with a bound on connections served at once (the rest are closed unanswered), a read timeout per
connection, loopback by default, and `stop()` that ends the thread (a trickle stops with it). GET and HEAD
only; anything else 405, unknown paths 404.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["DER_CERT_TYPE", "AiaServer"]

DER_CERT_TYPE = "application/pkix-cert"  # RFC 2585, what CAs serve caIssuers certificates as
MAX_CONNECTIONS = 16
READ_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
MAX_DOCUMENT_BYTES = 1024 * 1024


_Request = socket.socket | tuple[bytes, socket.socket]


@dataclass(frozen=True)
class _Document:
    data: bytes
    content_type: str = DER_CERT_TYPE
    location: str = ""  # a redirect to this URL instead of the data
    status: int = 200
    byte_interval_s: float = 0.0  # > 0: the body goes out one byte per interval


class _Server(ThreadingHTTPServer):
    # server_close() joins every handler thread; each is bounded by the read timeout.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 64  # the listen backlog; a burst beyond it waits a SYN retransmit (a second)

    def __init__(self, address: tuple[str, int], documents: Mapping[str, _Document]) -> None:
        self.documents = dict(documents)
        self.stopping = threading.Event()  # ends a trickle at once
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.requests_served = 0
        self.counter_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def process_request(self, request: _Request, client_address: object) -> None:
        # Beyond the bound a connection is closed at once instead of queueing a thread for it.
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: _Request, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        self._count()
        path = self.path.split("?", 1)[0]
        document = self.server.documents.get(path)
        if document is None:
            self._plain(404, b"not found\n", body)
            return
        self.send_response(document.status)
        if document.location:
            self.send_header("Location", document.location)
        self.send_header("Content-Type", document.content_type)
        self.send_header("Content-Length", str(len(document.data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body and document.byte_interval_s > 0:
            self._trickle(document)
        elif body:
            self.wfile.write(document.data)
        self.close_connection = True

    def _trickle(self, document: _Document) -> None:
        for index in range(len(document.data)):
            try:
                self.wfile.write(document.data[index : index + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            if self.server.stopping.wait(document.byte_interval_s):
                return

    def _refuse(self) -> None:
        self._count()
        self._plain(405, b"method not allowed\n", True)

    def _count(self) -> None:
        with self.server.counter_lock:
            self.server.requests_served += 1

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _plain(self, status: int, text: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(text)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a lab server's requests are counted, not logged."""


class AiaServer:
    """Serves `documents` ({path: DER bytes}) on http://`host`:`port` (0 picks a free port)."""

    def __init__(self, documents: Mapping[str, bytes] | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range; accepted: 0-65535 (0 picks a free port)")
        self.host = host
        self.port = port
        self._documents: dict[str, _Document] = {}
        for path, data in (documents or {}).items():
            self._documents[_check_path(path)] = _Document(_check_size(path, data))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AiaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add(self, path: str, data: bytes, content_type: str = DER_CERT_TYPE) -> str:
        """Serve `data` at `path` from now on; returns its URL (after start) or path."""
        return self._put(path, _Document(_check_size(path, data), content_type))

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer `path` with a redirect to `location` (any URL: another port, another host)."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"status {status} is not a redirect; accepted: 301, 302, 303, 307, 308")
        return self._put(path, _Document(b"", "text/plain", location=location, status=status))

    def trickle(self, path: str, data: bytes, byte_interval_s: float = 1.0) -> str:
        """Serve `data` at `path` with its full Content-Length, but one byte per `byte_interval_s` seconds."""
        if not 0 < byte_interval_s <= 60:
            raise ValueError(f"byte interval {byte_interval_s} s is not accepted; above 0, at most 60")
        return self._put(path, _Document(_check_size(path, data), byte_interval_s=byte_interval_s))

    def _put(self, path: str, document: _Document) -> str:
        """Serve `document` at `path` from now on; returns its URL (after start) or path."""
        path = _check_path(path)
        self._documents[path] = document
        if self._server is not None:
            self._server.documents[path] = document
            return self.url(path)
        return path

    def url(self, path: str) -> str:
        if self._server is None:
            raise RuntimeError("the AIA server is not started, so it has no port yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{_check_path(path)}"

    @property
    def requests_served(self) -> int:
        return self._server.requests_served if self._server is not None else 0

    def start(self) -> AiaServer:
        if self._server is not None:
            raise RuntimeError("this AIA server is already started")
        self._server = _Server((self.host, self.port), self._documents)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="aia-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wait for requests in progress, close the socket. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                raise RuntimeError(f"the AIA server thread on {self.host}:{self.port} did not stop")
        with contextlib.suppress(OSError):
            server.server_close()
        self._server = None
        self._thread = None


def _check_path(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"path {path!r} is not accepted; an absolute URL path without spaces, e.g. /ca.der")
    return path


def _check_size(path: str, data: bytes) -> bytes:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"document for {path} is {len(data)} bytes; at most {MAX_DOCUMENT_BYTES} are accepted")
    return bytes(data)
