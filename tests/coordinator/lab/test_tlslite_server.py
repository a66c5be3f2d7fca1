"""The tlslite-ng server serves what the corpus says it does, and only that: for each endpoint this host's
OpenSSL cannot serve, a tlslite client that offers everything gets exactly the claimed suite, version,
chain and (for DHE) group, a client that lacks any one part of it is refused, and this host's
`openssl s_client` concludes what the corpus test holds the agent to. The server handles many sequential
and concurrent connections, never more at once than it is told, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tlslite", reason="tlslite-ng (a dev dependency) serves these endpoints")

from tlslite.constants import AlertDescription, CipherSuite
from tlslite.dh import parse as parse_dh_params
from tlslite.errors import TLSLocalAlert, TLSRemoteAlert
from tlslite.handshakesettings import ALL_CIPHER_NAMES, ALL_MAC_NAMES, HandshakeSettings
from tlslite.keyexchange import ADHKeyExchange, FFDHKeyExchange
from tlslite.messages import ServerHello, ServerKeyExchange
from tlslite.tlsconnection import TLSConnection

from tlsfleet.coordinator.lab.corpus import (
    ENDPOINTS,
    OPENSSL,
    PROFILES,
    CorpusPKI,
    RunningEndpoint,
    serve_endpoint,
)

pytestmark = pytest.mark.e2e

TLSLITE_ENDPOINTS = [e for e in ENDPOINTS if e.server == "tlslite"]
KEY_EXCHANGES = ["rsa", "dhe_rsa", "ecdhe_rsa", "ecdhe_ecdsa"]
TLS12 = (3, 3)


@dataclass(frozen=True)
class Claim:
    """What the endpoint says it serves, in tlslite's names, and OpenSSL's name for the suite."""

    suite: int
    cipher: str
    mac: str
    key_exchange: str
    openssl_name: str
    dh_bits: int = 0


CLAIMS = {
    "3des": Claim(CipherSuite.TLS_RSA_WITH_3DES_EDE_CBC_SHA, "3des", "sha", "rsa", "DES-CBC3-SHA"),
    "rc4": Claim(CipherSuite.TLS_RSA_WITH_RC4_128_SHA, "rc4", "sha", "rsa", "RC4-SHA"),
    "rc4-md5": Claim(CipherSuite.TLS_RSA_WITH_RC4_128_MD5, "rc4", "md5", "rsa", "RC4-MD5"),
    "dh480": Claim(
        CipherSuite.TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
        "aes128gcm",
        "aead",
        "dhe_rsa",
        "DHE-RSA-AES128-GCM-SHA256",
        480,
    ),
    "dh512": Claim(
        CipherSuite.TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
        "aes128gcm",
        "aead",
        "dhe_rsa",
        "DHE-RSA-AES128-GCM-SHA256",
        512,
    ),
}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningEndpoint]]:
    work = tmp_path_factory.mktemp("tlslite")
    pki = CorpusPKI(PROFILES[0], work)
    with ExitStack() as stack:
        yield {e.name: stack.enter_context(serve_endpoint(e, pki, work / e.name)) for e in TLSLITE_ENDPOINTS}


class RecordingConnection(TLSConnection):
    """A tlslite client that keeps every handshake message it receives, also when it then refuses."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.received: list[Any] = []

    def _getMsg(self, expectedType: Any, secondaryType: Any = None, constructorType: Any = None) -> Iterator[Any]:
        for result in super()._getMsg(expectedType, secondaryType, constructorType):
            if not isinstance(result, int):
                self.received.append(result)
            yield result


def client_settings(
    *,
    ciphers: list[str] | None = None,
    macs: list[str] | None = None,
    key_exchanges: list[str] | None = None,
    versions: tuple[tuple[int, int], tuple[int, int]] = ((3, 1), (3, 4)),
) -> HandshakeSettings:
    """Everything tlslite can offer (RC4, MD5 and NULL too), unless told otherwise."""
    settings = HandshakeSettings()
    settings.cipherNames = list(ALL_CIPHER_NAMES if ciphers is None else ciphers)
    settings.macNames = list(ALL_MAC_NAMES if macs is None else macs)
    settings.keyExchangeNames = list(KEY_EXCHANGES if key_exchanges is None else key_exchanges)
    settings.minVersion, settings.maxVersion = versions
    return settings


def connect(port: int) -> RecordingConnection:
    return RecordingConnection(socket.create_connection(("127.0.0.1", port), timeout=20))


def handshake(
    port: int, settings: HandshakeSettings, connection: RecordingConnection | None = None
) -> RecordingConnection:
    connection = connection or connect(port)
    try:
        connection.handshakeClientCert(settings=settings, serverName="tlslite.corpus.test")
    except BaseException:
        connection.sock.close()
        raise
    return connection


def finish(connection: RecordingConnection) -> None:
    """Send application data under the negotiated keys, then close as s_client does."""
    connection.write(b"ping\n")
    connection.close()


