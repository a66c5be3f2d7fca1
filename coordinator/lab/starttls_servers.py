"""Servers that speak a plaintext protocol before TLS, for the STARTTLS lab.

- `SmtpServer`: a real SMTP server (aiosmtpd's), offering STARTTLS with a lab identity, or not at all, or
  offering it and refusing it when asked, as Postfix does (454) when its TLS engine did not start.
- `LdapStartTlsServer`: a small LDAP server that implements one operation faithfully, the StartTLS
  extended operation of RFC 4511 (4.14): it answers the ExtendedRequest for 1.3.6.1.4.1.1466.20037 with an
  ExtendedResponse (resultCode 0 and the responseName, or the refusal it is told to give, with its
  diagnosticMessage) and then runs the TLS handshake on the same connection, as slapd does. Any other
  request ends the connection. It can also write every BER length in four octets, as Active Directory
  does, or answer with a Notice of Disconnection (messageID 0) instead. Debian's slapd is the real thing
  where it is installed; this stands in where it is not.
- `ScriptedServer`: sends a greeting, then answers what it receives as a script says (or never answers),
  and can then run a real TLS handshake: the dialogues of IMAP, POP3, FTP, XMPP and MySQL servers as
  their RFCs (and MySQL's protocol documentation) give them, and the misbehaving peers no real server
  shows on demand, a stall in the middle of STARTTLS, garbage.

PostgreSQL itself runs as a process (`postgres_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from .background_server import STOP_TIMEOUT, BackgroundServer
from .pki import write_pem
from .tls_server import ServedIdentity

__all__ = ["LdapStartTlsServer", "ScriptedServer", "SmtpServer", "Step", "server_context"]

LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
SESSION_TIMEOUT = 10.0  # how long a lab connection may idle before the server drops it
MAX_REQUEST = 4096
_MAIL_HOSTNAME = "mail.lab.test"


def server_context(identity: ServedIdentity) -> ssl.SSLContext:
    """A TLS server context presenting `identity` (no session tickets: every probe gets the chain)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.num_tickets = 0
    with tempfile.TemporaryDirectory(prefix="tlsfleet-starttls-") as directory:
        chain = Path(directory, "chain.pem")
        chain.write_bytes(identity.cert_chain_pem)
        key = write_pem(Path(directory, "key.pem"), identity.key_pem)
        context.load_cert_chain(chain, key)
    return context


class _Listening(BackgroundServer):
    """A BackgroundServer whose connections are asyncio streams, each aborted at stop."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self.accepted = 0

    def _socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, self.port), family=family, backlog=128)
        self.port = listener.getsockname()[1]
        return listener

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self._socket())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._transports.add(writer.transport)
        try:
            async with asyncio.timeout(SESSION_TIMEOUT):
                await self._session(reader, writer)
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled; nothing to report for a lab server
        finally:
            self._transports.discard(writer.transport)
            writer.transport.abort()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self._transports):
            transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT / 2):
                await self._server.wait_closed()


class _Sink:
    """aiosmtpd handler: accept every message and keep none."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


class _RefusingSmtp(SMTP):
    """aiosmtpd whose EHLO lists STARTTLS and whose STARTTLS answers `refusal` (a reply line, e.g. 454 ...)."""

    def __init__(self, handler: _Sink, refusal: str, **options: Any) -> None:
        super().__init__(handler, **options)
        self._refusal = refusal

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push(self._refusal)


