"""STARTTLS before the handshake: real servers on loopback, judged against `openssl s_client -starttls`.

SMTP is aiosmtpd (a real SMTP server with STARTTLS), PostgreSQL a real cluster, LDAP the lab's small
server that implements the StartTLS extended operation (`coordinator/lab/starttls_servers.py`; Debian's
slapd, Postfix and Dovecot are in test_starttls_debian.py); IMAP, POP3, FTP, XMPP and MySQL are scripted
dialogues followed by a real TLS handshake. For each, the agent's verdict and served chain must be what
s_client concludes against the same server. Then the dialogue variants real
servers show (banners, refusals in each protocol's words, FTP's 334, Active Directory's BER lengths, MySQL
and PostgreSQL error greetings, XMPP stream errors), each held against s_client; and the failures: a
server that does not offer STARTTLS, one that stalls mid-exchange, garbage, replies that never end.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tlsfleet.agent.model import AddressResult, Failure, ProbeOptions, ProbeRequest, Starttls, Target, Verdict
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.starttls import (
    LDAP_STARTTLS_REQUEST,
    MAX_REPLY_LINES,
    MYSQL_SSL_REQUEST,
    POSTGRES_SSL_REQUEST,
    Route,
    infer_starttls,
    route_for,
)
from tlsfleet.coordinator.lab.corpus import OPENSSL
from tlsfleet.coordinator.lab.ground_truth import ClientTruth, s_client
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem
from tlsfleet.coordinator.lab.postgres_server import PostgresCluster, PostgresUnavailable
from tlsfleet.coordinator.lab.starttls_servers import LdapStartTlsServer, ScriptedServer, SmtpServer, Step
from tlsfleet.coordinator.lab.tls_server import ServedIdentity

NAME = "mail.starttls.test"
QUICK = 0.05  # s_client's read after the handshake: these servers send no post-handshake alert


@pytest.fixture(scope="module")
def leaf(pki: LabPKI) -> Issued:
    return pki.issue_leaf(NAME)


@pytest.fixture(scope="module")
def identity(pki: LabPKI, leaf: Issued) -> ServedIdentity:
    return ServedIdentity.of(leaf, pki.intermediate)


@pytest.fixture(scope="module")
def root_file(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_pem(tmp_path_factory.mktemp("roots") / "root.pem", pki.root.cert_pem))


@pytest.fixture(scope="module")
def cache(root_file: str) -> ContextCache:
    return ContextCache(cafile=root_file)


@pytest.fixture(scope="module")
def truth_env(root_file: str) -> dict[str, str]:
    """s_client with the same single root the agent's contexts trust."""
    return {**os.environ, "SSL_CERT_FILE": root_file, "SSL_CERT_DIR": "/nonexistent"}


def probe(
    port: int,
    cache: ContextCache,
    protocol: Starttls,
    *,
    connect_timeout: float = 3.0,
    handshake_timeout: float = 3.0,
    name: str = NAME,
) -> AddressResult:
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=name,
            expected_name=name,
            connect_timeout=connect_timeout,
            handshake_timeout=handshake_timeout,
            context_cache=cache,
            route=Route(connect_host=name, starttls=protocol),
        )
    )


def assert_agrees(result: AddressResult, truth: ClientTruth, leaf: Issued) -> None:
    assert truth.connected, truth.output
    assert result.connect_failure is Failure.NONE, result.connect_error
    assert result.handshake.failure is Failure.NONE, result.handshake.error
    assert result.native.verdict is Verdict.OK and truth.verify_code == 0
    assert result.handshake.tls_version == truth.protocol
    assert result.chain[0] == leaf.der


# --- the real servers ----------------------------------------------------------------------------


def test_smtp_starttls_agrees_with_s_client(identity: ServedIdentity, leaf: Issued, cache: ContextCache, truth_env):
    with SmtpServer(identity) as server:
        truth = s_client(server.host, server.port, servername=NAME, env=truth_env, starttls="smtp", linger=QUICK)
        result = probe(server.port, cache, Starttls.SMTP)
    assert_agrees(result, truth, leaf)
    assert len(result.chain) == 2


