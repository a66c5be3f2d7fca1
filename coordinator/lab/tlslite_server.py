"""A TLS server on tlslite-ng (pure-Python TLS) for what this host's OpenSSL will not serve at all: DH groups
below 1024 bits (s_server's "dh key too small", at every security level; OpenSSL cannot even make one below
512), ciphers its build leaves out (3DES, RC4, MD5 MACs), an ALPN protocol selected whatever the client
offered (`--alpn P --alpn-regardless`, as a listener forced to one protocol answers), and the answers of
servers that break off: a fatal alert instead of a ServerHello (`--alert-on-hello NAME`), or to a client that
sends no SNI (`--sni-required NAME`), the ServerHello and then a close (`--close-after-server-hello`), plain
HTTP on the port (`--plain-http`).

It serves one chain with exactly the parameters it is given, and nothing else::

    python -m tlsfleet.coordinator.lab.tlslite_server --cert leaf.pem --chain untrusted.pem --key leaf.key \\
        --cipher 3des --mac sha --key-exchange rsa --max-version 1.2

prints ``ACCEPT 127.0.0.1:<port>`` once listening (as `openssl s_server` does, so the corpus reads either
the same way), one line per connection, and exits on SIGTERM or SIGINT. Each connection gets a thread of
its own, at most `--max-connections` at once; the accept loop waits while that many are open.

The server behaves as the servers that still serve such things do: they predate RFC 7919 and never read
the FFDHE groups in the client's supported_groups. tlslite does read them, and would otherwise refuse DHE
outright to a client that lists them (OpenSSL 3 does), so a weak `--dhparam` group would never reach it,
and would answer a client with no cipher in common with insufficient_security instead of
handshake_failure."""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from tlslite.constants import AlertDescription, ExtensionType
from tlslite.dh import parse as parse_dh_params
from tlslite.handshakesettings import HandshakeSettings
from tlslite.messages import ClientHello
from tlslite.tlsconnection import TLSConnection
from tlslite.utils.keyfactory import parsePEMKey
from tlslite.x509certchain import X509CertChain

__all__ = ["VERSIONS", "PreRFC7919Connection", "main", "settings_from"]

VERSIONS = {"1.0": (3, 1), "1.1": (3, 2), "1.2": (3, 3), "1.3": (3, 4)}
VERSION_NAMES = {v: k for k, v in VERSIONS.items()}
HANDSHAKE_TIMEOUT_S = 10.0
_RECORD_HEADER = 5
_MAX_RECORD = 5 + 2**14 + 256  # a TLS record's header and its longest body
_PLAIN_HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_FFDHE_GROUPS = range(256, 512)  # RFC 7919's code points for finite-field groups


class PreRFC7919Connection(TLSConnection):
    """A server connection that does not see the FFDHE groups in the client's supported_groups, so DHE
    goes ahead with the server's own group (`HandshakeSettings.dhParams`), as before RFC 7919.

    The handshake transcript is hashed from the bytes received, not from the parsed message, so this
    changes only what the server decides, never what either side signs or hashes."""

    # With `--alpn-regardless`: the protocol this server picks whatever the client offered in ALPN.
    alpn_regardless: bytearray | None = None
    # With `--sni-required`: the alert this server answers a ClientHello without SNI with.
    sni_required: int | None = None
    # Without `--alpn`: the server reads no ALPN offer, as one with no protocols configured (tlslite's TLS 1.3
    # server would otherwise fail on an offer it has nothing to match against).
    ignores_alpn = False

    def _getMsg(self, expectedType: Any, secondaryType: Any = None, constructorType: Any = None) -> Iterator[Any]:
        for result in super()._getMsg(expectedType, secondaryType, constructorType):
            if isinstance(result, ClientHello):
                if self.sni_required is not None and result.getExtension(ExtensionType.server_name) is None:
                    yield from self._sendError(self.sni_required, "the client sent no SNI")
                _forget_ffdhe_groups(result)
                if self.ignores_alpn and result.extensions:
                    result.extensions = [e for e in result.extensions if e.extType != ExtensionType.alpn]
                if self.alpn_regardless is not None:
                    _offer_alpn(result, self.alpn_regardless)
            yield result


