"""STARTTLS before the handshake: real servers on loopback, judged against `openssl s_client -starttls`.

SMTP is aiosmtpd (a real SMTP server with STARTTLS), PostgreSQL a real cluster, LDAP the lab's small
server that implements the StartTLS extended operation (slapd is not installed here; see
`coordinator/lab/starttls_servers.py`); IMAP, POP3, FTP, XMPP and MySQL are scripted dialogues followed by
a real TLS handshake. For each, the agent's verdict and
served chain must be what s_client concludes against the same server. Then the failures: a server that
does not offer STARTTLS, one that stalls mid-exchange, garbage replies.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator

import pytest

from tlsfleet.agent.model import AddressResult, Failure, ProbeOptions, ProbeRequest, Starttls, Target, Verdict
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
    port: int, cache: ContextCache, protocol: Starttls, *, connect_timeout: float = 3.0, name: str = NAME
) -> AddressResult:
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=name,
            expected_name=name,
            connect_timeout=connect_timeout,
            handshake_timeout=3.0,
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
    assert "'N' (ssl is off)" in result.connect_error


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
    assert "resultCode 52 (unavailable)" in result.connect_error


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
        result = probe(server.port, cache, Starttls.SMTP, connect_timeout=0.5)
        took = time.perf_counter() - started
    assert result.connect_failure is Failure.STARTTLS_TIMEOUT, result.connect_error
    assert "smtp STARTTLS did not finish within" in result.connect_error
    assert 0.4 < took < 1.5


GARBAGE: dict[str, tuple[Starttls, bytes, Callable[[bytes], Step | None]]] = {
    "smtp binary banner": (Starttls.SMTP, b"\x16\x03\x01\x00\x05hello\r\n", lambda r: Step(b"x\r\n")),
    "smtp EHLO nonsense": (Starttls.SMTP, b"220 ok\r\n", lambda r: Step(b"what is this\r\n")),
    "smtp endless reply": (
        Starttls.SMTP,
        b"220 ok\r\n",
        lambda r: Step(b"250-x\r\n" * (MAX_REPLY_LINES + 1)),
    ),
    "smtp line too long": (Starttls.SMTP, b"220-" + b"a" * 70_000 + b"\r\n", lambda r: None),
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
    assert "closed the connection during pop3 STARTTLS" in result.connect_error


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
    assert route == Route(proxy=None, connect_host="db.internal", starttls=Starttls.POSTGRES)
    assert route.dial("10.0.0.5", 5432) == ("10.0.0.5", 5432)
    assert route_for(ProbeRequest(Target("a.test", 443)), {"HTTPS_PROXY": "http://p:3128"}).direct


def test_wire_bytes_are_those_s_client_sends() -> None:
    # openssl s_client.c: ldap_tls_genconf, the 8-byte SSLRequest, the 36-byte MySQL SSLRequest.
    assert LDAP_STARTTLS_REQUEST.hex() == "301d02010177188016" + b"1.3.6.1.4.1.1466.20037".hex()
    assert bytes.fromhex("0000000804d2162f") == POSTGRES_SSL_REQUEST
    assert len(MYSQL_SSL_REQUEST) == 36 and MYSQL_SSL_REQUEST[4:6] == b"\x85\xae"
