"""What happens on a connection before the ClientHello: an HTTPS proxy's CONNECT, then a STARTTLS exchange.

Each protocol is spoken as `openssl s_client -starttls PROTO` speaks it, one small function each, so the
agent's handshake starts at the point where s_client's does and the verdicts compare one to one. Where
s_client "tries anyway" (an SMTP server that refuses EHLO or whose EHLO reply lists no STARTTLS, an IMAP
server without it among its capabilities), the probe says instead that the server does not offer STARTTLS:
that is what curl and every mail client configured to require TLS conclude; and an LDAP answer to another
messageID is not taken for the StartTLS answer, as libldap does not take it. A server that turns the
session away before STARTTLS (a 421 greeting, IMAP's BYE, a MySQL error greeting, an XMPP stream error) is
quoted in the failure's words. A server that is asked to start TLS and answers with a refusal (SMTP's 454,
IMAP's NO or BAD, POP3's -ERR, a non-zero LDAP resultCode, PostgreSQL's 'N', XMPP's <failure/>) refused
STARTTLS, said so in words beginning with `REFUSED_STARTTLS` and its reply: s_client goes on with a ClientHello
the server takes for a command and reports "wrong version number", where curl says "STARTTLS denied".

Every exchange is bounded: one deadline for the whole of it (the caller's connect budget), at most
`MAX_LINE_BYTES` per reply line (or reply message) and `MAX_REPLY_LINES` lines per reply. What the server
sends past its STARTTLS answer stays in the stream reader, where the TLS handshake reads it; except that in
the line-based dialogues (SMTP, IMAP, POP3, FTP) a server that has already said more, in plain text, by the
time its answer is read refused TLS after all, and is quoted so (Dovecot whose key does not fit).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model import Failure, ProbeRequest, Starttls

if TYPE_CHECKING:  # the proxy code loads only for a probe that goes through one (--via-proxy)
    from .proxy import Proxy

__all__ = [
    "DIRECT",
    "LINE_PROTOCOLS",
    "MAX_LINE_BYTES",
    "MAX_REPLY_LINES",
    "REFUSED_STARTTLS",
    "WELL_KNOWN_PORTS",
    "Route",
    "SpokeBeforeTls",
    "StarttlsFailed",
    "before_tls",
    "infer_starttls",
    "negotiate",
    "route_for",
    "words_after_starttls",
]

MAX_LINE_BYTES = 4096  # RFC 5321 allows 512 per SMTP reply line; servers' EHLO lines are far shorter
MAX_REPLY_LINES = 64
EHLO_NAME = "mail.example.com"  # the name s_client sends in EHLO (its -name default)
LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
POSTGRES_SSL_REQUEST = bytes((0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F))  # length 8, code 80877103
# s_client's MySQL SSLRequest: payload length 32, sequence 1, capabilities with CLIENT_SSL, max packet
# 16 MiB, character set utf8 (33), 23 reserved zero bytes.
MYSQL_SSL_REQUEST = bytes((0x20, 0x00, 0x00, 0x01, 0x85, 0xAE, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x01, 0x21)) + bytes(23)
_MYSQL_CLIENT_SSL = 0x0800
# How a failure's words begin when the server answered the request to start TLS with a refusal; the diagnosis
# tells that apart from a server that offers no STARTTLS by it (both are Failure.STARTTLS_UNSUPPORTED).
REFUSED_STARTTLS = "the server refused STARTTLS"

WELL_KNOWN_PORTS: dict[int, Starttls] = {
    21: Starttls.FTP,
    25: Starttls.SMTP,
    110: Starttls.POP3,
    143: Starttls.IMAP,
    389: Starttls.LDAP,
    587: Starttls.SMTP,
    3306: Starttls.MYSQL,
    5222: Starttls.XMPP,
    5432: Starttls.POSTGRES,
}


def infer_starttls(port: int) -> Starttls:
    """The STARTTLS protocol a well-known port speaks; NONE for any other port, SMTPS (465), IMAPS (993),
    POP3S (995) and LDAPS (636) among them: TLS from the first byte."""
    return WELL_KNOWN_PORTS.get(port, Starttls.NONE)


@dataclass(frozen=True)
class Route:
    """How a probe's connection reaches the point where TLS starts: directly or through `proxy` (asking it
    for `connect_host`, the target's name, as applications do), then `starttls` when it is not NONE.
    `domain` is the name the protocol itself gives the server (XMPP's `to`), which a pinned address must
    not replace: a server answers an address it does not serve with host-unknown."""

    proxy: Proxy | None = None
    connect_host: str = ""
    starttls: Starttls = Starttls.NONE
    domain: str = ""

    @property
    def direct(self) -> bool:
        return self.proxy is None and self.starttls is Starttls.NONE

    def dial(self, address: str, port: int) -> tuple[str, int]:
        """Where the TCP connection goes: the proxy when there is one, else the address itself."""
        if self.proxy is not None:
            return self.proxy.host, self.proxy.port
        return address, port


DIRECT = Route()


class StarttlsFailed(Exception):
    """The STARTTLS exchange (or the proxy's CONNECT before it) did not end in a server ready for TLS; `failure`
    says how, `proxy_status` the HTTP status of a proxy's refusal (0 otherwise)."""

    def __init__(self, failure: Failure, message: str, proxy_status: int = 0) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.proxy_status = proxy_status


class SpokeBeforeTls(StarttlsFailed):
    """The server accepted STARTTLS, then said in plain text, before any TLS, that it would not start it."""


async def before_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    route: Route,
    address: str,
    port: int,
    deadline: float,
    listen: float = 0.0,
) -> None:
    """Run the proxy's CONNECT (for `route.connect_host` or `address`) and the STARTTLS exchange, both by
    `deadline` (a `time.perf_counter()` value), then listen `listen` seconds for words before TLS (see
    `negotiate`). Raises StarttlsFailed, with the proxy's failures as they are."""
    if route.proxy is not None:
        from .proxy import ProxyFailed, connect_through

        try:
            await connect_through(reader, writer, route.proxy, route.connect_host or address, port, deadline)
        except ProxyFailed as failed:
            raise StarttlsFailed(failed.failure, failed.message, failed.status) from None
    if route.starttls is not Starttls.NONE:
        host = route.domain or route.connect_host or address
        await negotiate(reader, writer, route.starttls, host, deadline, listen)


async def negotiate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    protocol: Starttls,
    host: str,
    deadline: float,
    listen: float = 0.0,
) -> None:
    """Speak `protocol` until the server is ready for the ClientHello; raises StarttlsFailed otherwise.
    In a line-based dialogue, whatever the server has said past its acceptance by then, or within `listen`
    seconds more, is a refusal after all (SpokeBeforeTls)."""
    speak = _PROTOCOLS[protocol]
    left = deadline - time.perf_counter()
    talk = _Conversation(reader, writer)
    try:
        async with asyncio.timeout(max(left, 0.0)):
            await speak(talk, host)
            if protocol in LINE_PROTOCOLS:
                await _nothing_before_tls(talk, min(listen, max(deadline - time.perf_counter(), 0.0) / 2))
    except TimeoutError:
        raise StarttlsFailed(
            Failure.STARTTLS_TIMEOUT,
            f"{protocol} STARTTLS did not finish within {max(left, 0.0):.3g} s: {talk.stalled_at}",
        ) from None
    except asyncio.IncompleteReadError:
        raise StarttlsFailed(
            Failure.STARTTLS_BAD_REPLY,
            f"the server closed the connection during {protocol} STARTTLS: {talk.stalled_at}",
        ) from None
    except (ConnectionError, OSError) as error:
        raise StarttlsFailed(
            Failure.STARTTLS_BAD_REPLY,
            f"the connection broke during {protocol} STARTTLS ({talk.stalled_at}): {error}",
        ) from None


