"""Servers that misbehave as TLS test suites' servers do, each held against `openssl s_client` and curl on this
host: whether the handshake completes, who refused, and over what (OpenSSL's packed error codes, never its
wording), and what the coordinator makes of it."""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509.oid import NameOID

from tests.agent.probe.openssl_lab import Lab, needs_openssl, rsa_leaf
from tests.outcomes import observe, outcome, request
from tlsfleet.agent.model import AddressResult, Failure, Party
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.tls_messages import alert_name
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.handshake import reason_code
from tlsfleet.coordinator.diagnosis.model import Cause, Finding
from tlsfleet.coordinator.lab.misbehaving_servers import BEHAVIOURS, MisbehavingServer
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem

# Every test here runs a real s_client (and curl) process beside the agent: the full suite runs them.
pytestmark = [needs_openssl, pytest.mark.e2e]

NAME = "misbehaving.test"
CURL = shutil.which("curl")
_LIB_SSL = 20
_ALERT_OFFSET = 1000  # OpenSSL's reason for a received alert: SSL_AD_REASON_OFFSET + its description
_UNEXPECTED_EOF = "UNEXPECTED_EOF_WHILE_READING"
_ECONNRESET = 104
# Raw answers that s_client judges alone; a close_notify (s_client exits 0 on it) and a byte a second (it never
# gives up) have tests of their own.
_JUDGED_BY_S_CLIENT = sorted(n for n in BEHAVIOURS if n not in ("close_notify", "trickle"))


@dataclass(frozen=True)
class Refusal:
    """How a real OpenSSL client ended a handshake: its exit status and the OpenSSL errors it printed."""

    returncode: int
    errors: tuple[tuple[int, int], ...]  # (library, reason), in the order printed
    output: str

    @property
    def reasons(self) -> tuple[str, ...]:
        """The SSL library's reason mnemonics ("UNKNOWN_CIPHER_RETURNED"), or "reason(N)" for one unnamed."""
        return tuple(_reason_name(lib, reason) for lib, reason in self.errors if lib == _LIB_SSL)

    @property
    def first_ssl(self) -> int | None:
        return next((reason for lib, reason in self.errors if lib == _LIB_SSL), None)


def _reason_name(lib: int, reason: int) -> str:
    return _ssl.err_codes_to_names.get((lib, reason), f"reason({reason})")


def _errors(text: str) -> tuple[tuple[int, int], ...]:
    # OpenSSL 3 packs library and reason as ERR_GET_LIB = code >> 23, ERR_GET_REASON = code & 0x7FFFFF.
    codes = (int(c, 16) for c in re.findall(r"error:([0-9A-F]{8}):", text))
    return tuple(((c >> 23) & 0xFF, c & 0x7FFFFF) for c in codes)


def s_client(port: int, cafile: Path, *, timeout: float = 20) -> Refusal:
    done = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            NAME,
            "-verify_return_error",
            "-CAfile",
            str(cafile),
        ],
        input=b"",
        capture_output=True,
        timeout=timeout,
    )
    text = (done.stdout + done.stderr).decode(errors="replace")
    return Refusal(done.returncode, _errors(text), text[-3000:])


def curl(port: int, cafile: Path) -> Refusal | None:
    """curl's verdict (its exit status, and the OpenSSL error codes it names); None when curl is not installed."""
    if CURL is None:
        return None
    done = subprocess.run(
        [
            CURL,
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "--resolve",
            f"{NAME}:{port}:127.0.0.1",
            "--cacert",
            str(cafile),
            f"https://{NAME}:{port}/",
        ],
        capture_output=True,
        timeout=30,
    )
    text = done.stderr.decode(errors="replace")
    return Refusal(done.returncode, _errors(text), text)


def probe(port: int, cafile: Path, *, handshake_timeout: float = 5.0) -> AddressResult:
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=NAME,
            expected_name=NAME,
            connect_timeout=3.0,
            handshake_timeout=handshake_timeout,
            context_cache=ContextCache(cafile=str(cafile)),
        )
    )


def findings(result: AddressResult, port: int) -> tuple[Finding, ...]:
    """The coordinator's findings on the one probe, made of NAME:port from this machine."""
    asked = request(NAME, port)
    return diagnose(observe(outcome("local", [result], req=asked), req=asked))


@pytest.fixture
def served(lab: Lab) -> Iterator[list[MisbehavingServer]]:
    servers: list[MisbehavingServer] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def _start(served: list[MisbehavingServer], behaviour: str) -> MisbehavingServer:
    server = MisbehavingServer(BEHAVIOURS[behaviour]).start()
    served.append(server)
    return server


