"""Real TLS servers for tests and benchmarks: SNI-selected identities, ALPN, version bounds, bad behaviours.

`TlsServer` runs an asyncio accept loop in a daemon thread with its own event loop, and drives each
server-side handshake through `ssl.MemoryBIO`, so every accepted socket is tracked from the moment it is
accepted and `stop()` closes all of them. Modes:

- ``tls``: a real handshake; an HTTP request that follows gets a short ``200 ok``, then the server closes.
- ``stall``: accepts and reads, never answers (handshake timeouts).
- ``garbage``: answers the ClientHello with bytes that are not TLS (protocol errors).
- ``close``: reads the ClientHello, then closes (peer closed mid-handshake).

Run as a process for benchmarks::

    python -m tlsfleet.coordinator.lab.tls_server --cert-chain chain.pem --key key.pem --listen 127.0.0.1:0
    python -m tlsfleet.coordinator.lab.tls_server --issue localhost --write-root root.pem --listen 127.0.0.1:8443

prints ``LISTENING <host> <port>`` once ready and exits cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from .background_server import BackgroundServer, serve_until_signalled

if TYPE_CHECKING:
    from .pki import Issued

__all__ = ["GARBAGE", "Mode", "ServedIdentity", "TlsServer", "main"]

Mode = Literal["tls", "stall", "garbage", "close"]
GARBAGE = b"SSH-2.0-OpenSSH_9.6 this is not TLS\r\n" + bytes(range(256)) * 4
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
HANDSHAKE_TIMEOUT = 10.0  # server side: a client that never finishes is dropped
REQUEST_TIMEOUT = 2.0  # after the handshake: how long to wait for an HTTP request
IDLE_TIMEOUT = 30.0  # garbage mode: how long to hold a connection after answering
MAX_REQUEST = 16 * 1024
_READ = 64 * 1024


@dataclass(frozen=True)
class ServedIdentity:
    """What the server presents: the chain (leaf first, PEM) and the leaf's private key (PEM)."""

    cert_chain_pem: bytes
    key_pem: bytes

    @classmethod
    def of(cls, leaf: Issued, *chain: Issued) -> ServedIdentity:
        """The leaf followed by `chain` (intermediates, optionally a root), in that order."""
        return cls(b"".join(c.cert_pem for c in (leaf, *chain)), leaf.key_pem)