async def _nothing_before_tls(talk: _Conversation, listen: float) -> None:
    """Raise SpokeBeforeTls when the server, having agreed to start TLS, says more in plain text (by now, or
    within `listen` seconds): no TLS server speaks before the ClientHello, so those are its words about TLS
    failing to start (Dovecot answers `OK Begin TLS negotiation now.`, then `* BYE [UNAVAILABLE] TLS
    initialization failed.`, or POP3's `-ERR [SYS/TEMP] ...`, when its key does not fit its certificate, and
    hangs up). Read as TLS, they are only a "wrong version number": a port that does not speak TLS at all."""
    said = await talk.already_sent(listen)
    if said and said[0] not in _TLS_RECORD_TYPES:
        first = said.split(b"\n", 1)[0].rstrip(b"\r")
        raise SpokeBeforeTls(
            Failure.STARTTLS_UNSUPPORTED, f"{REFUSED_STARTTLS}: it answered {talk.last}, then {_shown(first)}"
        )


async def words_after_starttls(address: str, port: int, route: Route, seconds: float) -> SpokeBeforeTls | None:
    """Speak the route's STARTTLS again on a new connection and, sending no ClientHello, listen up to
    `seconds` in all: the refusal of a server that agreed to start TLS and then said in plain text that it
    could not (its words came after the acceptance, not with it, so the first dialogue missed them), or
    None when it kept quiet, spoke TLS, or the dialogue went otherwise."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(*route.dial(address, port))
    except (TimeoutError, OSError):
        return None
    try:
        left = seconds - (time.perf_counter() - started)
        await before_tls(reader, writer, route, address, port, started + seconds, listen=left)
    except SpokeBeforeTls as spoke:
        return spoke
    except (StarttlsFailed, OSError):
        return None
    finally:
        writer.transport.abort()
    return None


class _Conversation:
    """Bounded reads and writes over one stream; `stalled_at` says where it stands, for a timeout's words
    (a Postfix postscreen sends its first 220- line, then the rest only after its greet wait, 6 s)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.stalled_at = "the server sent nothing"
        self.last = "nothing"  # the server's last reply line, quoted

    async def send(self, data: bytes, name: str = "") -> None:
        """Send `data` (`name`: how to call it in words, when it is not a line of text)."""
        request = name or _shown(data.rstrip(b"\r\n"))
        self.stalled_at = f"no answer to {request}"
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        """One reply line, CRLF stripped; longer than MAX_LINE_BYTES is a reply not understood."""
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _not_understood(f"a reply line longer than {MAX_LINE_BYTES} bytes") from None
        if len(line) > MAX_LINE_BYTES:
            raise _not_understood(f"a reply line longer than {MAX_LINE_BYTES} bytes")
        line = line.rstrip(b"\r\n")
        self.last = _shown(line)
        self.stalled_at = f"the server's last line was {self.last}, then nothing more"
        return line

    async def reply(self, done: Callable[[bytes], bool]) -> list[bytes]:
        """Lines until `done(line)` holds for one, at most MAX_REPLY_LINES."""
        lines: list[bytes] = []
        while len(lines) < MAX_REPLY_LINES:
            line = await self.line()
            lines.append(line)
            if done(line):
                return lines
        raise _not_understood(f"a reply of more than {MAX_REPLY_LINES} lines")

    async def some(self) -> bytes:
        """What the server sends next, at most MAX_LINE_BYTES (s_client's single BIO_read)."""
        data = await self.reader.read(MAX_LINE_BYTES)
        if not data:
            raise asyncio.IncompleteReadError(b"", None)
        self.stalled_at = f"the server's last words were {_shown(data[-80:])}, then nothing more"
        return data

    async def already_sent(self, wait: float = 0.0) -> bytes:
        """What the server has sent that is not read yet, or sends within `wait` seconds (b"" when nothing,
        or when it has closed the connection), at most MAX_LINE_BYTES."""
        try:
            # A zero timeout expires only if the read has to wait: buffered bytes are returned first.
            async with asyncio.timeout(wait):
                return await self.reader.read(MAX_LINE_BYTES)
        except TimeoutError:
            return b""

    async def some_or_nothing(self) -> bytes:
        """As `some`, but b"" when the server has closed the connection."""
        return await self.reader.read(MAX_LINE_BYTES)

    async def exactly(self, count: int) -> bytes:
        return await self.reader.readexactly(count)


