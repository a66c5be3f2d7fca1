"""A server that accepts STARTTLS and then says, in plain text, that its TLS cannot start.

Dovecot whose `ssl_key` does not fit its `ssl_cert` answers IMAP's STARTTLS with `. OK Begin TLS negotiation
now.`, then `* BYE [UNAVAILABLE] TLS initialization failed.` (POP3: `+OK ...`, then `-ERR [SYS/TEMP] TLS
initialization failed.`) and hangs up. `openssl s_client -starttls` and curl send their ClientHello, read
that line as a TLS record and report "wrong version number" (or, where it came in one segment with the OK,
s_client drops it and reads the close, curl a "weird server reply"); the probe quotes the server instead, as a
refusal of STARTTLS, so the finding sends the person on call to the server's certificate and key rather than
to "the port does not speak TLS". The words come with the acceptance (one read) or just after it (the
engine listens once more on a new connection).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from tlsfleet.agent.model import Failure, ProbeOptions, ProbeRequest, Starttls, Target, Verdict
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.starttls import REFUSED_STARTTLS, Route
from tlsfleet.coordinator.lab.agent_process import trust_env
from tlsfleet.coordinator.lab.debian_servers import MAIL_HOSTNAME, Dovecot
from tlsfleet.coordinator.lab.ground_truth import ClientTruth, s_client
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.starttls_servers import ScriptedServer, Step
from tlsfleet.coordinator.lab.tls_server import ServedIdentity

from .test_starttls_debian import _addresses, serving, tlsfleet_probe, unreachable

pytestmark = pytest.mark.e2e  # servers that talk and wait, and a real Dovecot, beside s_client and curl

NAME = MAIL_HOSTNAME
IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n"
IMAP_CAPABILITY = b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n. OK Pre-login capabilities listed.\r\n"
IMAP_OK = b". OK Begin TLS negotiation now.\r\n"
IMAP_BYE = b"* BYE [UNAVAILABLE] TLS initialization failed.\r\n"
POP3_OK = b"+OK Begin TLS negotiation now.\r\n"
POP3_ERR = b"-ERR [SYS/TEMP] TLS initialization failed.\r\n"
WRONG_VERSION_NUMBER = 267  # SSL_R_WRONG_VERSION_NUMBER: what OpenSSL makes of a line of text read as TLS
# SSL_R_UNEXPECTED_EOF_WHILE_READING: s_client's line buffer took the words in with the OK and dropped them
# when TLS began, then read the close.
UNEXPECTED_EOF = 294


@pytest.fixture(scope="module")
def root_file(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pem(tmp_path_factory.mktemp("roots") / "root.pem", pki.root.cert_pem)


@pytest.fixture(scope="module")
def truth_env(root_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return trust_env(tmp_path_factory.mktemp("trust"), root_file)


def _imap(words: bytes, *, later: bool) -> ScriptedServer:
    """Dovecot's IMAP dialogue, its STARTTLS answered OK and then `words` (with the OK, or just after)."""

    def answer(request: bytes) -> Step:
        if request.startswith(b". CAPABILITY"):
            return Step(IMAP_CAPABILITY)
        if request.startswith(b". STARTTLS"):
            return Step(IMAP_OK, later=words) if later else Step(IMAP_OK + words)
        return Step(b"", close=True)  # the ClientHello: hang up, having read it (no reset)

    return ScriptedServer(IMAP_GREETING, answer)


def _pop3_later() -> ScriptedServer:
    def answer(request: bytes) -> Step:
        return Step(POP3_OK, later=POP3_ERR) if request.startswith(b"STLS") else Step(b"", close=True)

    return ScriptedServer(b"+OK Dovecot (Debian) ready.\r\n", answer)


def _truth(port: int, protocol: Starttls, env: dict[str, str]) -> ClientTruth:
    return s_client("127.0.0.1", port, servername=NAME, env=env, starttls=protocol.value, linger=0.05)


def _assert_s_client_reads_the_words_as_tls(truth: ClientTruth, *, apart: bool | None = True) -> None:
    """s_client gets no TLS: words in a segment of their own it reads as a record (`apart`), words that came
    with the OK its line buffer drops; None: either, as a real server's segments fall."""
    expected = {True: {WRONG_VERSION_NUMBER}, False: {UNEXPECTED_EOF}, None: {WRONG_VERSION_NUMBER, UNEXPECTED_EOF}}
    assert not truth.connected and truth.reason in expected[apart], truth.output


def _curl(port: int, scheme: str, root: Path) -> subprocess.CompletedProcess[str] | None:
    if shutil.which("curl") is None:
        return None
    command = ["curl", "-sS", "--ssl-reqd", "--max-time", "5", "--cacert", str(root)]
    command += ["--resolve", f"{NAME}:{port}:127.0.0.1", f"{scheme}://{NAME}:{port}/"]
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)