@pytest.fixture
def small_dh_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """tlslite's client refuses DH primes below 1023 bits (a constant, not a setting); this is its own
    processServerKeyExchange without that floor, in this test process only (the server is another)."""

    def process(self: Any, server_public_key: Any, ske: Any) -> Any:
        del server_public_key
        kex = FFDHKeyExchange(None, self.serverHello.server_version, ske.dh_g, ske.dh_p)
        private = kex.get_random_private_key()
        self.dh_Yc = kex.calc_public_value(private)
        return kex.calc_shared_key(private, ske.dh_Ys)

    monkeypatch.setattr(ADHKeyExchange, "processServerKeyExchange", process)


# Offering TLS 1.3 takes a group (a key share), and an RSA-only client has none: tlslite would refuse it.
RSA_3DES_CLIENT = client_settings(ciphers=["3des"], macs=["sha"], key_exchanges=["rsa"], versions=((3, 1), TLS12))


def test_every_tlslite_endpoint_has_a_claim() -> None:
    assert {e.name for e in TLSLITE_ENDPOINTS} == set(CLAIMS)
    for endpoint in TLSLITE_ENDPOINTS:
        assert endpoint.dh_bits == CLAIMS[endpoint.name].dh_bits


@pytest.mark.parametrize("name", sorted(CLAIMS))
@pytest.mark.usefixtures("small_dh_accepted")
def test_a_client_offering_everything_gets_exactly_the_claimed_suite_chain_and_group(
    running: dict[str, RunningEndpoint], name: str
) -> None:
    claim, endpoint = CLAIMS[name], running[name]
    connection = handshake(endpoint.port, client_settings())
    try:
        assert connection.version == TLS12
        assert connection.session.cipherSuite == claim.suite, CipherSuite.ietfNames.get(connection.session.cipherSuite)
        served = [cert.bytes for cert in connection.session.serverCertChain.x509List]
        assert served == [bytearray(cert.der) for cert in endpoint.served.chain]
        exchanges = [m for m in connection.received if isinstance(m, ServerKeyExchange)]
        if claim.dh_bits:
            # The tlslite client lists RFC 7919 groups: the server sent its own group all the same, signed
            # with the leaf's key (tlslite checks the signature before using the group).
            (exchange,) = exchanges
            assert exchange.dh_p.bit_length() == claim.dh_bits
            group = parse_dh_params((endpoint.workdir.parent / f"dh{claim.dh_bits}.pem").read_text())
            assert (exchange.dh_g, exchange.dh_p) == group
        else:
            assert exchanges == []  # RSA key exchange
        finish(connection)
    finally:
        connection.sock.close()


@pytest.mark.parametrize("name", sorted(n for n, c in CLAIMS.items() if c.dh_bits))
def test_tlslites_own_client_refuses_the_small_groups_it_is_sent(
    running: dict[str, RunningEndpoint], name: str
) -> None:
    with pytest.raises(TLSLocalAlert) as refused:
        handshake(running[name].port, client_settings())
    # (str() of this alert fails in tlslite 0.8: its message is the exception, not a string)
    assert refused.value.description == AlertDescription.insufficient_security, refused.value.message
    assert "DH prime too small" in str(refused.value.message)


@pytest.mark.parametrize("name", sorted(CLAIMS))
@pytest.mark.parametrize("lacking", ["cipher", "mac", "key exchange"])
def test_a_client_lacking_any_part_of_the_claim_is_refused(
    running: dict[str, RunningEndpoint], name: str, lacking: str
) -> None:
    claim = CLAIMS[name]
    if lacking == "cipher":
        settings = client_settings(ciphers=[c for c in ALL_CIPHER_NAMES if c != claim.cipher])
    elif lacking == "mac":
        settings = client_settings(macs=[m for m in ALL_MAC_NAMES if m != claim.mac])
    else:
        settings = client_settings(key_exchanges=[k for k in KEY_EXCHANGES if k != claim.key_exchange])
    with pytest.raises(TLSRemoteAlert) as refused:
        handshake(running[name].port, settings)
    # What OpenSSL-era servers answer a client with no suite in common (not RFC 7919's insufficient_security).
    assert refused.value.description == AlertDescription.handshake_failure, str(refused.value)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_a_tls_13_only_client_gets_tls_12_and_gives_up(running: dict[str, RunningEndpoint], name: str) -> None:
    connection = connect(running[name].port)
    with pytest.raises(TLSLocalAlert) as refused:
        handshake(running[name].port, client_settings(versions=((3, 4), (3, 4))), connection)
    assert refused.value.description == AlertDescription.protocol_version, refused.value.message
    hellos = [m for m in connection.received if isinstance(m, ServerHello)]
    assert [h.server_version for h in hellos] == [TLS12]