def _not_understood(what: str) -> StarttlsFailed:
    return StarttlsFailed(Failure.STARTTLS_BAD_REPLY, f"the server's STARTTLS reply was not understood: {what}")


def _unsupported(what: str) -> StarttlsFailed:
    return StarttlsFailed(Failure.STARTTLS_UNSUPPORTED, f"the server does not offer STARTTLS: {what}")


def _refused(what: str) -> StarttlsFailed:
    """The server was asked to start TLS and said no, in its own words (`what` quotes them, bounded)."""
    return StarttlsFailed(Failure.STARTTLS_UNSUPPORTED, f"{REFUSED_STARTTLS}: {what}")


def _turned_away(what: str) -> StarttlsFailed:
    """The server ended the session before STARTTLS could be asked (too many connections, a client it does
    not serve): a refusal of this client, said as the server said it, not a missing STARTTLS."""
    return StarttlsFailed(Failure.STARTTLS_REFUSED, f"the server turned the session away before STARTTLS: {what}")


def _shown(data: bytes) -> str:
    """A reply quoted in a message: printable, short."""
    text = data[:80].decode("ascii", "replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))


def _smtp_last(line: bytes) -> bool:
    # A multi-line reply continues while the fourth character is '-' ("250-STARTTLS", then "250 OK").
    return len(line) < 4 or line[3:4] != b"-"


def _code(line: bytes) -> bytes:
    return line[:3]


async def _smtp(talk: _Conversation, host: str) -> None:
    greeting = await talk.reply(_smtp_last)
    if _code(greeting[-1]) != b"220":
        raise _greeting_refused_or_garbage(greeting[-1])
    await talk.send(f"EHLO {EHLO_NAME}\r\n".encode())
    ehlo = await talk.reply(_smtp_last)
    if not all(line[:3].isdigit() for line in ehlo):
        raise _not_understood(f"EHLO answered {_shown(ehlo[0])}")
    if _code(ehlo[-1]) == b"421":
        raise _turned_away(f"EHLO {EHLO_NAME} answered {_shown(ehlo[-1])}")
    if _code(ehlo[-1]) != b"250":
        # s_client sends STARTTLS anyway; curl and mail clients stop here: STARTTLS is an ESMTP extension,
        # and a server that refuses EHLO lists none (a HELO fallback could not ask for it).
        raise _unsupported(f"EHLO {EHLO_NAME} answered {_shown(ehlo[-1])}, so it lists no extensions")
    if not any(line[4:].upper().split(b" ")[0] == b"STARTTLS" for line in ehlo):
        raise _unsupported("STARTTLS is not among the extensions its EHLO reply lists")
    await talk.send(b"STARTTLS\r\n")
    ready = await talk.reply(_smtp_last)
    if _code(ready[-1]) != b"220":
        if _coded(ready[-1]) and _code(ready[-1]) != b"421":
            # Its EHLO listed STARTTLS; 454 is Postfix's answer when its TLS engine did not start (a key it
            # could not read, say).
            raise _refused(f"STARTTLS answered {_shown(ready[-1])}, not 220")
        raise _refused_or_garbage(ready[-1], "STARTTLS", b"220")


def _coded(line: bytes) -> bool:
    return line[:3].isdigit() and line[3:4] in (b" ", b"-", b"")


def _refused_or_garbage(line: bytes, command: str, expected: bytes) -> StarttlsFailed:
    """A reply with a code is a refusal (421, the server closing the channel, of the session itself); one
    without is not the protocol at all."""
    if _coded(line) and _code(line) == b"421":
        return _turned_away(f"{command} answered {_shown(line)}")
    if _coded(line):
        return _unsupported(f"{command} answered {_shown(line)}, not {expected.decode()}")
    return _not_understood(f"{command} answered {_shown(line)}")


def _greeting_refused_or_garbage(line: bytes) -> StarttlsFailed:
    """An SMTP or FTP greeting other than 220: a 4xx or 5xx (421 too many connections, 554 no service for
    this client) turns this client away; anything else is not the greeting of the protocol."""
    if _coded(line) and line[:1] in (b"4", b"5"):
        return _turned_away(f"its greeting is {_shown(line)}, not 220")
    return _not_understood(f"the greeting is {_shown(line)}, not 220")


async def _imap(talk: _Conversation, host: str) -> None:
    greeting = await talk.line()
    kind = greeting.upper().split(b" ")[:2]
    if kind == [b"*", b"BYE"]:
        raise _turned_away(f"its greeting is {_shown(greeting)}")
    if kind == [b"*", b"PREAUTH"]:
        # RFC 3501 6.2.1: STARTTLS only in the not-authenticated state; curl stops here too.
        raise _unsupported(
            f"it greets with PREAUTH ({_shown(greeting)}), and IMAP allows no STARTTLS once authenticated"
        )
    if kind != [b"*", b"OK"]:
        raise _not_understood(f"the greeting is {_shown(greeting)}")
    await talk.send(b". CAPABILITY\r\n")
    lines = await talk.reply(_imap_done)
    capabilities = b" ".join(line for line in lines if line.upper().startswith(b"* CAPABILITY"))
    if lines[-1].upper().startswith(b"* BYE"):
        raise _turned_away(f"CAPABILITY answered {_shown(lines[-1])}")
    if not lines[-1].upper().startswith(b". OK"):
        raise _not_understood(f"CAPABILITY answered {_shown(lines[-1])}")
    if b"STARTTLS" not in capabilities.upper().split():
        raise _unsupported("STARTTLS is not among its capabilities")
    await talk.send(b". STARTTLS\r\n")
    ready = await talk.reply(_imap_done)
    answer = ready[-1].upper()
    if answer.startswith(b"* BYE"):
        raise _turned_away(f"STARTTLS answered {_shown(ready[-1])}")
    if answer.startswith((b". NO", b". BAD")):
        raise _refused(f"STARTTLS answered {_shown(ready[-1])}")
    if not answer.startswith(b". OK"):
        raise _not_understood(f"STARTTLS answered {_shown(ready[-1])}")


def _imap_done(line: bytes) -> bool:
    # The tagged answer, or an untagged BYE: the server is closing the connection (RFC 3501 7.1.5).
    return line.startswith(b". ") or line.upper().startswith(b"* BYE")


async def _pop3(talk: _Conversation, host: str) -> None:
    greeting = await talk.line()
    if greeting.startswith(b"-ERR"):
        raise _turned_away(f"its greeting is {_shown(greeting)}")
    if not greeting.startswith(b"+OK"):
        raise _not_understood(f"the greeting is {_shown(greeting)}")
    await talk.send(b"STLS\r\n")
    answer = await talk.line()
    if answer.startswith(b"-ERR"):
        raise _refused(f"STLS answered {_shown(answer)}")
    if not answer.startswith(b"+OK"):
        raise _not_understood(f"STLS answered {_shown(answer)}")


def _ftp_last(line: bytes) -> bool:
    return len(line) >= 4 and line[:3].isdigit() and line[3:4] == b" "


async def _ftp(talk: _Conversation, host: str) -> None:
    greeting = await talk.reply(_ftp_last)
    if _code(greeting[-1]) != b"220":
        raise _greeting_refused_or_garbage(greeting[-1])
    await talk.send(b"AUTH TLS\r\n")
    answer = await talk.reply(_ftp_last)
    # RFC 4217 says 234; older servers answer 334, and curl (like s_client, which reads no code) goes on.
    if _coded(answer[-1]) and _code(answer[-1]) in (b"431", b"534"):
        # RFC 4217's "need some unavailable resource" and "request denied for policy reasons"; the 50x
        # codes say AUTH TLS is not a command it knows.
        raise _refused(f"AUTH TLS answered {_shown(answer[-1])}, not 234")
    if _code(answer[-1]) not in (b"234", b"334"):
        raise _refused_or_garbage(answer[-1], "AUTH TLS", b"234")


_XMPP_STARTTLS = (
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'",
    b'<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"',
)


_XMPP_FEATURES_END = (b"</stream:features>", b"<stream:features/>")
_XMPP_CONDITION = re.compile(rb"<stream:error>\s*<([A-Za-z-]+)")
_XMPP_TEXT = re.compile(rb"<text[^>]*>([^<]{1,200})</text>")
_XMPP_MAX = MAX_LINE_BYTES * MAX_REPLY_LINES


async def _xmpp(talk: _Conversation, host: str) -> None:
    await talk.send(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' "
        f"to='{host}' version='1.0'>".encode(),
        f"the stream header to {host!r}",
    )
    seen = await _xmpp_until(
        talk, host, lambda data: any(marker in data for marker in _XMPP_STARTTLS + _XMPP_FEATURES_END)
    )
    if not any(marker in seen for marker in _XMPP_STARTTLS):
        raise _unsupported("its stream features list no starttls")
    await talk.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "<starttls/>")
    # Whatever else the server sent in the features' packet is read here too; it sends nothing after them
    # until the client answers, and nothing after <proceed/> until the ClientHello.
    answer = await _xmpp_until(talk, host, lambda data: b"<proceed" in data or b"<failure" in data)
    if b"<failure" in answer:
        raise _refused(f"starttls answered {_shown(answer[answer.index(b'<failure') :])}")