# ------------------------------------------------------------------------------------ the first server flight


@pytest.mark.parametrize("behaviour", _JUDGED_BY_S_CLIENT)
def test_the_agent_names_the_refusal_s_client_and_curl_see(
    lab: Lab, served: list[MisbehavingServer], behaviour: str
) -> None:
    """Whatever the server answers the ClientHello with, the agent's failure, party and OpenSSL reason are the ones
    s_client's error codes say, and curl (the same library) fails the same way."""
    server = _start(served, behaviour)
    # The three clients meet the server at once (it serves each connection on its own thread): the same
    # answers as one after the other, in less time.
    with ThreadPoolExecutor(max_workers=2) as clients:
        by_s_client = clients.submit(s_client, server.port, lab.root)
        by_curl = clients.submit(curl, server.port, lab.root)
        hs = probe(server.port, lab.root).handshake
        truth, seen = by_s_client.result(), by_curl.result()
    assert truth.returncode != 0 and hs.failure is not Failure.NONE, (truth.output, hs)
    first = truth.first_ssl
    if first is not None and _ALERT_OFFSET <= first < _ALERT_OFFSET + 256:
        # The server's fatal alert, named as the RFC names it (user_canceled, not OpenSSL's user_cancelled).
        assert hs.failure in (Failure.TLS_ALERT, Failure.CLIENT_CERT_REQUIRED), hs
        assert (hs.alert, hs.refused_by) == (alert_name(first - _ALERT_OFFSET), Party.SERVER), hs
    elif first is not None and _reason_name(_LIB_SSL, first) == _UNEXPECTED_EOF:
        assert (hs.failure, hs.refused_by) == (Failure.CLOSED, Party.SERVER), hs
    elif not truth.errors:
        assert f"errno={_ECONNRESET}" in truth.output, truth.output
        assert (hs.failure, hs.refused_by) == (Failure.RESET, Party.SERVER), hs
    else:
        # This host's client refused what the server sent, over the reason s_client names.
        assert hs.refused_by is Party.CLIENT, hs
        assert hs.failure not in (Failure.TLS_ALERT, Failure.CLOSED, Failure.RESET), hs
        if reason_code(hs.error):
            assert reason_code(hs.error) in truth.reasons, (hs.error, truth.reasons)
        else:  # an error of another library (ASN1 for a certificate that does not parse)
            assert truth.errors[0][0] != _LIB_SSL and hs.failure is Failure.PROTOCOL_ERROR, (truth.output, hs)
    if seen is not None:
        assert seen.returncode != 0, seen.output
        assert set(seen.errors) <= set(truth.errors), (seen.output, truth.output)


def test_a_ssl3_server_hello_is_named_sslv3_and_refused_by_the_client(
    lab: Lab, served: list[MisbehavingServer]
) -> None:
    server = _start(served, "sslv3")
    truth = s_client(server.port, lab.root)
    assert truth.reasons[:1] == ("UNSUPPORTED_PROTOCOL",), truth.output
    result = probe(server.port, lab.root)
    hs = result.handshake
    assert (hs.failure, hs.refused_by, hs.tls_version) == (Failure.NO_COMMON_VERSION, Party.CLIENT, "SSLv3"), hs
    (top, *_) = findings(result, server.port)
    assert top.cause is Cause.PROTOCOL_MISMATCH and "it chose SSLv3" in top.summary, top.summary
    # A server at an old version: the reproduce commands try it at TLS 1.1 and below.
    assert any("-max_protocol TLSv1.1" in command for command in top.reproduce), top.reproduce


@pytest.mark.parametrize(
    ("behaviour", "reason", "chosen"),
    [
        ("cipher_not_offered", "UNKNOWN_CIPHER_RETURNED", "cipher suite"),
        ("tls13_cipher_in_tls12", "WRONG_CIPHER_RETURNED", "cipher suite TLS_AES_128_GCM_SHA256"),
        ("version_not_offered", "UNSUPPORTED_PROTOCOL", "version 0x0305"),
    ],
)
def test_a_choice_the_client_never_offered_is_the_servers_fault_not_an_old_policy(
    lab: Lab, served: list[MisbehavingServer], behaviour: str, reason: str, chosen: str
) -> None:
    """A ServerHello with a cipher suite or version the ClientHello did not list: s_client refuses it (the client's
    refusal), and the finding says the server ignored the offer rather than that its settings are old."""
    server = _start(served, behaviour)
    truth = s_client(server.port, lab.root)
    assert truth.reasons[:1] == (reason,), truth.output
    result = probe(server.port, lab.root)
    assert result.handshake.refused_by is Party.CLIENT
    assert reason_code(result.handshake.error) == reason
    (top, *_) = findings(result, server.port)
    assert top.cause is Cause.PROTOCOL_MISMATCH, top
    assert f"the server's choice of {chosen}" in top.summary and "which it did not offer" in top.summary, top.summary
    assert "older or narrower" not in top.summary, top.summary
    assert "Fix or replace the server's TLS stack" in top.fix and chosen in top.fix, top.fix