def _host_has(cipher: str) -> bool:
    done = subprocess.run([OPENSSL, "ciphers", f"{cipher}@SECLEVEL=0"], capture_output=True, timeout=10, check=False)
    return done.returncode == 0


def _s_client(port: int, *extra: str) -> tuple[int, str]:
    command = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "tlslite.corpus.test"]
    done = subprocess.run([*command, "-brief", *extra], input=b"", capture_output=True, timeout=20, check=False)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_what_this_hosts_s_client_makes_of_it_at_security_level_0(
    running: dict[str, RunningEndpoint], name: str
) -> None:
    """The weakest this host's OpenSSL client can be: the claimed suite alone where its build has it,
    security level 0, TLS 1.2."""
    claim, port = CLAIMS[name], running[name].port
    if not _host_has(claim.openssl_name):
        # The client cannot even offer it: prove instead that the server serves nothing it can offer.
        code, text = _s_client(port, "-tls1_2", "-cipher", "ALL:COMPLEMENTOFALL@SECLEVEL=0")
        assert code != 0
        assert "alert handshake failure" in text and "SSL alert number 40" in text, text
        print(f"{name}: this host's OpenSSL has no {claim.openssl_name}; the server refused all it has")
        return
    code, text = _s_client(port, "-tls1_2", "-cipher", f"{claim.openssl_name}@SECLEVEL=0")
    if code == 0 and "CONNECTION ESTABLISHED" in text:
        assert f"Ciphersuite: {claim.openssl_name}" in text, text
        if claim.dh_bits:
            assert f"Server Temp Key: DH, {claim.dh_bits} bits" in text, text
        return
    # OpenSSL 3.0 refuses DHE below 1024 bits at every security level ("dh key too small"), and groups
    # below 512 bits before that ("bad dh value"): the group reached the client, which refused it.
    assert claim.dh_bits, text
    assert "tls_process_ske_dhe" in text, text
    assert ("dh key too small" if claim.dh_bits >= 512 else "bad dh value") in text, text
    print(f"{name}: this host's s_client refuses a {claim.dh_bits}-bit group even at SECLEVEL=0")


def test_many_sequential_and_concurrent_connections(running: dict[str, RunningEndpoint]) -> None:
    port = running["3des"].port
    settings = RSA_3DES_CLIENT

    def one(_: int) -> int:
        connection = handshake(port, settings)
        suite = connection.session.cipherSuite
        finish(connection)
        connection.sock.close()
        return int(suite)

    assert [one(i) for i in range(24)] == [CipherSuite.TLS_RSA_WITH_3DES_EDE_CBC_SHA] * 24
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(48))) == [CipherSuite.TLS_RSA_WITH_3DES_EDE_CBC_SHA] * 48


@pytest.fixture
def own_server(running: dict[str, RunningEndpoint]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The 3des endpoint's server started by hand, at most two connections at once; killed by PID if a
    test leaves it running."""
    workdir = running["3des"].workdir
    command = [sys.executable, "-m", "tlsfleet.coordinator.lab.tlslite_server", "--cert", "leaf.pem"]
    command += ["--chain", "untrusted.pem", "--key", "leaf.key", "--cipher", "3des", "--mac", "sha"]
    command += ["--key-exchange", "rsa", "--max-connections", "2"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        assert first.startswith("ACCEPT 127.0.0.1:"), first
        yield process, int(first.rsplit(":", 1)[1])
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_connections_beyond_the_bound_wait_for_a_free_slot(own_server: tuple[subprocess.Popen[bytes], int]) -> None:
    _, port = own_server
    settings = RSA_3DES_CLIENT
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    done = threading.Event()

    def third() -> None:
        connection = handshake(port, settings)
        done.set()
        finish(connection)
        connection.sock.close()

    worker = threading.Thread(target=third, daemon=True)
    try:
        time.sleep(0.3)  # both idle connections are taken before the third arrives
        worker.start()
        assert not done.wait(1.5), "a third connection was served while two held both slots"
        idle.pop().close()
        assert done.wait(10), "the third connection was not served once a slot was free"
    finally:
        for sock in idle:
            sock.close()
        worker.join(10)


def test_sigterm_stops_it_with_connections_open(own_server: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = own_server
    with closing(socket.create_connection(("127.0.0.1", port), timeout=5)):
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    assert process.stdout is not None
    assert process.stdout.read().decode().rstrip().endswith("STOPPED")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_the_corpus_keeps_the_dh_group_it_served(running: dict[str, RunningEndpoint]) -> None:
    for name, claim in CLAIMS.items():
        if claim.dh_bits:
            path = running[name].workdir.parent / f"dh{claim.dh_bits}.pem"
            assert Path(path).read_text().startswith("-----BEGIN DH PARAMETERS-----")
            check = subprocess.run([OPENSSL, "dhparam", "-in", str(path), "-noout", "-text"], capture_output=True)
            assert f"({claim.dh_bits} bit)" in check.stdout.decode(), check.stdout.decode()