async def _xmpp_until(talk: _Conversation, host: str, done: Callable[[bytes], bool]) -> bytes:
    """What the server sends until `done` holds for it; a stream error or the stream's end is said as such
    (at once when complete, or when the server then closes), at most _XMPP_MAX bytes."""
    seen = b""
    while not done(seen):
        if b"</stream:error>" in seen or b"</stream:stream>" in seen:
            raise _xmpp_ended(seen, host)
        if len(seen) > _XMPP_MAX:
            raise _not_understood(f"{len(seen)} bytes without the stream element awaited")
        try:
            seen += await talk.some()
        except asyncio.IncompleteReadError:
            if b"<stream:error" in seen:
                raise _xmpp_ended(seen, host) from None
            raise
    return seen


def _xmpp_ended(seen: bytes, host: str) -> StarttlsFailed:
    condition = _XMPP_CONDITION.search(seen)
    if condition is None:
        return _not_understood(f"the server ended the stream: {_shown(seen[-80:])}")
    name = condition.group(1).decode()
    text = _XMPP_TEXT.search(seen)
    said = f" ({_shown(text.group(1))})" if text else ""
    if name == "host-unknown":
        said += f": it serves no domain {host!r} (the stream's `to`: the SNI name; --sni names another)"
    return _turned_away(f"the stream error {name}{said}")