def test_smtp_starttls_untrusted_chain_agrees_with_s_client(pki: LabPKI, cache: ContextCache, truth_env) -> None:
    other = LabPKI("Elsewhere")
    stranger = other.issue_leaf(NAME)
    with SmtpServer(ServedIdentity.of(stranger, other.intermediate)) as server:
        truth = s_client(server.host, server.port, servername=NAME, env=truth_env, starttls="smtp", linger=QUICK)
        result = probe(server.port, cache, Starttls.SMTP)
    assert not truth.connected and truth.verify_code == 20, truth.output
    assert result.handshake.failure is Failure.CERT_VERIFY
    assert result.native.verify_code == truth.verify_code
    assert result.native.verdict is Verdict.UNKNOWN_ISSUER
    assert result.chain[0] == stranger.der  # the chain is captured though the verdict fails


def test_smtp_without_starttls_is_named(cache: ContextCache) -> None:
    with SmtpServer(None) as server:  # its EHLO lists no STARTTLS
        result = probe(server.port, cache, Starttls.SMTP)
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert "the server does not offer STARTTLS" in result.connect_error
    assert "EHLO" in result.connect_error
    assert result.native.verdict is Verdict.NO_CHAIN and not result.chain


@pytest.fixture(scope="module")
def postgres(identity: ServedIdentity) -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster(identity)
    except PostgresUnavailable as why:
        pytest.skip(f"PostgreSQL cannot run here: {why}")
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.mark.slow  # starts a PostgreSQL server
def test_postgres_ssl_on_agrees_with_s_client(postgres: PostgresCluster, leaf: Issued, cache, truth_env) -> None:
    try:
        postgres.start(ssl=True)
    except PostgresUnavailable as why:
        pytest.skip(f"PostgreSQL cannot run here: {why}")
    try:
        truth = s_client(
            postgres.host, postgres.port, servername=NAME, env=truth_env, starttls="postgres", linger=QUICK
        )
        result = probe(postgres.port, cache, Starttls.POSTGRES)
    finally:
        postgres.stop()
    assert_agrees(result, truth, leaf)


def test_postgres_ssl_off_does_not_offer_starttls(postgres: PostgresCluster, cache: ContextCache, truth_env) -> None:
    try:
        postgres.start(ssl=False)
    except PostgresUnavailable as why:
        pytest.skip(f"PostgreSQL cannot run here: {why}")
    try:
        truth = s_client(
            postgres.host, postgres.port, servername=NAME, env=truth_env, starttls="postgres", linger=QUICK
        )
        result = probe(postgres.port, cache, Starttls.POSTGRES)
    finally:
        postgres.stop()
    assert not truth.connected
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert result.connect_error == "the server refused STARTTLS: it answered the SSLRequest with 'N' (ssl is off)"


def test_ldap_starttls_agrees_with_s_client(identity: ServedIdentity, leaf: Issued, cache, truth_env) -> None:
    with LdapStartTlsServer(identity) as server:
        truth = s_client(server.host, server.port, servername=NAME, env=truth_env, starttls="ldap", linger=QUICK)
        result = probe(server.port, cache, Starttls.LDAP)
    assert_agrees(result, truth, leaf)


def test_ldap_refusal_is_named_with_its_result_code(identity: ServedIdentity, cache, truth_env) -> None:
    with LdapStartTlsServer(identity, result_code=52) as server:
        truth = s_client(server.host, server.port, servername=NAME, env=truth_env, starttls="ldap", linger=QUICK)
        result = probe(server.port, cache, Starttls.LDAP)
    assert not truth.connected
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert result.connect_error.startswith("the server refused STARTTLS: StartTLS answered resultCode 52 (unavailable)")


# --- scripted dialogues, then real TLS -------------------------------------------------------------


def _lines(*pairs: tuple[bytes, bytes], tls_after: bytes) -> Callable[[bytes], Step | None]:
    """Answer each request that starts with a key; the one starting with `tls_after` opens TLS."""

    def answer(request: bytes) -> Step | None:
        for start, reply in pairs:
            if request.upper().startswith(start):
                return Step(reply, tls=start == tls_after)
        return Step(b"500 unknown\r\n")

    return answer


def _mysql_greeting(capabilities: int) -> bytes:
    payload = (
        b"\x0a8.0.36\x00"
        + (7).to_bytes(4, "little")
        + b"abcdefgh"
        + b"\x00"
        + (capabilities & 0xFFFF).to_bytes(2, "little")
        + b"\x21\x02\x00"
        + (capabilities >> 16).to_bytes(2, "little")
        + b"\x15"
        + bytes(10)
        + b"ijklmnopqrst\x00mysql_native_password\x00"
    )
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


