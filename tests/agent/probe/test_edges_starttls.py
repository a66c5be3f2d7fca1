"""A server that offers STARTTLS and refuses it when asked (SMTP's 454, IMAP's NO and BAD, POP3's -ERR, an LDAP
resultCode, PostgreSQL's 'N'): the probe says the server refused STARTTLS, quoting its reply bounded and
printable, and the diagnosis says so too, not a protocol or version mismatch (which is what `openssl s_client`
reports: it sends its ClientHello anyway and reads the server's plaintext answer as a record of a wrong
version). curl, which stops at the refusal ("STARTTLS denied"), is the yardstick where it speaks the protocol.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsfleet.agent.model import AddressResult, Failure, Starttls
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.starttls import MAX_LINE_BYTES, REFUSED_STARTTLS, Route
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.background_server import BackgroundServer
from tlsfleet.coordinator.lab.corpus import OPENSSL
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.starttls_servers import LdapStartTlsServer, ScriptedServer, SmtpServer, Step
from tlsfleet.coordinator.lab.tls_server import ServedIdentity

NAME = "mail.lab.test"
POSTFIX_454 = "454 4.7.0 TLS not available due to local problem"


@pytest.fixture(scope="module")
def identity(pki: LabPKI) -> ServedIdentity:
    return ServedIdentity.of(pki.issue_leaf(NAME), pki.intermediate)


@pytest.fixture(scope="module")
def root_file(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pem(tmp_path_factory.mktemp("roots") / "root.pem", pki.root.cert_pem)


def _probe(port: int, root_file: Path, protocol: Starttls) -> AddressResult:
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=NAME,
            expected_name=NAME,
            connect_timeout=3.0,
            handshake_timeout=3.0,
            context_cache=ContextCache(cafile=str(root_file)),
            route=Route(connect_host=NAME, starttls=protocol),
        )
    )


def _tagged(answers: dict[bytes, bytes]) -> Callable[[bytes], Step | None]:
    """IMAP answers under the tag of the command they answer (curl tags A001, s_client and the agent '.')."""

    def answer(request: bytes) -> Step | None:
        tag, _, command = request.rstrip(b"\r\n").partition(b" ")
        for verb, reply in answers.items():
            if command.upper().startswith(verb):
                return Step(reply.replace(b"TAG", tag))
        return Step(tag + b" OK bye\r\n", close=True)

    return answer


def _pop3(request: bytes) -> Step | None:
    if request.upper().startswith(b"STLS"):
        return Step(b"-ERR TLS is not available on this server\r\n")
    if request.upper().startswith(b"CAPA"):
        return Step(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n")
    return Step(b"+OK bye\r\n", close=True)


_IMAP_CAPABILITY = b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\nTAG OK done\r\n"
Server = Callable[[ServedIdentity], BackgroundServer]
# name: (protocol, the lab server, curl's URL scheme or None, the agent's words after REFUSED_STARTTLS)
CASES: dict[str, tuple[Starttls, Server, str | None, str]] = {
    "smtp 454": (
        Starttls.SMTP,
        lambda identity: SmtpServer(identity, refuse_starttls=POSTFIX_454),
        "smtp",
        f"STARTTLS answered '{POSTFIX_454}', not 220",
    ),
    "imap NO": (
        Starttls.IMAP,
        lambda identity: ScriptedServer(
            b"* OK ready\r\n",
            _tagged({b"CAPABILITY": _IMAP_CAPABILITY, b"STARTTLS": b"TAG NO [UNAVAILABLE] TLS is not configured\r\n"}),
        ),
        "imap",
        "STARTTLS answered '. NO [UNAVAILABLE] TLS is not configured'",
    ),
    "imap BAD": (
        Starttls.IMAP,
        lambda identity: ScriptedServer(
            b"* OK ready\r\n",
            _tagged({b"CAPABILITY": _IMAP_CAPABILITY, b"STARTTLS": b"TAG BAD TLS support isn't enabled\r\n"}),
        ),
        "imap",
        'STARTTLS answered ". BAD TLS support isn\'t enabled"',
    ),
    "pop3 -ERR": (
        Starttls.POP3,
        lambda identity: ScriptedServer(b"+OK ready\r\n", _pop3),
        "pop3",
        "STLS answered '-ERR TLS is not available on this server'",
    ),
    "ldap unavailable": (
        Starttls.LDAP,
        lambda identity: LdapStartTlsServer(identity, result_code=52, diagnostic=b"Could not initialize TLS"),
        None,
        "StartTLS answered resultCode 52 (unavailable): 'Could not initialize TLS'",
    ),
    "postgres N": (
        Starttls.POSTGRES,
        lambda identity: ScriptedServer(b"", lambda request: Step(b"N"), request_size=8),
        None,
        "it answered the SSLRequest with 'N' (ssl is off)",
    ),
}


def _curl(url: str) -> str:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed on this host")
    done = subprocess.run(
        [curl, "-sv", "--ssl-reqd", "--max-time", "10", url], capture_output=True, text=True, timeout=30
    )
    return done.stderr


def _s_client(port: int, protocol: str) -> str:
    done = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", protocol, "-brief"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "CONNECTION ESTABLISHED" not in done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_starttls_is_said_so_with_the_servers_reply(
    case: str, identity: ServedIdentity, root_file: Path
) -> None:
    protocol, server, scheme, words = CASES[case]
    with server(identity) as running:
        seen = _s_client(running.port, protocol.value)
        curl = _curl(f"{scheme}://127.0.0.1:{running.port}/") if scheme else ""
        result = _probe(running.port, root_file, protocol)
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert result.connect_error == f"{REFUSED_STARTTLS}: {words}"
    assert "does not offer" not in result.connect_error and not result.chain
    if scheme:
        assert "STARTTLS denied" in curl, curl  # curl, too, stops at the server's refusal
    if protocol is Starttls.LDAP:
        assert "STARTTLS failed, LDAP Result Code: 52" in seen, seen
    if protocol is Starttls.SMTP:
        assert "wrong version number" in seen, seen  # s_client's reading, which the probe does not repeat


def test_a_long_refusal_with_control_characters_is_quoted_bounded_and_printable(
    identity: ServedIdentity, root_file: Path
) -> None:
    reply = "454 4.7.0 " + "\x1b[31mno\x07 TLS " * 300
    assert len(reply) < MAX_LINE_BYTES
    with SmtpServer(identity, refuse_starttls=reply) as running:
        curl = _curl(f"smtp://127.0.0.1:{running.port}/")
        result = _probe(running.port, root_file, Starttls.SMTP)
    assert "STARTTLS denied, code 454" in curl, curl
    error = result.connect_error
    assert error.startswith(f"{REFUSED_STARTTLS}: STARTTLS answered '454 4.7.0 ?[31mno? TLS ")
    assert len(error) < 200 and error.isprintable()


def test_smtp_without_starttls_in_its_ehlo_still_does_not_offer_it(root_file: Path) -> None:
    with SmtpServer(None) as running:
        curl = _curl(f"smtp://127.0.0.1:{running.port}/")
        result = _probe(running.port, root_file, Starttls.SMTP)
    assert "STARTTLS not supported" in curl and "STARTTLS denied" not in curl, curl
    assert result.connect_error == (
        "the server does not offer STARTTLS: STARTTLS is not among the extensions its EHLO reply lists"
    )


@pytest.mark.e2e
def test_the_finding_says_the_server_refused_starttls_and_curl_shows_it(
    identity: ServedIdentity, root_file: Path, tmp_path: Path
) -> None:
    with SmtpServer(identity, refuse_starttls=POSTFIX_454) as running:
        done = subprocess.run(
            [*tlsfleet_command(), "probe", f"127.0.0.1:{running.port}", "--starttls", "smtp", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=trust_env(tmp_path, root_file),
        )
        assert done.returncode == 1, done.stderr
        [finding] = [f for f in json.loads(done.stdout)["findings"] if f["cause"] == "unreachable"]
        curl_command, s_client_command = finding["reproduce"]
        shown = subprocess.run(
            shlex.split(curl_command), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    summary = finding["summary"]
    assert summary.startswith(
        f"127.0.0.1:{running.port} refused STARTTLS from every vantage at 127.0.0.1: STARTTLS answered "
        f"'{POSTFIX_454}', not 220. "
    )
    assert "not a protocol or version mismatch" in summary and "does not offer" not in summary
    assert finding["fix"].startswith(
        "Turn TLS on in the service, or repair it where it is on (Postfix `smtpd_tls_chain_files`"
    )
    assert finding["fix"].endswith("This probe spoke smtp.")
    assert curl_command == f"curl -v --ssl-reqd smtp://127.0.0.1:{running.port}/"
    assert "STARTTLS denied, code 454" in shown.stderr, shown.stderr
    assert s_client_command.startswith(f"openssl s_client -connect 127.0.0.1:{running.port} -starttls smtp")