@pytest.mark.slow  # the server warns, then waits a second before it closes
@pytest.mark.parametrize(("behaviour", "warning"), [("warning:unrecognized_name", 112), ("warning_then_close", 90)])
def test_a_warning_alert_then_a_close_is_a_close_that_names_the_warning(
    lab: Lab, served: list[MisbehavingServer], behaviour: str, warning: int
) -> None:
    """OpenSSL passes over a warning alert, so s_client sees the close alone; the agent reports the close (the
    server's), and says which warning came first."""
    server = _start(served, behaviour)
    truth = s_client(server.port, lab.root)
    assert truth.reasons[:1] == (_UNEXPECTED_EOF,), truth.output
    hs = probe(server.port, lab.root).handshake
    assert (hs.failure, hs.refused_by, hs.alert) == (Failure.CLOSED, Party.SERVER, ""), hs
    assert hs.error.endswith(f"after a warning alert {alert_name(warning)}"), hs.error


def test_a_close_notify_instead_of_a_server_hello_is_a_close(lab: Lab, served: list[MisbehavingServer]) -> None:
    """s_client exits 0 on it, having connected nothing; curl fails (SSL_ERROR_ZERO_RETURN), and so does the agent."""
    server = _start(served, "close_notify")
    truth = s_client(server.port, lab.root)
    assert "Cipher is (NONE)" in truth.output or "no peer certificate" in truth.output, truth.output
    seen = curl(server.port, lab.root)
    if seen is not None:
        assert seen.returncode == 35 and "ZERO_RETURN" in seen.output, seen.output
    hs = probe(server.port, lab.root).handshake
    assert (hs.failure, hs.refused_by) == (Failure.CLOSED, Party.SERVER), hs
    assert "(close_notify)" in hs.error


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
def test_a_byte_a_second_is_a_timeout_that_nobody_refused(lab: Lab, served: list[MisbehavingServer]) -> None:
    server = _start(served, "trickle")
    with pytest.raises(subprocess.TimeoutExpired):
        s_client(server.port, lab.root, timeout=2.5)  # s_client waits as long as bytes keep coming
    hs = probe(server.port, lab.root, handshake_timeout=1.5).handshake
    assert (hs.failure, hs.refused_by) == (Failure.HANDSHAKE_TIMEOUT, Party.NONE), hs


# ------------------------------------------------------------------------------------- certificates and keys


def _leaf_with(pki: LabPKI, key: dsa.DSAPrivateKey | rsa.RSAPrivateKey) -> Issued:
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return Issued(cert, key)  # type: ignore[arg-type]  # Issued holds any private key


def test_a_dsa_leaf_is_the_servers_handshake_failure_and_the_fix_names_dsa(lab: Lab) -> None:
    """OpenSSL 3 clients offer no DSS suite: a server with a DSA key alone has nothing to answer with."""
    leaf = _leaf_with(lab.pki, dsa.generate_private_key(key_size=2048))
    server = lab.s_server(leaf, "-tls1_2", "-cipher", "ALL@SECLEVEL=0")
    truth = s_client(server.port, lab.root)
    assert truth.first_ssl == _ALERT_OFFSET + 40, truth.output
    result = probe(server.port, lab.root)
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "handshake_failure", Party.SERVER), hs
    (top, *_) = findings(result, server.port)
    assert top.cause is Cause.PROTOCOL_MISMATCH and "no certificate it can use" in top.summary, top.summary
    assert "a DSA key" in top.fix, top.fix