def _offer_alpn(hello: ClientHello, protocol: bytearray) -> None:
    """Make the server read `protocol` as the client's only ALPN offer, so it selects it whatever was offered
    (a server bug that clients must refuse: RFC 7301 section 3.2)."""
    offer = hello.getExtension(ExtensionType.alpn)
    if offer is not None:
        offer.protocol_names = [protocol]


def _forget_ffdhe_groups(hello: ClientHello) -> None:
    groups = hello.getExtension(ExtensionType.supported_groups)
    if groups is None or not groups.groups:
        return
    kept = [g for g in groups.groups if g not in _FFDHE_GROUPS]
    # A client that lists FFDHE groups alone keeps them: an empty list is malformed, and without the
    # extension tlslite refuses a client that also offers TLS 1.3. RFC 7919 then applies to it.
    if kept:
        groups.groups = kept


def settings_from(args: argparse.Namespace) -> HandshakeSettings:
    settings = HandshakeSettings()
    settings.cipherNames = list(args.cipher)
    settings.macNames = list(args.mac)
    settings.keyExchangeNames = list(args.key_exchange)
    settings.minVersion = VERSIONS[args.min_version]
    settings.maxVersion = VERSIONS[args.max_version]
    settings.versions = [
        v for v in sorted(VERSIONS.values(), reverse=True) if settings.minVersion <= v <= settings.maxVersion
    ]
    if args.dhparam is not None:
        settings.dhParams = parse_dh_params(Path(args.dhparam).read_text())
        settings.dhGroups = []  # never an RFC 7919 group instead of the given one
    # Fail now, with tlslite's reason, rather than on the first connection.
    return settings.validate()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlslite_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accept", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free one)")
    parser.add_argument("--cert", required=True, type=Path, help="the leaf certificate (PEM)")
    parser.add_argument("--chain", type=Path, help="the certificates sent after the leaf, in order (PEM)")
    parser.add_argument("--key", required=True, type=Path, help="the leaf's private key (PEM; RSA or ECDSA)")
    parser.add_argument("--cipher", action="append", required=True, help="a tlslite cipher name: 3des, rc4, ...")
    parser.add_argument("--mac", action="append", required=True, help="a tlslite MAC name: sha, md5, aead, ...")
    parser.add_argument("--key-exchange", action="append", required=True, help="rsa, dhe_rsa, ecdhe_rsa, ...")
    parser.add_argument("--min-version", choices=VERSIONS, default="1.0")
    parser.add_argument("--max-version", choices=VERSIONS, default="1.2")
    parser.add_argument("--dhparam", type=Path, help="the DH group for DHE (PKCS#3 PEM, as openssl dhparam writes)")
    parser.add_argument("--alpn", action="append", default=[], help="an ALPN protocol the server speaks (repeatable)")
    parser.add_argument(
        "--alpn-regardless",
        action="store_true",
        help="select the first --alpn protocol whatever the client offered (a client that offers ALPN at all)",
    )
    alerts = sorted(n for n, v in vars(AlertDescription).items() if isinstance(v, int) and not n.startswith("_"))
    parser.add_argument(
        "--alert-on-hello", choices=alerts, help="answer the ClientHello with this fatal alert, and nothing else"
    )
    parser.add_argument(
        "--sni-required", choices=alerts, help="answer a ClientHello without SNI with this fatal alert (as CDNs do)"
    )
    parser.add_argument(
        "--close-after-server-hello", action="store_true", help="send the ServerHello record alone, then close"
    )
    parser.add_argument("--plain-http", action="store_true", help="speak HTTP, not TLS: a 400 answer, then close")
    parser.add_argument("--max-connections", type=int, default=32, help="connections served at once")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_from(args)
    pem = args.cert.read_text() + (args.chain.read_text() if args.chain else "")
    chain = X509CertChain()
    chain.parsePemList(pem)
    key = parsePEMKey(args.key.read_text(), private=True)
    host, _, port = args.accept.rpartition(":")
    listener = socket.create_server((host.strip("[]"), int(port)), backlog=128)
    slots = threading.BoundedSemaphore(args.max_connections)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"ACCEPT {bound_host}:{bound_port}", flush=True)
    try:
        while True:
            slots.acquire()
            try:
                sock, peer = listener.accept()
            except BaseException:
                slots.release()
                raise
            worker = threading.Thread(
                target=_serve_one,
                args=(sock, peer, chain, key, settings, slots, args),
                name=f"tls-{peer[1]}",
                daemon=True,  # an exit does not wait for a client that hangs
            )
            worker.start()
    finally:
        listener.close()
        print("STOPPED", flush=True)