async def _postgres(talk: _Conversation, host: str) -> None:
    await talk.send(POSTGRES_SSL_REQUEST, "the SSLRequest")
    # One byte only: whatever follows it is the server's TLS (or, if it cheats, data injected before TLS).
    answer = await talk.exactly(1)
    if answer == b"N":
        raise _refused("it answered the SSLRequest with 'N' (ssl is off)")
    if answer == b"E":
        said = _postgres_error(await talk.some_or_nothing())
        raise _unsupported(f"it answered the SSLRequest with an error{f': {said}' if said else ''}")
    if answer != b"S":
        raise _not_understood(f"it answered the SSLRequest with {_shown(answer)}")


def _postgres_error(data: bytes) -> str:
    """The message of the ErrorResponse after its 'E': a v3 message's M field, or a v2 server's bare string
    (servers before 7.4 answer the SSLRequest code they do not know so)."""
    if len(data) >= 4 and 4 < int.from_bytes(data[:4], "big") <= MAX_LINE_BYTES:
        for field in data[4:].split(b"\0"):
            if field.startswith(b"M"):
                return _shown(field[1:])
    text = data.split(b"\0")[0].strip()
    return _shown(text) if text else ""


async def _mysql(talk: _Conversation, host: str) -> None:
    header = await talk.exactly(4)
    length = int.from_bytes(header[:3], "little")
    if length < 1 or length > MAX_LINE_BYTES:
        raise _not_understood(f"a greeting packet of {length} bytes")
    packet = await talk.exactly(length)
    if packet[0] == 0xFF and length >= 3:
        # An ERR packet instead of the greeting: 1040 too many connections, 1130 host not allowed, ...
        code = int.from_bytes(packet[1:3], "little")
        message = packet[9:] if packet[3:4] == b"#" else packet[3:]  # '#' and a SQL state in 4.1's format
        raise _turned_away(f"it greets with MySQL error {code}: {_shown(message)}")
    if packet[0] == 9:
        raise _unsupported("it speaks MySQL protocol version 9, which has no SSL (s_client reads only 10)")
    if packet[0] != 10:
        raise _not_understood(f"protocol version {packet[0]}, not 10")
    if length < 17:
        raise _not_understood(f"a greeting packet of {length} bytes")
    end = packet.find(b"\0", 1)
    if end < 0 or end + 16 > len(packet):
        raise _not_understood("a greeting packet too short for its capabilities")
    position = end + 1 + 4 + 8  # the connection id, the first 8 bytes of the scramble
    if packet[position] != 0:
        raise _not_understood("a greeting packet whose filler is not zero")
    capabilities = int.from_bytes(packet[position + 1 : position + 3], "little")
    if not capabilities & _MYSQL_CLIENT_SSL:
        raise _unsupported("its greeting does not set CLIENT_SSL")
    await talk.send(MYSQL_SSL_REQUEST, "the SSLRequest")