def _xmpp_answer(request: bytes) -> Step | None:
    if request.startswith(b"<stream:stream"):
        return Step(
            b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='1' "
            b"version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
            b"</starttls></stream:features>"
        )
    if request.startswith(b"<starttls"):
        return Step(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", tls=True)
    return None


SCRIPTS: dict[Starttls, tuple[bytes, Callable[[bytes], Step | None], int]] = {
    Starttls.IMAP: (
        b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
        _lines(
            (b". CAPABILITY", b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n. OK done\r\n"),
            (b". STARTTLS", b". OK Begin TLS negotiation now\r\n"),
            tls_after=b". STARTTLS",
        ),
        0,
    ),
    Starttls.POP3: (b"+OK POP3 ready\r\n", _lines((b"STLS", b"+OK Begin TLS\r\n"), tls_after=b"STLS"), 0),
    Starttls.FTP: (
        b"220-Welcome\r\n220 FTP ready\r\n",
        _lines((b"AUTH TLS", b"234 AUTH TLS successful\r\n"), tls_after=b"AUTH TLS"),
        0,
    ),
    Starttls.XMPP: (b"", _xmpp_answer, 0),
    # CLIENT_SSL (0x800) among the capabilities; the client's SSLRequest is 36 bytes, then its ClientHello.
    Starttls.MYSQL: (_mysql_greeting(0xF7FF | 0x0800), lambda request: Step(b"", tls=True), len(MYSQL_SSL_REQUEST)),
}


@pytest.mark.parametrize("protocol", list(SCRIPTS), ids=str)
def test_scripted_protocols_agree_with_s_client(
    protocol: Starttls, identity: ServedIdentity, leaf: Issued, cache: ContextCache, truth_env
) -> None:
    greeting, answer, size = SCRIPTS[protocol]
    with ScriptedServer(greeting, answer, identity=identity, request_size=size) as server:
        truth = s_client(
            server.host, server.port, servername=NAME, env=truth_env, starttls=protocol.value, linger=QUICK
        )
        result = probe(server.port, cache, protocol)
    assert_agrees(result, truth, leaf)


def test_mysql_without_client_ssl_does_not_offer_starttls(cache: ContextCache) -> None:
    with ScriptedServer(_mysql_greeting(0xF7FF), lambda request: None, request_size=36) as server:
        result = probe(server.port, cache, Starttls.MYSQL)
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert "CLIENT_SSL" in result.connect_error


# --- failures --------------------------------------------------------------------------------------


def test_a_stall_mid_starttls_ends_at_the_deadline(cache: ContextCache) -> None:
    ehlo = _lines((b"EHLO", b"250-lab\r\n250 STARTTLS\r\n"), tls_after=b"-")

    def answer(request: bytes) -> Step | None:
        return None if request.startswith(b"STARTTLS") else ehlo(request)

    with ScriptedServer(b"220 lab ESMTP\r\n", answer) as server:
        started = time.perf_counter()
        # The dialogue's budget: the connect's, and the handshake's beyond its reserve (here none).
        result = probe(server.port, cache, Starttls.SMTP, connect_timeout=0.5, handshake_timeout=2.0)
        took = time.perf_counter() - started
    assert result.connect_failure is Failure.STARTTLS_TIMEOUT, result.connect_error
    assert "smtp STARTTLS did not finish within" in result.connect_error
    assert result.connect_error.endswith(": no answer to 'STARTTLS'")
    assert 0.4 < took < 1.5


@pytest.mark.slow  # the server holds its greeting back, s_client and the agent wait
def test_a_greeting_held_back_as_postscreen_does_is_awaited_and_told(
    identity: ServedIdentity, leaf: Issued, cache: ContextCache, truth_env
) -> None:
    """Postfix's postscreen sends `220-`, then the rest after its greet wait: s_client waits; so does the
    agent, past its connect budget into what the handshake will not need, and past that it says what the
    server sent last."""
    answer = _lines(_EHLO, (b"STARTTLS", b"220 go\r\n"), tls_after=b"STARTTLS")
    greeting = b"220-mail.lab ESMTP\r\n220 mail.lab ESMTP Postfix\r\n"
    with ScriptedServer(greeting, answer, identity=identity, pause=0.8) as server:
        truth = s_client(server.host, server.port, servername=NAME, env=truth_env, starttls="smtp", linger=QUICK)
        waited = probe(server.port, cache, Starttls.SMTP, connect_timeout=0.3, handshake_timeout=3.0)
        hurried = probe(server.port, cache, Starttls.SMTP, connect_timeout=0.3, handshake_timeout=1.0)
    assert_agrees(waited, truth, leaf)
    assert hurried.connect_failure is Failure.STARTTLS_TIMEOUT
    assert hurried.connect_error.endswith(": the server's last line was '220-mail.lab ESMTP', then nothing more")


GARBAGE: dict[str, tuple[Starttls, bytes, Callable[[bytes], Step | None]]] = {
    "smtp binary banner": (Starttls.SMTP, b"\x16\x03\x01\x00\x05hello\r\n", lambda r: Step(b"x\r\n")),
    "smtp EHLO nonsense": (Starttls.SMTP, b"220 ok\r\n", lambda r: Step(b"what is this\r\n")),
    "smtp endless reply": (
        Starttls.SMTP,
        b"220 ok\r\n",
        lambda r: Step(b"250-x\r\n" * (MAX_REPLY_LINES + 1)),
    ),
    "smtp line too long": (Starttls.SMTP, b"220-" + b"a" * 70_000 + b"\r\n", lambda r: None),
    "smtp 1 MB line": (Starttls.SMTP, b"220-" + b"a" * 1_000_000, lambda r: None),
    "smtp endless 220- greeting": (Starttls.SMTP, b"220-more\r\n" * 100_000, lambda r: None),
    "ftp endless 220- greeting": (Starttls.FTP, b"220-more\r\n" * 100_000, lambda r: None),
    "postgres other byte": (Starttls.POSTGRES, b"", lambda r: Step(b"HTTP/1.1 400 Bad Request\r\n")),
    "ldap not ber": (Starttls.LDAP, b"", lambda r: Step(b"220 this is smtp\r\n")),
    "imap http": (Starttls.IMAP, b"HTTP/1.1 200 OK\r\n", lambda r: Step(b"\r\n")),
    "xmpp stream ended": (Starttls.XMPP, b"", lambda r: Step(b"<stream:stream></stream:stream>")),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_replies_are_not_understood(case: str, cache: ContextCache) -> None:
    protocol, greeting, answer = GARBAGE[case]
    with ScriptedServer(greeting, answer) as server:
        result = probe(server.port, cache, protocol, connect_timeout=2.0)
    assert result.connect_failure is Failure.STARTTLS_BAD_REPLY, result.connect_error
    assert result.connect_error.startswith("the server's STARTTLS reply was not understood")
    assert result.connect_error and "\x16" not in result.connect_error


def test_a_server_that_closes_mid_starttls(cache: ContextCache) -> None:
    with ScriptedServer(b"+OK POP3 ready\r\n", lambda r: Step(b"", close=True)) as server:
        result = probe(server.port, cache, Starttls.POP3)
    assert result.connect_failure is Failure.STARTTLS_BAD_REPLY
    assert result.connect_error == "the server closed the connection during pop3 STARTTLS: no answer to 'STLS'"


# --- dialogue variants of real servers, against s_client -------------------------------------------


@functools.cache
def s_client_lacks(protocol: str) -> str | None:
    """Why this host's openssl cannot be the yardstick for `protocol` (None: it speaks it)."""
    done = subprocess.run(
        [OPENSSL, "s_client", "-starttls", protocol, "-connect", "127.0.0.1:9"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=15,
    )
    if "Value must be one of" in done.stdout + done.stderr:
        return f"{OPENSSL} s_client has no -starttls {protocol}"
    return None


LabServer = Callable[[ServedIdentity], ScriptedServer | LdapStartTlsServer]


def _scripted(greeting: bytes, answer: Callable[[bytes], Step | None], size: int = 0) -> LabServer:
    return lambda identity: ScriptedServer(greeting, answer, identity=identity, request_size=size)


def _ldap(**answer: Any) -> LabServer:
    return lambda identity: LdapStartTlsServer(identity, **answer)


@dataclass(frozen=True)
class Variant:
    """A server's dialogue; `s_client_upgrades` is what `openssl s_client -starttls` concludes against it,
    `refused` the agent's failure and the words it must say (None: it upgrades, as s_client does)."""

    protocol: Starttls
    server: LabServer
    s_client_upgrades: bool
    refused: tuple[Failure, str] | None = None


def _mysql_error(code: int, message: bytes, state: bytes = b"") -> bytes:
    payload = b"\xff" + code.to_bytes(2, "little") + (b"#" + state if state else b"") + message
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


def _postgres_error(message: bytes) -> bytes:
    fields = b"SFATAL\x00C0A000\x00M" + message + b"\x00\x00"
    return b"E" + (len(fields) + 4).to_bytes(4, "big") + fields


_EHLO = (b"EHLO", b"250-mail.lab\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
_CAPABILITY = (b". CAPABILITY", b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n. OK done\r\n")
_STREAM = (
    b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
    b"xmlns='jabber:client' id='1' from='lab' version='1.0'>"
)
_UNSUPPORTED, _REFUSED, _BAD = Failure.STARTTLS_UNSUPPORTED, Failure.STARTTLS_REFUSED, Failure.STARTTLS_BAD_REPLY
_AWAY = "the server turned the session away before STARTTLS: "
_DENIED = "the server refused STARTTLS: "  # it was asked to start TLS and said no


def _xmpp(features: bytes, after: Step | None = None) -> Callable[[bytes], Step | None]:
    def answer(request: bytes) -> Step | None:
        if request.startswith(b"<stream:stream"):
            return Step(_STREAM + features, close=after is None)
        return after if request.startswith(b"<starttls") else None

    return answer


VARIANTS: dict[str, Variant] = {
    # Postfix/Exim banners: 220- continuation lines; an EHLO reply with starttls in lower case, not last.
    "smtp multi-line greeting, lower-case starttls": Variant(
        Starttls.SMTP,
        _scripted(
            b"220-mail.lab ESMTP\r\n220-no UCE\r\n220 ready\r\n",
            _lines(
                (b"EHLO", b"250-mail.lab\r\n250-starttls\r\n250 8BITMIME\r\n"),
                (b"STARTTLS", b"220 2.0.0 go\r\n"),
                tls_after=b"STARTTLS",
            ),
        ),
        True,
    ),
    "smtp 454": Variant(
        Starttls.SMTP,
        _scripted(
            b"220 ok\r\n",
            _lines(_EHLO, (b"STARTTLS", b"454 4.7.0 TLS not available due to local problem\r\n"), tls_after=b"-"),
        ),
        False,
        (_UNSUPPORTED, _DENIED + "STARTTLS answered '454 4.7.0 TLS not available due to local problem', not 220"),
    ),
    "smtp 421 greeting": Variant(
        Starttls.SMTP,
        _scripted(b"421 4.3.2 too many connections\r\n", lambda r: Step(b"", close=True)),
        False,
        (_REFUSED, _AWAY + "its greeting is '421 4.3.2 too many connections'"),
    ),
    "smtp 421 to EHLO": Variant(
        Starttls.SMTP,
        _scripted(b"220 ok\r\n", lambda r: Step(b"421 4.7.0 Try again later, closing connection\r\n", close=True)),
        False,
        (_REFUSED, _AWAY + "EHLO mail.example.com answered '421 4.7.0 Try again later, closing connection'"),
    ),
    # s_client sends STARTTLS anyway and this server takes it; curl and mail clients stop at the refused EHLO.
    "smtp EHLO refused": Variant(
        Starttls.SMTP,
        _scripted(
            b"220 ok\r\n",
            _lines(
                (b"EHLO", b"502 5.5.2 EHLO not understood\r\n"),
                (b"STARTTLS", b"220 go\r\n"),
                tls_after=b"STARTTLS",
            ),
        ),
        True,
        (_UNSUPPORTED, "EHLO mail.example.com answered '502 5.5.2 EHLO not understood', so it lists no extensions"),
    ),
    # s_client tries anyway (and this server accepts); curl refuses, and so does the agent.
    "smtp STARTTLS not listed": Variant(
        Starttls.SMTP,
        _scripted(
            b"220 ok\r\n",
            _lines((b"EHLO", b"250-mail.lab\r\n250 8BITMIME\r\n"), (b"STARTTLS", b"220 go\r\n"), tls_after=b"STARTTLS"),
        ),
        True,
        (_UNSUPPORTED, "STARTTLS is not among the extensions its EHLO reply lists"),
    ),
    "imap STARTTLS not among the capabilities": Variant(
        Starttls.IMAP,
        _scripted(
            b"* OK ready\r\n",
            _lines(
                (b". CAPABILITY", b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n. OK done\r\n"),
                (b". STARTTLS", b". OK go\r\n"),
                tls_after=b". STARTTLS",
            ),
        ),
        True,
        (_UNSUPPORTED, "STARTTLS is not among its capabilities"),
    ),
    "imap BYE greeting": Variant(
        Starttls.IMAP,
        _scripted(b"* BYE Too many connections from your IP\r\n", lambda r: Step(b"", close=True)),
        False,
        (_REFUSED, _AWAY + "its greeting is '* BYE Too many connections from your IP'"),
    ),
    "imap BYE to CAPABILITY": Variant(
        Starttls.IMAP,
        _scripted(b"* OK ready\r\n", lambda r: Step(b"* BYE Server shutting down\r\n", close=True)),
        False,
        (_REFUSED, _AWAY + "CAPABILITY answered '* BYE Server shutting down'"),
    ),
    "imap PREAUTH": Variant(
        Starttls.IMAP,
        _scripted(
            b"* PREAUTH [CAPABILITY IMAP4rev1] logged in\r\n",
            _lines(_CAPABILITY, (b". STARTTLS", b". BAD not in authenticated state\r\n"), tls_after=b"-"),
        ),
        False,
        (_UNSUPPORTED, "it greets with PREAUTH"),
    ),
    "imap tagged NO": Variant(
        Starttls.IMAP,
        _scripted(
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
            _lines(_CAPABILITY, (b". STARTTLS", b". NO [UNAVAILABLE] TLS is not configured\r\n"), tls_after=b"-"),
        ),
        False,
        (_UNSUPPORTED, _DENIED + "STARTTLS answered '. NO [UNAVAILABLE] TLS is not configured'"),
    ),
    "pop3 -ERR greeting": Variant(
        Starttls.POP3,
        _scripted(b"-ERR [SYS/TEMP] too many connections\r\n", lambda r: Step(b"", close=True)),
        False,
        (_REFUSED, _AWAY + "its greeting is '-ERR [SYS/TEMP] too many connections'"),
    ),
    "pop3 STLS refused": Variant(
        Starttls.POP3,
        _scripted(b"+OK ready\r\n", _lines((b"STLS", b"-ERR Command not permitted\r\n"), tls_after=b"-")),
        False,
        (_UNSUPPORTED, _DENIED + "STLS answered '-ERR Command not permitted'"),
    ),
    # ProFTPD-style banner and a multi-line 234.
    "ftp multi-line 220 and 234": Variant(
        Starttls.FTP,
        _scripted(
            b"220-Welcome\r\n220-  to the lab\r\n220 ProFTPD Server ready.\r\n",
            _lines((b"AUTH TLS", b"234-AUTH TLS ok\r\n234 go\r\n"), tls_after=b"AUTH TLS"),
        ),
        True,
    ),
    # Older servers answer AUTH TLS with 334, which curl accepts (and s_client reads no code).
    "ftp AUTH TLS 334": Variant(
        Starttls.FTP,
        _scripted(b"220 ready\r\n", _lines((b"AUTH TLS", b"334 AUTH TLS ok\r\n"), tls_after=b"AUTH TLS")),
        True,
    ),
    "ftp AUTH TLS 500": Variant(
        Starttls.FTP,
        _scripted(b"220 ready\r\n", _lines((b"AUTH", b"500 AUTH not understood\r\n"), tls_after=b"-")),
        False,
        (_UNSUPPORTED, "the server does not offer STARTTLS: AUTH TLS answered '500 AUTH not understood', not 234"),
    ),
    "ftp AUTH TLS 534": Variant(
        Starttls.FTP,
        _scripted(b"220 ready\r\n", _lines((b"AUTH", b"534 Request denied for policy reasons.\r\n"), tls_after=b"-")),
        False,
        (_UNSUPPORTED, _DENIED + "AUTH TLS answered '534 Request denied for policy reasons.', not 234"),
    ),
    "ftp 421 greeting": Variant(
        Starttls.FTP,
        _scripted(b"421 There are too many connected users\r\n", lambda r: Step(b"", close=True)),
        False,
        (_REFUSED, _AWAY + "its greeting is '421 There are too many connected users'"),
    ),
    "xmpp empty stream features": Variant(
        Starttls.XMPP, _scripted(b"", _xmpp(b"<stream:features/>")), False, (_UNSUPPORTED, "list no starttls")
    ),
    "xmpp stream error host-unknown": Variant(
        Starttls.XMPP,
        _scripted(
            b"",
            _xmpp(
                b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text "
                b"xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no such domain</text></stream:error>"
            ),
        ),
        False,
        (_REFUSED, _AWAY + f"the stream error host-unknown ('no such domain'): it serves no domain '{NAME}'"),
    ),
    "xmpp failure": Variant(
        Starttls.XMPP,
        _scripted(
            b"",
            _xmpp(
                b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
                Step(b" <failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>", close=True),
            ),
        ),
        False,
        (_UNSUPPORTED, _DENIED + "starttls answered \"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
    ),
    # Active Directory writes every BER length in four octets.
    "ldap four-octet lengths": Variant(Starttls.LDAP, _ldap(long_lengths=True), True),
    "ldap protocolError with its diagnostic": Variant(
        Starttls.LDAP,
        _ldap(result_code=2, diagnostic=b"unsupported extended operation"),
        False,
        (_UNSUPPORTED, _DENIED + "StartTLS answered resultCode 2 (protocolError): 'unsupported extended operation'"),
    ),
    "ldap notice of disconnection": Variant(
        Starttls.LDAP,
        _ldap(result_code=52, diagnostic=b"shutting down", message_id=0),
        False,
        (_REFUSED, _AWAY + "it sent a Notice of Disconnection, resultCode 52 (unavailable): 'shutting down'"),
    ),
    # s_client skips the messageID; libldap (ldapsearch -ZZ, curl) waits on for its own and never upgrades.
    "ldap another messageID": Variant(
        Starttls.LDAP,
        _ldap(message_id=2),
        True,
        (_BAD, "an ExtendedResponse to messageID 2, not the StartTLS request's 1"),
    ),
    "mysql 1130 host not allowed": Variant(
        Starttls.MYSQL,
        _scripted(_mysql_error(1130, b"Host '127.0.0.1' is not allowed to connect"), lambda r: None, 36),
        False,
        (_REFUSED, _AWAY + "it greets with MySQL error 1130: \"Host '127.0.0.1' is not allowed to connect\""),
    ),
    "mysql short error greeting": Variant(
        Starttls.MYSQL,
        _scripted(_mysql_error(1040, b"busy", b"08004"), lambda r: None, 36),
        False,
        (_REFUSED, _AWAY + "it greets with MySQL error 1040: 'busy'"),
    ),
    "mysql protocol version 9": Variant(
        Starttls.MYSQL,
        _scripted(b"\x18\x00\x00\x00\x093.21.33\x00" + bytes(4) + b"abcdefgh\x00\xff\xf7", lambda r: None, 36),
        False,
        (_UNSUPPORTED, "it speaks MySQL protocol version 9, which has no SSL"),
    ),
    "postgres ErrorResponse": Variant(
        Starttls.POSTGRES,
        _scripted(b"", lambda r: Step(_postgres_error(b"unsupported frontend protocol 1234.5679"), close=True), 8),
        False,
        (_UNSUPPORTED, "it answered the SSLRequest with an error: 'unsupported frontend protocol 1234.5679'"),
    ),
}


@pytest.mark.parametrize("case", list(VARIANTS))
def test_dialogue_variants_against_s_client(
    case: str, identity: ServedIdentity, leaf: Issued, cache: ContextCache, truth_env
) -> None:
    variant = VARIANTS[case]
    protocol = variant.protocol.value
    lacks = s_client_lacks(protocol)
    with variant.server(identity) as server:
        if lacks is None:
            truth = s_client(server.host, server.port, servername=NAME, env=truth_env, starttls=protocol, linger=QUICK)
            assert truth.connected is variant.s_client_upgrades, truth.output
        result = probe(server.port, cache, variant.protocol)
    if variant.refused is None:
        assert result.connect_failure is Failure.NONE, result.connect_error
        assert result.handshake.failure is Failure.NONE and result.native.verdict is Verdict.OK
        assert result.chain[0] == leaf.der
    else:
        failure, words = variant.refused
        assert result.connect_failure is failure, result.connect_error
        assert words in result.connect_error
        assert not result.chain
    if lacks is not None:
        pytest.skip(f"the agent's side checked, but not compared with s_client: {lacks}")


def test_xmpp_names_the_targets_domain_though_the_address_is_pinned(
    identity: ServedIdentity, leaf: Issued, root_file: str
) -> None:
    """Prosody and ejabberd answer a `to` they do not serve (here: the pinned address) with host-unknown."""
    asked: list[bytes] = []

    def answer(request: bytes) -> Step | None:
        if request.startswith(b"<stream:stream"):
            asked.append(request)
            if f"to='{NAME}'".encode() not in request:
                return _xmpp(
                    b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
                )(request)
        return _xmpp(
            b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
            b"</stream:features>",
            Step(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", tls=True),
        )(request)

    engine = ProbeEngine(environ={}, native_cafile=root_file)
    options = ProbeOptions(starttls=Starttls.XMPP, pin_address="127.0.0.1")
    with ScriptedServer(b"", answer, identity=identity) as server:
        result = asyncio.run(engine.probe(ProbeRequest(Target(NAME, server.port), options, request_id="x-1")))
    (address,) = result.addresses
    assert address.connect_failure is Failure.NONE, address.connect_error
    assert address.chain[0] == leaf.der
    assert f"to='{NAME}'".encode() in asked[0]


@pytest.mark.slow  # the server holds its greeting back
def test_a_held_back_greeting_may_take_what_resolution_left_of_the_budget(
    identity: ServedIdentity, leaf: Issued, root_file: str
) -> None:
    """A pinned address resolves nothing: its resolution budget goes to the dialogue (a postscreen's 6 s fit in
    the default 10 s probe: 3 s resolution, 2 s connect, 4 s handshake)."""
    answer = _lines(_EHLO, (b"STARTTLS", b"220 go\r\n"), tls_after=b"STARTTLS")
    greeting = b"220-mail.lab ESMTP\r\n220 mail.lab ESMTP Postfix\r\n"
    engine = ProbeEngine(environ={}, native_cafile=root_file)
    # Without the resolution's second the dialogue would have 0.2 + 2.5 - 2.0 = 0.7 s, short of the pause.
    timeouts = {"resolve_timeout": 1.0, "connect_timeout": 0.2, "handshake_timeout": 2.5}
    options = ProbeOptions(starttls=Starttls.SMTP, pin_address="127.0.0.1", **timeouts)
    with ScriptedServer(greeting, answer, identity=identity, pause=0.9) as server:
        result = asyncio.run(engine.probe(ProbeRequest(Target(NAME, server.port), options, request_id="ps-1")))
    (address,) = result.addresses
    assert address.connect_failure is Failure.NONE, address.connect_error
    assert address.chain[0] == leaf.der


# --- inference, requests, wire bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (5432, Starttls.POSTGRES),
        (25, Starttls.SMTP),
        (587, Starttls.SMTP),
        (143, Starttls.IMAP),
        (110, Starttls.POP3),
        (21, Starttls.FTP),
        (389, Starttls.LDAP),
        (3306, Starttls.MYSQL),
        (5222, Starttls.XMPP),
        (465, Starttls.NONE),
        (993, Starttls.NONE),
        (995, Starttls.NONE),
        (636, Starttls.NONE),
        (443, Starttls.NONE),
        (8443, Starttls.NONE),
    ],
)
def test_protocol_inferred_from_well_known_ports(port: int, expected: Starttls) -> None:
    assert infer_starttls(port) is expected


def test_route_for_a_request_without_proxy() -> None:
    request = ProbeRequest(Target("db.internal", 5432), ProbeOptions(starttls=Starttls.POSTGRES, via_proxy=True))
    route = route_for(request, {})
    assert route == Route(proxy=None, connect_host="db.internal", starttls=Starttls.POSTGRES, domain="db.internal")
    assert route.dial("10.0.0.5", 5432) == ("10.0.0.5", 5432)
    assert route_for(ProbeRequest(Target("a.test", 443)), {"HTTPS_PROXY": "http://p:3128"}).direct


def test_a_pinned_address_does_not_replace_the_domain_the_protocol_names() -> None:
    """XMPP's `to` is the domain the server serves: the target's host (or --sni), never --address."""
    pinned = ProbeOptions(starttls=Starttls.XMPP, pin_address="10.0.0.5")
    assert route_for(ProbeRequest(Target("chat.corp", 5222), pinned), {}).domain == "chat.corp"
    told = ProbeOptions(starttls=Starttls.XMPP, pin_address="10.0.0.5", sni="corp")
    assert route_for(ProbeRequest(Target("xmpp.corp", 5222), told), {}).domain == "corp"


def test_wire_bytes_are_those_s_client_sends() -> None:
    # openssl s_client.c: ldap_tls_genconf, the 8-byte SSLRequest, the 36-byte MySQL SSLRequest.
    assert LDAP_STARTTLS_REQUEST.hex() == "301d02010177188016" + b"1.3.6.1.4.1.1466.20037".hex()
    assert bytes.fromhex("0000000804d2162f") == POSTGRES_SSL_REQUEST
    assert len(MYSQL_SSL_REQUEST) == 36 and MYSQL_SSL_REQUEST[4:6] == b"\x85\xae"