def _serve_one(
    sock: socket.socket,
    peer: tuple[Any, ...],
    chain: X509CertChain,
    key: Any,
    settings: HandshakeSettings,
    slots: threading.BoundedSemaphore,
    args: argparse.Namespace,
) -> None:
    who = f"{peer[0]}:{peer[1]}"
    alpn = [bytearray(p.encode()) for p in args.alpn] or None
    try:
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        if args.plain_http or args.alert_on_hello:
            _answer_without_tls(sock, args)
            _say(f"{who} answered without TLS")
            return
        wire: socket.socket | _FirstRecordOnly = _FirstRecordOnly(sock) if args.close_after_server_hello else sock
        connection = PreRFC7919Connection(wire)
        connection.ignores_alpn = alpn is None
        if args.alpn_regardless and alpn:
            connection.alpn_regardless = alpn[0]
        if args.sni_required:
            connection.sni_required = getattr(AlertDescription, args.sni_required)
        try:
            connection.handshakeServer(certChain=chain, privateKey=key, settings=settings, alpn=alpn)
        except Exception as error:  # the client refused, or the server found nothing in common
            _say(f"{who} handshake failed: {type(error).__name__}: {error}")
            return
        version = VERSION_NAMES.get(connection.version, str(connection.version))
        _say(f"{who} TLS {version} {connection.getCipherName()} {connection.getCipherImplementation()}")
        # Like s_server: read whatever the client sends until it closes (or stays silent too long).
        with contextlib.suppress(Exception):
            while connection.read():
                pass
        with contextlib.suppress(Exception):
            connection.close()
    finally:
        sock.close()
        slots.release()


def _answer_without_tls(sock: socket.socket, args: argparse.Namespace) -> None:
    """Read the client's first record (its ClientHello), then answer it with a bare fatal alert or in plain HTTP."""
    with contextlib.suppress(OSError):
        sock.recv(_MAX_RECORD)
        if args.plain_http:
            sock.sendall(_PLAIN_HTTP_ANSWER)
        else:
            # Record layer TLS 1.2 (what a TLS 1.3 server uses too before its ServerHello): level fatal, then the code.
            sock.sendall(bytes([21, 3, 3, 0, 2, 2, getattr(AlertDescription, args.alert_on_hello)]))


class _FirstRecordOnly:
    """A socket that sends the server's first record (its ServerHello) and then closes the connection, however
    much more the TLS layer hands it: a server that breaks off right after choosing."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = b""

    def send(self, data: bytes) -> int:
        self._pending += bytes(data)
        if len(self._pending) < _RECORD_HEADER:
            return len(data)
        size = _RECORD_HEADER + int.from_bytes(self._pending[3:5], "big")
        if len(self._pending) >= size:
            self._sock.sendall(self._pending[:size])
            self._sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionAbortedError("closed after the ServerHello, as told")
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