class SmtpServer(_Listening):
    """aiosmtpd on `host`:`port`; with `identity` its EHLO offers STARTTLS and STARTTLS presents it, or, with
    `refuse_starttls` (a reply line), answers STARTTLS with that refusal."""

    kind = "SMTP server"

    def __init__(
        self,
        identity: ServedIdentity | None,
        *,
        refuse_starttls: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self._context = server_context(identity) if identity is not None else None
        self._refusal = refuse_starttls

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            options: dict[str, Any] = {"tls_context": self._context, "hostname": _MAIL_HOSTNAME}
            options["timeout"] = SESSION_TIMEOUT
            if self._refusal is not None:
                smtp: SMTP = _RefusingSmtp(_Sink(), self._refusal, **options)
            else:
                smtp = SMTP(_Sink(), **options)
            self.accepted += 1
            return smtp

        self._server = await loop.create_server(protocol, sock=self._socket())


class LdapStartTlsServer(_Listening):
    """Answers the StartTLS extended operation with `result_code` (0: success, then TLS with `identity`;
    otherwise `diagnostic` says why), under the request's messageID or `message_id` (0: a Notice of
    Disconnection), every length in four octets with `long_lengths`."""

    kind = "LDAP server"

    def __init__(
        self,
        identity: ServedIdentity,
        *,
        result_code: int = 0,
        diagnostic: bytes = b"StartTLS is not available on this lab server",
        message_id: int | None = None,
        long_lengths: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.result_code = result_code
        self.diagnostic = diagnostic if result_code else b""
        self.message_id = message_id
        self.long_lengths = long_lengths
        self._context = server_context(identity)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message_id, operation = _read_ldap_request(await _read_ber(reader))
        if operation != (0x77, LDAP_STARTTLS_OID):
            return  # not the one operation this server implements
        answered = message_id if self.message_id is None else self.message_id
        writer.write(_extended_response(answered, self.result_code, self.diagnostic, long_lengths=self.long_lengths))
        await writer.drain()
        if self.result_code != 0 or answered == 0:
            return
        plain = writer.transport
        await writer.start_tls(self._context)
        if writer.transport is None:
            # A client that leaves during the TLS handshake makes CPython 3.11's start_tls leave the writer
            # without a transport, whose __del__ then raises; it gets the plain one back, already closed.
            writer._transport = plain
            return
        await reader.read(MAX_REQUEST)  # until the client closes (or the session times out)


async def _read_ber(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    length = head[1]
    if length & 0x80:
        octets = length & 0x7F
        if not 1 <= octets <= 2:
            raise asyncio.IncompleteReadError(head, None)
        length = int.from_bytes(await reader.readexactly(octets), "big")
    if head[0] != 0x30 or length > MAX_REQUEST:
        raise asyncio.IncompleteReadError(head, None)
    return await reader.readexactly(length)


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    """Definite-length BER elements one after another (short lengths, as LDAP requests use)."""
    out, at = [], 0
    while at + 2 <= len(data):
        tag, length = data[at], data[at + 1]
        at += 2
        if length & 0x80:
            octets = length & 0x7F
            length = int.from_bytes(data[at : at + octets], "big")
            at += octets
        out.append((tag, data[at : at + length]))
        at += length
    return out


def _read_ldap_request(body: bytes) -> tuple[int, tuple[int, bytes]]:
    """(messageID, (operation tag, requestName)) of an LDAPMessage body."""
    elements = _elements(body)
    if len(elements) < 2 or elements[0][0] != 0x02:
        return 0, (0, b"")
    message_id = int.from_bytes(elements[0][1], "big")
    tag, operation = elements[1]
    inner = _elements(operation) if tag == 0x77 else []
    name = inner[0][1] if inner and inner[0][0] == 0x80 else b""
    return message_id, (tag, name)


def _tlv(tag: int, value: bytes, *, long_length: bool = False) -> bytes:
    if long_length:
        return bytes((tag, 0x84)) + len(value).to_bytes(4, "big") + value
    if len(value) < 0x80:
        return bytes((tag, len(value))) + value
    return bytes((tag, 0x82)) + len(value).to_bytes(2, "big") + value


_NOTICE_OF_DISCONNECTION_OID = b"1.3.6.1.4.1.1466.20036"


def _extended_response(message_id: int, result_code: int, diagnostic: bytes, *, long_lengths: bool) -> bytes:
    """ExtendedResponse [APPLICATION 24] { resultCode, matchedDN "", diagnosticMessage, responseName }; for
    messageID 0 the unsolicited Notice of Disconnection (RFC 4511 4.4.1)."""

    def tlv(tag: int, value: bytes) -> bytes:
        return _tlv(tag, value, long_length=long_lengths)

    name = _NOTICE_OF_DISCONNECTION_OID if message_id == 0 else LDAP_STARTTLS_OID
    response = tlv(0x0A, bytes((result_code,))) + tlv(0x04, b"") + tlv(0x04, diagnostic) + tlv(0x8A, name)
    body = tlv(0x02, message_id.to_bytes(max(1, (message_id.bit_length() + 8) // 8), "big")) + tlv(0x78, response)
    return tlv(0x30, body)


@dataclass(frozen=True)
class Step:
    """What a scripted server sends in answer to one request; with `tls` a TLS handshake follows, with
    `close` the server hangs up. `later` comes `later_s` seconds after the reply, in a write of its own (as
    Dovecot's BYE follows its STARTTLS OK when its TLS cannot start)."""

    reply: bytes
    tls: bool = False
    close: bool = False
    later: bytes = b""
    later_s: float = 0.05


class ScriptedServer(_Listening):
    """Sends `greeting`, then for each request it receives (a chunk, or exactly `request_size` bytes) sends
    what `answer(request)` says, and after a Step with `tls` runs a real TLS handshake with `identity`;
    None: it never answers again (the connection stays open until the client gives up). With `pause`, the
    greeting's last line comes that many seconds after the others, as Postfix's postscreen sends its 220-
    line and only after its greet wait (6 s by default) the rest."""

    kind = "scripted server"

    def __init__(
        self,
        greeting: bytes,
        answer: Callable[[bytes], Step | None],
        *,
        identity: ServedIdentity | None = None,
        request_size: int = 0,
        pause: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.greeting = greeting
        self.pause = pause
        self.answer = answer
        self.request_size = request_size
        self._context = server_context(identity) if identity is not None else None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.greeting:
            last = self.greeting.rstrip(b"\r\n").rfind(b"\n") + 1 if self.pause else 0
            writer.write(self.greeting[:last])
            await writer.drain()
            await asyncio.sleep(self.pause)
            writer.write(self.greeting[last:])
            await writer.drain()
        while True:
            if self.request_size:
                request = await reader.readexactly(self.request_size)
            else:
                request = await reader.read(MAX_REQUEST)
            if not request:
                return
            step = self.answer(request)
            if step is None:
                await reader.read()  # stalled: until the client closes
                return
            writer.write(step.reply)
            await writer.drain()
            if step.later:
                await asyncio.sleep(step.later_s)
                writer.write(step.later)
                await writer.drain()
            if step.close:
                return
            if step.tls and self._context is not None:
                await _tls_over(reader, writer, self._context)
                return


async def _tls_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
    """A server-side TLS handshake over the stream as it is (bytes already buffered in `reader` included,
    which `start_tls` would lose), then wait for the client to close."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_side=True)
    while True:
        try:
            sslobj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        finally:
            if outgoing.pending:
                writer.write(outgoing.read())
                await writer.drain()
        data = await reader.read(MAX_REQUEST)
        if not data:
            return
        incoming.write(data)
    while data := await reader.read(MAX_REQUEST):
        incoming.write(data)
        with contextlib.suppress(ssl.SSLError):
            sslobj.read(MAX_REQUEST)
        if outgoing.pending:
            writer.write(outgoing.read())
