"""A TLS server on tlslite-ng (pure-Python TLS) for what this host's OpenSSL will not serve at all: DH groups
below 1024 bits (s_server's "dh key too small", at every security level; OpenSSL cannot even make one below
512) and ciphers its build leaves out (3DES, RC4, MD5 MACs).

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

from tlslite.constants import ExtensionType
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
_FFDHE_GROUPS = range(256, 512)  # RFC 7919's code points for finite-field groups


class PreRFC7919Connection(TLSConnection):
    """A server connection that does not see the FFDHE groups in the client's supported_groups, so DHE
    goes ahead with the server's own group (`HandshakeSettings.dhParams`), as before RFC 7919.

    The handshake transcript is hashed from the bytes received, not from the parsed message, so this
    changes only what the server decides, never what either side signs or hashes."""

    def _getMsg(self, expectedType: Any, secondaryType: Any = None, constructorType: Any = None) -> Iterator[Any]:
        for result in super()._getMsg(expectedType, secondaryType, constructorType):
            if isinstance(result, ClientHello):
                _forget_ffdhe_groups(result)
            yield result


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
                args=(sock, peer, chain, key, settings, slots),
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
) -> None:
    who = f"{peer[0]}:{peer[1]}"
    try:
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        connection = PreRFC7919Connection(sock)
        try:
            connection.handshakeServer(certChain=chain, privateKey=key, settings=settings)
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


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