class TlsServer(BackgroundServer):
    """A TLS server on `host`:`port` (0 picks a free port; `port` holds the real one after `start()`)."""

    kind = "TLS server"

    def __init__(
        self,
        default: ServedIdentity | None,
        *,
        by_sni: Mapping[str, ServedIdentity] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
        alpn: Sequence[str] = (),
        mode: Mode = "tls",
    ) -> None:
        if mode not in get_args(Mode):
            raise ValueError(f"mode {mode!r} is not known; accepted: {', '.join(get_args(Mode))}")
        by_sni = dict(by_sni or {})
        if mode == "tls" and default is None and not by_sni:
            raise ValueError("a TLS server needs a default identity or at least one by_sni identity")
        super().__init__(host, port)
        self.mode: Mode = mode
        self.accepted = 0  # connections accepted so far
        options = (min_version, max_version, tuple(alpn))
        self._by_sni = {_sni_key(name): _server_context(ident, *options) for name, ident in by_sni.items()}
        self._base = _server_context(default, *options)
        self._has_default = default is not None
        self._base.sni_callback = self._select_identity
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._open: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def open_connections(self) -> int:
        """Accepted connections not yet closed."""
        return len(self._open)

    async def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self.port), family=family, backlog=1024)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._accepting = asyncio.get_running_loop().create_task(self._accept(self._listener))

    async def _close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A handler cancelled before it first ran never closed its socket.
        for conn in list(self._open):
            conn.close()
        self._open.clear()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _peer = await loop.sock_accept(listener)
            except OSError:
                # EMFILE and friends under benchmark load: back off instead of spinning.
                await asyncio.sleep(0.05)
                continue
            self.accepted += 1
            self._open.add(conn)
            task = loop.create_task(self._handle(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=_READ)
            try:
                if self.mode == "tls":
                    await self._serve_tls(reader, writer)
                elif self.mode == "stall":
                    await _drain_until_eof(reader, None)
                elif self.mode == "garbage":
                    await reader.read(_READ)
                    writer.write(GARBAGE)
                    await writer.drain()
                    await _drain_until_eof(reader, IDLE_TIMEOUT)
                else:
                    await reader.read(_READ)
                await _close(writer)
            finally:
                writer.transport.abort()
        except (OSError, TimeoutError):
            pass  # the client went away; nothing to report for a lab server
        finally:
            self._open.discard(conn)
            conn.close()

    async def _serve_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = self._base.wrap_bio(incoming, outgoing, server_side=True)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                while True:
                    try:
                        sslobj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        pass
                    if not await _exchange(reader, writer, incoming, outgoing):
                        return
            _send(writer, outgoing)
            request = b""
            async with asyncio.timeout(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                    try:
                        chunk = sslobj.read(_READ)
                    except ssl.SSLWantReadError:
                        if not await _exchange(reader, writer, incoming, outgoing):
                            return
                        continue
                    if not chunk:
                        return
                    request += chunk
            sslobj.write(HTTP_RESPONSE)
            with contextlib.suppress(ssl.SSLError):
                sslobj.unwrap()
            _send(writer, outgoing)
            await writer.drain()
        except ssl.SSLError:
            # The alert OpenSSL queued (unknown CA, protocol version, ...) is the client's answer.
            _send(writer, outgoing)
            with contextlib.suppress(OSError):
                await writer.drain()

    def _select_identity(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if server_name:
            chosen = self._by_sni.get(_sni_key(server_name))
            if chosen is not None:
                sslobj.context = chosen
                return None
        if not self._has_default:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None


def _sni_key(name: str) -> str:
    return name.rstrip(".").encode("idna").decode("ascii").lower()


def _server_context(
    identity: ServedIdentity | None,
    min_version: ssl.TLSVersion | None,
    max_version: ssl.TLSVersion | None,
    alpn: tuple[str, ...],
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # No tickets: probes close right after the handshake, and nothing in the lab resumes.
    context.num_tickets = 0
    if min_version is not None:
        context.minimum_version = min_version
    if max_version is not None:
        context.maximum_version = max_version
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if identity is not None:
        _load_identity(context, identity)
    return context


def _load_identity(context: ssl.SSLContext, identity: ServedIdentity) -> None:
    # load_cert_chain reads files only; the key file exists for the duration of the call, mode 0600.
    with tempfile.TemporaryDirectory(prefix="tlsfleet-lab-") as directory:
        chain = Path(directory, "chain.pem")
        chain.write_bytes(identity.cert_chain_pem)
        key = Path(directory, "key.pem")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(identity.key_pem)
        context.load_cert_chain(chain, key)


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
) -> bool:
    """Send what OpenSSL queued, feed what the peer sent; False when the peer closed."""
    _send(writer, outgoing)
    await writer.drain()
    data = await reader.read(_READ)
    if not data:
        return False
    incoming.write(data)
    return True


def _send(writer: asyncio.StreamWriter, outgoing: ssl.MemoryBIO) -> None:
    if outgoing.pending and not writer.is_closing():
        writer.write(outgoing.read())


async def _close(writer: asyncio.StreamWriter) -> None:
    """An orderly close (FIN after the queued bytes) when the peer allows it within a second."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def _drain_until_eof(reader: asyncio.StreamReader, timeout: float | None) -> None:
    async with asyncio.timeout(timeout):
        while await reader.read(_READ):
            pass


_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {text!r} is not HOST:PORT; accepted e.g. 127.0.0.1:0 or [::1]:8443")
    return host, int(port_text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve TLS with a given chain, for tlsfleet tests and benchmarks.")
    parser.add_argument("--cert-chain", type=Path, help="PEM file: the leaf first, then intermediates")
    parser.add_argument("--key", type=Path, help="PEM file: the leaf's private key")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0, a free port)")
    parser.add_argument("--mode", choices=get_args(Mode), default="tls")
    parser.add_argument("--alpn", action="append", default=[], help="an ALPN protocol to accept (repeatable)")
    parser.add_argument("--min-version", choices=sorted(_VERSIONS))
    parser.add_argument("--max-version", choices=sorted(_VERSIONS))
    parser.add_argument(
        "--issue", metavar="NAME", help="serve a throwaway private-CA chain for NAME instead of --cert-chain/--key"
    )
    parser.add_argument("--write-root", type=Path, metavar="FILE", help="with --issue: write that CA's root (PEM) here")
    args = parser.parse_args(argv)
    try:
        host, port = _parse_listen(args.listen)
    except ValueError as error:
        parser.error(str(error))
    identity = None
    if args.issue:
        from .pki import LabPKI, write_pem

        if args.cert_chain or args.key:
            parser.error("--issue replaces --cert-chain and --key; give one or the other")
        pki = LabPKI("Try")
        identity = ServedIdentity.of(pki.issue_leaf(args.issue), pki.intermediate)
        if args.write_root:
            write_pem(args.write_root, pki.root_pem())
    elif args.cert_chain or args.key:
        if not (args.cert_chain and args.key):
            parser.error("--cert-chain and --key go together")
        try:
            identity = ServedIdentity(args.cert_chain.read_bytes(), args.key.read_bytes())
        except OSError as error:
            parser.error(f"cannot read {error.filename}: {error.strerror}")
    elif args.mode == "tls":
        parser.error("mode tls needs --cert-chain and --key, or --issue NAME")
    try:
        server = TlsServer(
            identity,
            host=host,
            port=port,
            alpn=args.alpn,
            mode=args.mode,
            min_version=_VERSIONS.get(args.min_version or ""),
            max_version=_VERSIONS.get(args.max_version or ""),
        ).start()
    except (OSError, ssl.SSLError, ValueError) as error:
        print(f"tls_server: cannot serve on {args.listen}: {error}", file=sys.stderr)
        return 1
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
