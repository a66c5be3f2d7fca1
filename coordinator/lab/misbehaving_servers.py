"""TLS servers on 127.0.0.1 that misbehave on purpose, as TLS test suites' servers do: each reads the client's
first flight and answers it with crafted records (a fatal alert of a chosen kind, a warning then a close, an
SSLv2 or SSLv3 reply, a ServerHello choosing what the client never offered, a HelloRetryRequest twice, a
record of an unknown type or impossible length, a FIN, a RST, a byte a second...).

    with MisbehavingServer(BEHAVIOURS["alert:protocol_version"]) as server:
        ... connect to server.port ...

Every connection gets a thread of its own; `stop()` closes the listener and every accepted socket. Nothing
here speaks TLS past the first server flight: what a client makes of that flight is the point.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "ALERTS",
    "BEHAVIOURS",
    "ClientHello",
    "MisbehavingServer",
    "alert",
    "certificate_message",
    "hello_retry_request",
    "record",
    "server_hello",
]

HANDSHAKE = 22
ALERT = 21
FATAL, WARNING = 2, 1
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
ALERTS = {
    "unexpected_message": 10,
    "handshake_failure": 40,
    "bad_certificate": 42,
    "certificate_unknown": 46,
    "illegal_parameter": 47,
    "unknown_ca": 48,
    "access_denied": 49,
    "decode_error": 50,
    "decrypt_error": 51,
    "protocol_version": 70,
    "insufficient_security": 71,
    "internal_error": 80,
    "inappropriate_fallback": 86,
    "user_canceled": 90,
    "unrecognized_name": 112,
    "certificate_required": 116,
    "no_application_protocol": 120,
}
_X25519, _SECP256R1, _SECP384R1 = 0x001D, 0x0017, 0x0018
_EXT_SUPPORTED_VERSIONS, _EXT_KEY_SHARE, _EXT_RENEGOTIATION_INFO = 43, 51, 0xFF01
_ACCEPT_POLL_S = 0.2
_LINGER_AFTER_S = 0.3  # how long an answer stays up before the close, so the client reads it first


@dataclass(frozen=True)
class ClientHello:
    """The few ClientHello fields a crafted answer echoes or avoids."""

    session_id: bytes
    key_share_groups: tuple[int, ...]
    ciphers: tuple[int, ...]


def record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def alert(description: int, level: int = FATAL) -> bytes:
    return record(ALERT, bytes((level, description)))


def _extension(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def _handshake_message(kind: int, body: bytes) -> bytes:
    return bytes((kind,)) + len(body).to_bytes(3, "big") + body


def server_hello(
    hello: ClientHello,
    *,
    version: int = 0x0303,
    cipher: int = 0xC02F,
    compression: int = 0,
    extensions: bytes | None = None,
    random: bytes | None = None,
) -> bytes:
    """One ServerHello record; by default TLS 1.2, ECDHE-RSA-AES128-GCM-SHA256, with renegotiation_info (so
    that what fails is what the caller changed, not RFC 5746)."""
    if extensions is None:
        extensions = _extension(_EXT_RENEGOTIATION_INFO, b"\x00")
    body = (
        struct.pack("!H", version)
        + (random if random is not None else os.urandom(32))
        + bytes((len(hello.session_id),))
        + hello.session_id
        + struct.pack("!HB", cipher, compression)
        + struct.pack("!H", len(extensions))
        + extensions
    )
    return record(HANDSHAKE, _handshake_message(2, body))


def hello_retry_request(hello: ClientHello, group: int, cipher: int = 0x1301) -> bytes:
    """A TLS 1.3 HelloRetryRequest asking for a key share in `group`."""
    extensions = _extension(_EXT_SUPPORTED_VERSIONS, b"\x03\x04") + _extension(_EXT_KEY_SHARE, struct.pack("!H", group))
    return server_hello(hello, cipher=cipher, extensions=extensions, random=HRR_RANDOM)


def _tls13_server_hello(hello: ClientHello, group: int, key: bytes, cipher: int = 0x1301) -> bytes:
    share = struct.pack("!HH", group, len(key)) + key
    extensions = _extension(_EXT_SUPPORTED_VERSIONS, b"\x03\x04") + _extension(_EXT_KEY_SHARE, share)
    return server_hello(hello, cipher=cipher, extensions=extensions)


def parse_client_hello(data: bytes) -> ClientHello:
    """The ClientHello's session id, offered key shares and cipher suites; empty fields when unreadable."""
    try:
        at = 5 + 4 + 2 + 32  # record header, handshake header, legacy_version, random
        session_id = data[at + 1 : at + 1 + data[at]]
        at += 1 + data[at]
        length = int.from_bytes(data[at : at + 2], "big")
        ciphers = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(at + 2, at + 2 + length, 2))
        at += 2 + length
        at += 1 + data[at]  # compression methods
        end = at + 2 + int.from_bytes(data[at : at + 2], "big")
        at += 2
        groups: list[int] = []
        while at + 4 <= end:
            kind, size = struct.unpack("!HH", data[at : at + 4])
            if kind == _EXT_KEY_SHARE:
                shares = data[at + 6 : at + 4 + size]
                i = 0
                while i + 4 <= len(shares):
                    group, key_length = struct.unpack("!HH", shares[i : i + 4])
                    groups.append(group)
                    i += 4 + key_length
            at += 4 + size
        return ClientHello(bytes(session_id), tuple(groups), ciphers)
    except (IndexError, struct.error):
        return ClientHello(b"", (), ())


def _read_flight(conn: socket.socket) -> bytes:
    """One TLS record (the ClientHello, in practice), or what arrived before the peer stopped."""
    data = b""
    while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# A behaviour: what the server does with the connection once the ClientHello is in.