def _ldap_request() -> bytes:
    """LDAPMessage { messageID 1, extendedReq [APPLICATION 23] { requestName [0] StartTLS OID } }."""
    name = b"\x80" + bytes((len(LDAP_STARTTLS_OID),)) + LDAP_STARTTLS_OID
    extended = b"\x77" + bytes((len(name),)) + name
    body = b"\x02\x01\x01" + extended
    return b"\x30" + bytes((len(body),)) + body


LDAP_STARTTLS_REQUEST = _ldap_request()
# RFC 4511 result codes a server gives when it will not start TLS.
_LDAP_RESULTS = {
    1: "operationsError",
    2: "protocolError",
    52: "unavailable",
    53: "unwillingToPerform",
    80: "other",
}
# Active Directory writes every BER length in 4 octets (0x84 ...); s_client's ASN1_get_object reads them.
_BER_LENGTH_OCTETS = 4


async def _ldap(talk: _Conversation, host: str) -> None:
    await talk.send(LDAP_STARTTLS_REQUEST, "the StartTLS extended request")
    head = await talk.exactly(2)
    if head[0] != 0x30:
        raise _not_understood(f"a reply that is no LDAPMessage (tag 0x{head[0]:02x})")
    length = head[1]
    if length & 0x80:
        octets = length & 0x7F
        if not 1 <= octets <= _BER_LENGTH_OCTETS:
            raise _not_understood(f"a length of {octets} octets")
        length = int.from_bytes(await talk.exactly(octets), "big")
    if length > MAX_LINE_BYTES:
        raise _not_understood(f"a reply of {length} bytes")
    message = _Ber(await talk.exactly(length))
    tag, message_id = message.next()
    if tag != 0x02:
        raise _not_understood("a reply without a messageID")
    number = int.from_bytes(message_id, "big")
    tag, response = message.next()
    if tag != 0x78:
        raise _not_understood(f"a reply that is no ExtendedResponse (tag 0x{tag:02x})")
    rest = _Ber(response)
    tag, code = rest.next()
    if tag != 0x0A or not code:
        raise _not_understood("an ExtendedResponse without a resultCode")
    result = int.from_bytes(code, "big")
    if number == 0:
        # RFC 4511 4.4.1: an unsolicited Notice of Disconnection; the server drops the connection.
        raise _turned_away(f"it sent a Notice of Disconnection, {_ldap_outcome(result, rest)}")
    if number != 1:
        # s_client reads no messageID; an LDAP client (libldap, curl) waits on for its own answer.
        raise _not_understood(f"an ExtendedResponse to messageID {number}, not the StartTLS request's 1")
    if result != 0:
        raise _refused(f"StartTLS answered {_ldap_outcome(result, rest)}")


