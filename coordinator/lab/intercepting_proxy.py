"""A TLS-intercepting middlebox for the lab: it answers for any name with a certificate it mints itself.

It reads the SNI of each ClientHello, issues (once per name, cached) a leaf for that name signed by its
own "Corp Proxy CA", and completes the handshake with it; an HTTP request that follows gets a short
``200 ok``. Nothing is relayed upstream: what a probe learns from a middlebox is its chain, and the
chain is the proxy's, not the server's. A ClientHello without SNI gets a leaf for `fallback_name`.

With `connect=True` it is an explicit HTTPS proxy instead (an egress proxy applications reach through
HTTPS_PROXY): each connection starts with a plaintext ``CONNECT host:port HTTP/1.1``, answered with
`connect_status` (200 opens the tunnel, anything else ends the connection), and then intercepts the TLS
inside the tunnel as above. With `credentials` ("user:password") it wants them as Basic
Proxy-Authorization and answers 407 without them. `connects` keeps the authorities asked for (the
latest `MAX_CACHED_NAMES`).

In-process (a thread with its own event loop, like `TlsServer`) or as a process, e.g. inside a network
namespace::

    python -m tlsfleet.coordinator.lab.intercepting_proxy --issuer-cert ca.pem --issuer-key ca.key \\
        --listen 127.0.0.1:0

prints ``LISTENING <host> <port>`` once ready and exits cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .background_server import START_TIMEOUT, STOP_TIMEOUT, BackgroundServer, serve_until_signalled
from .pki import Issued, LabPKI, write_pem

__all__ = ["InterceptingProxy", "ProxyAuthority", "ProxyProcess", "main", "mint_leaf", "start_proxy_process"]

HANDSHAKE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 2.0
MAX_CACHED_NAMES = 1024
MAX_NAME = 253
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
MAX_CONNECT_REQUEST = 16 * 1024
_REASONS = {200: "Connection established", 403: "Forbidden", 407: "Proxy Authentication Required"}
_LEAF_LIFETIME = timedelta(days=180)  # well clear of any expiry warning
_BACKDATE = timedelta(hours=1)


@dataclass(frozen=True)
class ProxyAuthority:
    """The CA a middlebox signs with, the chain it sends after each leaf, and the root clients must trust."""

    issuer: Issued
    chain: tuple[x509.Certificate, ...]
    root: x509.Certificate

    @classmethod
    def create(cls, name: str = "Corp Proxy") -> ProxyAuthority:
        """A root "<name> Root CA" and under it the signing CA "<name> CA"."""
        pki = LabPKI(name)
        issuer = pki.issue_intermediate(f"{name} CA")
        return cls(issuer=issuer, chain=(issuer.cert,), root=pki.root.cert)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


def mint_leaf(name: str, issuer: Issued) -> Issued:
    """A server certificate for `name` (DNS name or IP literal) signed by `issuer`, as a middlebox makes one."""
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"name {name!r} is not accepted; 1-{MAX_NAME} characters")
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        san = x509.DNSName(name)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _context_for(leaf: Issued, chain: Sequence[x509.Certificate]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.num_tickets = 0
    with tempfile.TemporaryDirectory(prefix="tlsfleet-proxy-") as directory:
        cert_path = Path(directory, "chain.pem")
        cert_path.write_bytes(leaf.cert_pem + _pem(chain))
        key_path = write_pem(Path(directory, "key.pem"), leaf.key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class InterceptingProxy(BackgroundServer):
    """Accepts TLS on `host`:`port` (0 picks a free port) and answers every name with a minted leaf."""

    kind = "proxy"

    def __init__(
        self,
        authority: ProxyAuthority,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fallback_name: str = "corp-proxy.invalid",
        connect: bool = False,
        connect_status: int = 200,
        credentials: str | None = None,
    ) -> None:
        super().__init__(host, port)
        self.authority = authority
        self.fallback_name = fallback_name
        self.connect = connect
        self.connect_status = connect_status
        self._expected_authorization = (
            "Basic " + base64.b64encode(credentials.encode()).decode("ascii") if credentials is not None else None
        )
        self.connects: deque[str] = deque(maxlen=MAX_CACHED_NAMES)
        self.minted: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self.handshakes = 0
        self._base = self._context(fallback_name)
        self._base.sni_callback = self._select
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _context(self, name: str) -> ssl.SSLContext:
        key = name.rstrip(".").lower()
        context = self.minted.get(key)
        if context is None:
            context = _context_for(mint_leaf(key, self.authority.issuer), self.authority.chain)
            self.minted[key] = context
            if len(self.minted) > MAX_CACHED_NAMES:
                self.minted.popitem(last=False)
        else:
            self.minted.move_to_end(key)
        return context

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if server_name:
            try:
                sslobj.context = self._context(server_name)
            except ValueError:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    async def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, self.port), family=family, backlog=256)
        self.port = listener.getsockname()[1]
        if self.connect:  # plaintext CONNECT first; TLS starts inside the tunnel
            self._server = await asyncio.start_server(self._handle, sock=listener)
            return
        self._server = await asyncio.start_server(
            self._handle, sock=listener, ssl=self._base, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT / 2):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.connect and not await self._tunnel(reader, writer):
                return
            self.handshakes += 1
            request = b""
            async with asyncio.timeout(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in request and len(request) < 16 * 1024:
                    chunk = await reader.read(16 * 1024)
                    if not chunk:
                        return
                    request += chunk
            writer.write(HTTP_RESPONSE)
            await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError):
            pass  # a probe closes right after the handshake; that is the normal case
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read the CONNECT request and answer it; True when the tunnel opened and TLS runs inside it."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_CONNECT_REQUEST:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        authority = rest.partition(" ")[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        status = self.connect_status
        if method != "CONNECT" or not authority:
            status = 405
        elif self._expected_authorization is not None and headers.get("proxy-authorization") != (
            self._expected_authorization
        ):
            status = 407
        self.connects.append(authority)
        writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Refused')}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        if not 200 <= status < 300:
            return False
        plain = writer.transport
        await writer.start_tls(self._base, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        if writer.transport is None:
            # The client left during the TLS handshake: CPython 3.11's start_tls leaves the writer without a
            # transport, whose __del__ then raises; it gets the plain one back, already closed.
            writer._transport = plain
            return False
        return True


@dataclass
class ProxyProcess:
    """An intercepting proxy running as its own process (for instance inside a network namespace)."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        return self.process.returncode