Behaviour = Callable[[socket.socket, ClientHello], None]


def _send_then_linger(payload: bytes) -> Behaviour:
    def act(conn: socket.socket, _hello: ClientHello) -> None:
        conn.sendall(payload)
        time.sleep(_LINGER_AFTER_S)

    return act


def _answer(build: Callable[[ClientHello], bytes]) -> Behaviour:
    def act(conn: socket.socket, hello: ClientHello) -> None:
        conn.sendall(build(hello))
        time.sleep(_LINGER_AFTER_S)

    return act


def certificate_message(*ders: bytes) -> bytes:
    """A TLS 1.2 Certificate message (in its record) carrying `ders` as they are, parsed or not."""
    entries = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return record(HANDSHAKE, _handshake_message(11, len(entries).to_bytes(3, "big") + entries))


def _close(_conn: socket.socket, _hello: ClientHello) -> None:
    pass


def _reset(conn: socket.socket, _hello: ClientHello) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _trickle(conn: socket.socket, hello: ClientHello) -> None:
    for byte in server_hello(hello):
        conn.sendall(bytes((byte,)))
        time.sleep(1.0)


def _hrr_twice(conn: socket.socket, hello: ClientHello) -> None:
    conn.sendall(hello_retry_request(hello, _SECP384R1))
    # The second flight may open with a change_cipher_spec (middlebox compatibility), which parses as no
    # ClientHello; the session id to echo is the first one's anyway.
    second = parse_client_hello(_read_flight(conn))
    conn.sendall(hello_retry_request(second if second.session_id else hello, _SECP256R1))
    time.sleep(_LINGER_AFTER_S)


def _warning_then_close(conn: socket.socket, _hello: ClientHello) -> None:
    conn.sendall(alert(ALERTS["user_canceled"], WARNING))
    time.sleep(0.05)


def _sslv2_server_hello() -> bytes:
    """An SSLv2 SERVER-HELLO header (two-byte length with the high bit set, message type 4)."""
    body = bytes((4, 0, 1)) + b"\x00\x02" + b"\x00\x00" + b"\x00\x03" + b"\x00\x10" + b"\x01\x00\x80" + os.urandom(16)
    return struct.pack("!H", 0x8000 | len(body)) + body


BEHAVIOURS: Mapping[str, Behaviour] = {
    **{f"alert:{name}": _send_then_linger(alert(code)) for name, code in ALERTS.items()},
    "warning_then_close": _warning_then_close,
    "close_notify": _send_then_linger(alert(0, WARNING)),
    "sslv2": _send_then_linger(_sslv2_server_hello()),
    "sslv3": _answer(lambda h: server_hello(h, version=0x0300, cipher=0x002F)),
    "tls10": _answer(lambda h: server_hello(h, version=0x0301, cipher=0xC013)),
    "http": _send_then_linger(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    "random": _send_then_linger(bytes(range(7, 256)) + os.urandom(64)),
    "unknown_content_type": _send_then_linger(record(0x63, b"\x00\x01")),
    "bad_record_length": _send_then_linger(record(HANDSHAKE, b"")[:3] + b"\xff\xff" + os.urandom(64)),
    "empty_handshake_record": _send_then_linger(record(HANDSHAKE, b"")),
    "close": _close,
    "reset": _reset,
    "trickle": _trickle,
    "cipher_not_offered": _answer(lambda h: server_hello(h, cipher=0x0005)),  # RC4-SHA
    "tls13_cipher_in_tls12": _answer(lambda h: server_hello(h, cipher=0x1301)),
    "version_not_offered": _answer(lambda h: server_hello(h, version=0x0305)),
    "compression": _answer(lambda h: server_hello(h, compression=1)),
    "bad_extension": _answer(lambda h: server_hello(h, extensions=_extension(_EXT_RENEGOTIATION_INFO, b"\x05xx"))),
    "unsolicited_extension": _answer(
        lambda h: server_hello(h, extensions=_extension(_EXT_RENEGOTIATION_INFO, b"\x00") + _extension(0x1234, b""))
    ),
    "empty_certificate": _answer(lambda h: server_hello(h) + certificate_message()),
    "unparsable_certificate": _answer(lambda h: server_hello(h) + certificate_message(b"\x30\x03\x02\x01\x00")),
    "warning:handshake_failure": _send_then_linger(alert(ALERTS["handshake_failure"], WARNING)),
    "warning:unrecognized_name": _send_then_linger(alert(ALERTS["unrecognized_name"], WARNING)),
    "alert:unassigned": _send_then_linger(alert(254)),
    "alert_too_long": _send_then_linger(record(ALERT, bytes((FATAL, 40, 0)))),
    "server_hello_then_alert": _answer(lambda h: server_hello(h) + alert(ALERTS["internal_error"])),
    "tls13_server_hello_then_plain_alert": _answer(
        lambda h: _tls13_server_hello(h, _X25519, os.urandom(32)) + alert(ALERTS["internal_error"])
    ),
    "hrr_twice": _hrr_twice,
    "hrr_group_not_offered": _answer(lambda h: hello_retry_request(h, 0x0001)),  # sect163k1
    "hrr_group_already_shared": _answer(lambda h: hello_retry_request(h, _X25519)),
    "tls13_group_not_offered": _answer(lambda h: _tls13_server_hello(h, 0x0001, os.urandom(32))),
    "tls13_bad_key_share": _answer(lambda h: _tls13_server_hello(h, _X25519, b"\x00" * 31)),
}


class MisbehavingServer:
    """A TCP listener on 127.0.0.1 (a free port) that answers each ClientHello with `behaviour`."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                self._open.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5.0)
            hello = parse_client_hello(_read_flight(conn))
            self._behaviour(conn, hello)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # wakes the accept() that waits for its poll timeout (Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