@contextlib.contextmanager
def _signing_with_another_key(lab: Lab, version: str, key_exchange: str) -> Iterator[int]:
    """A tlslite server that sends the lab's RSA leaf but holds another RSA key (tlslite never checks that they
    belong together, as OpenSSL servers do at start): the port it listens on."""
    leaf = rsa_leaf(lab.pki, NAME)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = write_pem(lab.tmp / "signer.pem", leaf.cert_pem)
    chain = write_pem(lab.tmp / "signer-chain.pem", lab.pki.intermediate.cert_pem)
    key = write_pem(
        lab.tmp / "other.key",
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    command = [sys.executable, "-m", "tlsfleet.coordinator.lab.tlslite_server", "--cert", str(cert)]
    command += ["--chain", str(chain), "--key", str(key), "--cipher", "aes128gcm", "--mac", "aead"]
    command += ["--key-exchange", key_exchange, "--min-version", "1.2", "--max-version", version]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        found = re.match(rb"ACCEPT .*:(\d+)", process.stdout.readline())
        assert found, "the tlslite server did not start"
        yield int(found.group(1))
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_a_signature_by_another_key_is_refused_by_the_client(lab: Lab, version: str) -> None:
    """A server that signs with a key its certificate does not hold (CertificateVerify, or the TLS 1.2
    ServerKeyExchange): s_client refuses it with BAD_SIGNATURE after accepting the chain, and so does the agent;
    the finding says the key and the certificate do not belong together."""
    with _signing_with_another_key(lab, version, "ecdhe_rsa") as port:
        truth = s_client(port, lab.root)
        result = probe(port, lab.root)
    assert truth.returncode != 0 and "BAD_SIGNATURE" in truth.reasons, truth.output
    hs = result.handshake
    assert (hs.failure, hs.refused_by) == (Failure.PROTOCOL_ERROR, Party.CLIENT), hs
    assert reason_code(hs.error) == "BAD_SIGNATURE" and len(result.chain) == 2
    (top, *_) = findings(result, port)
    assert top.cause is Cause.HANDSHAKE_INCOMPLETE, top
    assert "does not verify with the key in its certificate" in top.summary, top.summary
    assert "openssl pkey -pubout" in top.fix, top.fix


def test_rsa_key_exchange_to_another_key_is_the_servers_bad_record_mac(lab: Lab) -> None:
    """With RSA key exchange nothing is signed: the client encrypts to the certificate's key, the server cannot
    decrypt it and says bad_record_mac, as s_client sees (alert 20); the finding points at the key."""
    with _signing_with_another_key(lab, "1.2", "rsa") as port:
        truth = s_client(port, lab.root)
        result = probe(port, lab.root)
    assert truth.first_ssl == _ALERT_OFFSET + 20, truth.output
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "bad_record_mac", Party.SERVER), hs
    (top, *_) = findings(result, port)
    assert top.cause is Cause.HANDSHAKE_INCOMPLETE, top
    assert "a private key that is not the certificate's" in top.summary, top.summary
    assert "openssl pkey -pubout" in top.fix, top.fix


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_an_rsa_key_below_the_security_level_is_the_clients_verify_refusal(lab: Lab, version: str) -> None:
    """A 1024-bit RSA leaf, which security level 2 refuses: s_client's verify code 66, the agent's too, whether
    TLS 1.3 or 1.2 carries it."""
    leaf = _leaf_with(lab.pki, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    server = lab.s_server(leaf, version, "-cipher", "DEFAULT@SECLEVEL=0")
    truth = s_client(server.port, lab.root)
    assert truth.returncode != 0 and re.search(r"verify error:num=66\b", truth.output), truth.output
    result = probe(server.port, lab.root)
    hs = result.handshake
    assert (hs.failure, hs.refused_by) == (Failure.CERT_VERIFY, Party.CLIENT), hs
    assert result.native.verify_code == 66 and len(result.chain) == 2
    seen = curl(server.port, lab.root)
    if seen is not None:
        assert seen.returncode == 60, seen.output  # CURLE_PEER_FAILED_VERIFICATION


def test_a_chain_sent_root_first_still_verifies_as_for_s_client(lab: Lab) -> None:
    """The root, then the intermediate after the leaf: OpenSSL builds the path whatever the order, and so does the
    agent; the chain is reported in the order sent."""
    leaf = rsa_leaf(lab.pki, NAME)
    server = lab.s_server(leaf, chain=(lab.pki.root, lab.pki.intermediate))
    truth = s_client(server.port, lab.root)
    assert truth.returncode == 0 and not truth.errors, truth.output
    result = probe(server.port, lab.root)
    assert result.handshake.failure is Failure.NONE and result.native.verify_code == 0, result.handshake
    assert result.chain[1:] == (lab.pki.root.der, lab.pki.intermediate.der)