def start_proxy_process(
    authority: ProxyAuthority,
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    wrapper: Sequence[str] = (),
) -> ProxyProcess:
    """Start the proxy as a process (`wrapper` e.g. `ip netns exec NAME`) and wait until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    serial = f"{os.getpid()}-{time.monotonic_ns()}"
    issuer_cert = write_pem(workdir / f"proxy-issuer-{serial}.pem", authority.issuer.cert_pem)
    issuer_key = write_pem(workdir / f"proxy-issuer-{serial}.key", authority.issuer.key_pem)
    chain = write_pem(workdir / f"proxy-chain-{serial}.pem", _pem(authority.chain))
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    command = [
        *wrapper,
        sys.executable,
        "-m",
        "tlsfleet.coordinator.lab.intercepting_proxy",
        "--issuer-cert",
        str(issuer_cert),
        "--issuer-key",
        str(issuer_key),
        "--chain",
        str(chain),
        "--listen",
        listen,
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(process, START_TIMEOUT)
        parts = line.split()
        if len(parts) != 3 or parts[0] != "LISTENING":
            raise RuntimeError(f"the proxy did not start: {line or _tail(process)}")
        return ProxyProcess(process, parts[1], int(parts[2]))
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        issuer_key.unlink(missing_ok=True)  # read at start-up; a signing key does not stay on disk


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline and b"\n" not in buffer:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
        elif process.poll() is not None:
            break
    return buffer.split(b"\n", 1)[0].decode(errors="replace").strip()


def _tail(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.kill()
    _out, err = process.communicate(timeout=STOP_TIMEOUT)
    return err.decode(errors="replace").strip()[-500:] or f"exit code {process.returncode}"


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {text!r} is not HOST:PORT; accepted e.g. 127.0.0.1:0 or [::1]:8443")
    return host, int(port_text)


def _load_authority(issuer_cert: Path, issuer_key: Path, chain: Path | None) -> ProxyAuthority:
    cert = x509.load_pem_x509_certificate(issuer_cert.read_bytes())
    key = serialization.load_pem_private_key(issuer_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{issuer_key} is not an ECDSA private key")
    extra = tuple(x509.load_pem_x509_certificates(chain.read_bytes())) if chain is not None else ()
    # The root is not needed to mint; a process only signs and sends.
    return ProxyAuthority(issuer=Issued(cert, key), chain=extra, root=cert)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A TLS-intercepting proxy for the tlsfleet lab.")
    parser.add_argument("--issuer-cert", type=Path, required=True, help="PEM: the CA certificate that signs leaves")
    parser.add_argument("--issuer-key", type=Path, required=True, help="PEM: its private key (ECDSA)")
    parser.add_argument("--chain", type=Path, help="PEM: certificates sent after each leaf (default: none)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0, a free port)")
    parser.add_argument("--fallback-name", default="corp-proxy.invalid", help="name minted when no SNI is sent")
    parser.add_argument("--connect", action="store_true", help="be an explicit HTTPS proxy: CONNECT, then TLS")
    args = parser.parse_args(argv)
    try:
        host, port = _parse_listen(args.listen)
        authority = _load_authority(args.issuer_cert, args.issuer_key, args.chain)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    try:
        proxy = InterceptingProxy(
            authority, host=host, port=port, fallback_name=args.fallback_name, connect=args.connect
        ).start()
    except (OSError, ssl.SSLError, ValueError) as error:
        print(f"intercepting_proxy: cannot serve on {args.listen}: {error}", file=sys.stderr)
        return 1
    return serve_until_signalled(proxy)


if __name__ == "__main__":
    sys.exit(main())