def test_words_sent_with_the_acceptance_are_quoted_as_a_refusal(root_file: Path, truth_env) -> None:
    with _imap(IMAP_BYE, later=False) as server:
        truth = _truth(server.port, Starttls.IMAP, truth_env)
        result = asyncio.run(
            handshake(
                "127.0.0.1",
                server.port,
                server_hostname_for_sni=NAME,
                expected_name=NAME,
                connect_timeout=2.0,
                handshake_timeout=2.0,
                context_cache=ContextCache(cafile=str(root_file)),
                route=Route(connect_host=NAME, starttls=Starttls.IMAP),
            )
        )
    _assert_s_client_reads_the_words_as_tls(truth, apart=False)
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED, (result.connect_error, result.handshake)
    assert result.connect_error == (
        f"{REFUSED_STARTTLS}: it answered '. OK Begin TLS negotiation now.', "
        "then '* BYE [UNAVAILABLE] TLS initialization failed.'"
    )
    assert not result.chain and result.native.verdict is Verdict.NO_CHAIN


@pytest.mark.parametrize("protocol", [Starttls.IMAP, Starttls.POP3])
def test_words_just_after_the_acceptance_are_heard_on_a_second_dialogue(
    protocol: Starttls, root_file: Path, truth_env
) -> None:
    """The words in a write of their own, after the ClientHello has left: the handshake sees no TLS, and the
    engine's second dialogue, sending no ClientHello, hears them."""
    engine = ProbeEngine(environ={}, native_cafile=str(root_file))
    options = ProbeOptions(starttls=protocol, pin_address="127.0.0.1", connect_timeout=2.0, handshake_timeout=2.0)
    server = _imap(IMAP_BYE, later=True) if protocol is Starttls.IMAP else _pop3_later()
    with server:
        truth = _truth(server.port, protocol, truth_env)
        result = asyncio.run(engine.probe(ProbeRequest(Target(NAME, server.port), options, request_id="w-1")))
    _assert_s_client_reads_the_words_as_tls(truth)
    (address,) = result.addresses
    assert address.connect_failure is Failure.STARTTLS_UNSUPPORTED, (address.connect_error, address.handshake)
    ok, words = (IMAP_OK, IMAP_BYE) if protocol is Starttls.IMAP else (POP3_OK, POP3_ERR)
    said = (ok.decode().rstrip(), words.decode().rstrip())
    assert address.connect_error == f"{REFUSED_STARTTLS}: it answered {said[0]!r}, then {said[1]!r}"


def test_a_port_that_answers_the_client_hello_with_text_stays_not_tls(root_file: Path) -> None:
    """Silent after its OK until the ClientHello, which it answers with a line: the second dialogue hears
    nothing before TLS, and the handshake's not-TLS result stands."""

    def answer(request: bytes) -> Step:
        if request.startswith(b". CAPABILITY"):
            return Step(IMAP_CAPABILITY)
        if request.startswith(b". STARTTLS"):
            return Step(IMAP_OK)
        return Step(b". BAD Error in IMAP command received by server.\r\n", close=True)

    engine = ProbeEngine(environ={}, native_cafile=str(root_file))
    options = ProbeOptions(starttls=Starttls.IMAP, pin_address="127.0.0.1", connect_timeout=1.0, handshake_timeout=1.0)
    with ScriptedServer(IMAP_GREETING, answer) as server:
        result = asyncio.run(engine.probe(ProbeRequest(Target(NAME, server.port), options, request_id="w-2")))
    (address,) = result.addresses
    assert address.connect_failure is Failure.NONE, address.connect_error
    assert address.handshake.failure is Failure.NOT_TLS, address.handshake


def test_dovecot_whose_key_does_not_fit_is_quoted_and_the_fix_names_its_key(
    pki: LabPKI, root_file: Path, truth_env
) -> None:
    """Real Dovecot, `ssl_key` from another certificate: s_client and curl see "wrong version number";
    `tlsfleet probe` quotes Dovecot's own words for IMAP and POP3, and the fix names `ssl_cert` and `ssl_key`."""
    leaf, other = pki.issue_leaf(NAME), pki.issue_leaf("other.debian.test")
    mismatched = ServedIdentity(ServedIdentity.of(leaf, pki.intermediate).cert_chain_pem, other.key_pem)
    with serving(lambda: Dovecot(mismatched)) as dovecot:
        seen = {p: _truth(port, p, truth_env) for p, port in _ports(dovecot).items()}
        curl = _curl(dovecot.imap_port, "imap", root_file)
        reports = {p: tlsfleet_probe(port, p, truth_env) for p, port in _ports(dovecot).items()}
    for truth in seen.values():
        _assert_s_client_reads_the_words_as_tls(truth, apart=None)
    if curl is not None:
        # The BYE read as TLS (35, "wrong version number"), or, come with the OK, as an IMAP reply (8).
        assert curl.returncode in (8, 35), curl.stderr
    for protocol, words in ((Starttls.IMAP, IMAP_BYE), (Starttls.POP3, POP3_ERR)):
        code, report = reports[protocol]
        (address,) = _addresses(report)
        assert code == 1 and address["connect_failure"] == "starttls_unsupported", address
        assert address["connect_error"].endswith(f"then {words.decode().rstrip()!r}")
        finding = unreachable(report)
        assert "TLS initialization failed" in finding["summary"]
        assert "Dovecot `ssl_cert` and `ssl_key`" in finding["fix"]
        assert "does not speak TLS" not in finding["summary"] + finding["fix"]


def _ports(dovecot: Dovecot) -> dict[Starttls, int]:
    return {Starttls.IMAP: dovecot.imap_port, Starttls.POP3: dovecot.pop3_port}