def _ldap_outcome(result: int, rest: _Ber) -> str:
    """The code, its RFC 4511 name, and the server's diagnosticMessage when it gave one (`rest` is the
    ExtendedResponse after its resultCode)."""
    name = _LDAP_RESULTS.get(result, "")
    words = f"resultCode {result} ({name})" if name else f"resultCode {result}"
    with contextlib.suppress(StarttlsFailed):
        rest.next()  # matchedDN
        tag, diagnostic = rest.next()
        if tag == 0x04 and diagnostic:
            words += f": {_shown(diagnostic)}"
    return words


class _Ber:
    """Definite-length BER elements one after another (enough for an LDAP ExtendedResponse)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def next(self) -> tuple[int, bytes]:
        data, at = self.data, self.position
        if at + 2 > len(data):
            raise _not_understood("a truncated LDAP message")
        tag, length = data[at], data[at + 1]
        at += 2
        if length & 0x80:
            octets = length & 0x7F
            if not 1 <= octets <= _BER_LENGTH_OCTETS or at + octets > len(data):
                raise _not_understood("an LDAP length that does not parse")
            length = int.from_bytes(data[at : at + octets], "big")
            at += octets
        if at + length > len(data):
            raise _not_understood("a truncated LDAP message")
        self.position = at + length
        return tag, data[at : at + length]


# The dialogues of reply lines, where a line past the one that accepts STARTTLS is the server's own words.
LINE_PROTOCOLS = frozenset({Starttls.SMTP, Starttls.IMAP, Starttls.POP3, Starttls.FTP})
_TLS_RECORD_TYPES = frozenset({0x14, 0x15, 0x16, 0x17})  # change_cipher_spec, alert, handshake, data

_PROTOCOLS: dict[Starttls, Callable[[_Conversation, str], Awaitable[None]]] = {
    Starttls.SMTP: _smtp,
    Starttls.IMAP: _imap,
    Starttls.POP3: _pop3,
    Starttls.FTP: _ftp,
    Starttls.XMPP: _xmpp,
    Starttls.POSTGRES: _postgres,
    Starttls.MYSQL: _mysql,
    Starttls.LDAP: _ldap,
}


def route_for(request: ProbeRequest, environ: Mapping[str, str]) -> Route:
    """The route a request asks for on this host: its STARTTLS protocol (naming the server, where the
    protocol does, by the SNI name: the target's host or `--sni`), and with `via_proxy` the proxy
    HTTPS_PROXY names unless NO_PROXY bypasses it for the target (then the route is direct, as for curl).
    RequestError when the proxy variable does not name a proxy this agent can use."""
    options = request.options
    proxy = None
    if options.via_proxy:
        from .proxy import proxy_for

        proxy = proxy_for(request.target.host, environ)
    return Route(
        proxy=proxy,
        connect_host=options.pin_address or request.target.host,
        starttls=options.starttls,
        domain=options.sni or request.target.host,
    )
