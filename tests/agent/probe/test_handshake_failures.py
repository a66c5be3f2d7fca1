"""Handshake failures say who refused what, classified by OpenSSL's reason codes, each held against what
`openssl s_client` concludes on this same host (its exit status and verify code)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import (
    Lab,
    needs_openssl,
    policy_file,
    probe,
    probe_in_child,
    rsa_leaf,
    s_client,
    views,
)
from tlsfleet.agent.model import Failure, Party, TlsVersion, Verdict
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.coordinator.lab import ground_truth
from tlsfleet.coordinator.lab.agent_process import trust_env
from tlsfleet.coordinator.lab.corpus import ENDPOINTS, PROFILES, CorpusPKI, EndpointUnavailable, serve_endpoint
from tlsfleet.coordinator.lab.dh_groups import oakley_group_2_pem
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = needs_openssl


@pytest.fixture(scope="module")
def dh1024(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024-bit DH group: below what security level 2 accepts (2048)."""
    path = tmp_path_factory.mktemp("dh") / "dh1024.pem"
    path.write_bytes(oakley_group_2_pem())
    return path


def test_a_dh_group_too_small_is_a_weak_key_exchange_refused_by_the_client(lab: Lab, dh1024: Path) -> None:
    leaf = rsa_leaf(lab.pki, "dh.test")
    # The server itself must be at level 0 to offer so small a group; TLS 1.2 DHE only.
    server = lab.s_server(
        leaf, "-dhparam", str(dh1024), "-cipher", "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0", "-no_tls1_3"
    )
    truth = s_client(server.port, "dh.test", lab.root)
    assert not truth.ok and truth.verify_code == 0, truth.output
    result = probe(lab, server.port, "dh.test")
    hs = result.handshake
    assert hs.failure is Failure.WEAK_KEY_EXCHANGE, hs
    assert hs.refused_by is Party.CLIENT
    assert (hs.tls_version, hs.cipher) == ("TLSv1.2", "DHE-RSA-AES128-GCM-SHA256")
    # The chain was accepted before the ServerKeyExchange was refused: s_client's "Verify return code: 0".
    assert result.native.verdict is Verdict.OK and result.native.verify_code == truth.verify_code
    assert len(result.chain) == 2
    # Python's default context is at the same level 2 and offers that cipher: the same refusal, no second view.
    assert list(views(result)) == ["openssl"]


def test_a_certificate_message_over_100_kib_is_cert_too_large(lab: Lab) -> None:
    names = ["big.test"] + [f"host-{i:05d}.filler.big.test" for i in range(4000)]
    leaf = lab.pki.issue_leaf(*names)
    assert len(leaf.der) > 100 * 1024
    server = lab.s_server(leaf)
    truth = s_client(server.port, "big.test", lab.root)
    assert not truth.ok and truth.verify_code == 0, truth.output
    result = probe(lab, server.port, "big.test")
    assert result.handshake.failure is Failure.CERT_TOO_LARGE, result.handshake
    assert result.handshake.refused_by is Party.CLIENT
    assert result.handshake.tls_version == "TLSv1.3"  # read from the ServerHello before the refusal
    assert result.native.verdict is Verdict.NO_CHAIN and result.native.verify_code == truth.verify_code


def _leaf_of_size(pki: LabPKI, size: int) -> Issued:
    """A leaf of exactly `size` DER bytes (a padding name absorbs the ECDSA signature's varying length)."""
    names = ["big.test"] + [f"host-{i:05d}.filler.big.test" for i in range(3000)]
    pad = 10
    for _ in range(50):
        leaf = pki.issue_leaf(*names, "x" * pad + ".pad.big.test")
        delta = size - len(leaf.der)
        if delta == 0:
            return leaf
        pad += delta
        if pad > 60:  # a DNS label holds at most 63 characters: the excess goes into another name
            names.append("y" * 40 + ".more.big.test")
            pad -= 56
        pad = max(pad, 1)
    raise AssertionError(f"no leaf of {size} bytes")


# The Certificate message's body around OpenSSL's limit (max_cert_list, 102400 bytes), one leaf served alone:
# TLS 1.3 adds a context byte, the list's length, the entry's length and its empty extensions (9 bytes),
# TLS 1.2 the list's and the entry's lengths (6 bytes).
@pytest.mark.parametrize(("version", "overhead"), [("-tls1_3", 9), ("-no_tls1_3", 6)])
@pytest.mark.parametrize("body", [102400, 102401])
def test_the_certificate_limit_falls_on_the_same_byte_as_s_clients(
    lab: Lab, version: str, overhead: int, body: int
) -> None:
    server = lab.s_server(_leaf_of_size(lab.pki, body - overhead), version, chain=())
    truth = s_client(server.port, "big.test", lab.root)
    result = probe(lab, server.port, "big.test")
    assert not truth.ok, truth.output
    if body <= 100 * 1024:
        # Within the limit: the chain arrives and is judged (no intermediate was sent: 20), as by s_client.
        assert truth.verify_code == 20, truth.output
        assert result.handshake.failure is Failure.CERT_VERIFY and result.native.verify_code == 20
        assert len(result.chain) == 1
    else:
        assert truth.verify_code == 0 and "excessive message size" in truth.output, truth.output
        assert result.handshake.failure is Failure.CERT_TOO_LARGE and result.native.verdict is Verdict.NO_CHAIN


def test_a_server_alert_is_named_and_refused_by_the_server(lab: Lab) -> None:
    # The server accepts only a TLS 1.3 suite no default client offers: it refuses the ClientHello.
    server = lab.s_server(lab.pki.issue_leaf("alert.test"), "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256")
    truth = s_client(server.port, "alert.test", lab.root)
    assert not truth.ok and truth.verify_code == 0, truth.output
    result = probe(lab, server.port, "alert.test")
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "handshake_failure", Party.SERVER), hs
    assert result.native.verdict is Verdict.NO_CHAIN and result.native.verify_code == truth.verify_code
    assert views(result)["openssl"]["failure"] == Failure.TLS_ALERT


def test_a_protocol_version_alert_is_the_servers_refusal(lab: Lab) -> None:
    server = lab.s_server(lab.pki.issue_leaf("modern.test"), "-tls1_3")
    truth = s_client(server.port, "modern.test", lab.root, extra=("-max_protocol", "TLSv1.2"))
    assert not truth.ok, truth.output
    result = probe(lab, server.port, "modern.test", max_version=TlsVersion.TLS1_2)
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "protocol_version", Party.SERVER), hs
    # Both clients are capped at TLS 1.2 by the request: the same refusal, one view.
    assert list(views(result)) == ["openssl"]
    assert s_client(server.port, "modern.test", lab.root).ok
    assert probe(lab, server.port, "modern.test").handshake.failure is Failure.NONE


def test_no_version_left_is_refused_by_the_client(lab: Lab) -> None:
    """MinProtocol = TLSv1.3 in the host policy, a request capped at TLS 1.2: OpenSSL has no version to offer."""
    server = lab.s_server(lab.pki.issue_leaf("bounds.test"), "-no_tls1_3")
    config = policy_file(lab.tmp, "min13", "MinProtocol = TLSv1.3")
    truth = s_client(server.port, "bounds.test", lab.root, config=config, extra=("-max_protocol", "TLSv1.2"))
    assert not truth.ok and truth.verify_code == 0, truth.output
    _, [result] = probe_in_child(
        config, [{"port": server.port, "name": "bounds.test", "cafile": str(lab.root), "max_version": "TLSv1.2"}]
    )
    hs = result["handshake"]
    assert (hs["failure"], hs["refused_by"]) == (Failure.NO_COMMON_VERSION, Party.CLIENT), hs
    assert result["native"]["verdict"] == Verdict.NO_CHAIN
    # Python's default context replaces the host's minimum with its own TLS 1.2: it gets through.
    python = views(result)["python"]
    assert python["failure"] == Failure.NONE and python["tls_version"] == "TLSv1.2"
    assert result["plain_python"]["ok"] is True


def test_no_cipher_left_is_refused_by_the_client(lab: Lab) -> None:
    """A CipherString that leaves no TLS 1.2 cipher (eNULL is below security level 2) and TLS 1.2 only."""
    server = lab.s_server(lab.pki.issue_leaf("ciphers.test"), "-no_tls1_3")
    config = policy_file(lab.tmp, "enull", "CipherString = eNULL")
    truth = s_client(server.port, "ciphers.test", lab.root, config=config, extra=("-max_protocol", "TLSv1.2"))
    assert not truth.ok and truth.verify_code == 0, truth.output
    _, [result] = probe_in_child(
        config, [{"port": server.port, "name": "ciphers.test", "cafile": str(lab.root), "max_version": "TLSv1.2"}]
    )
    hs = result["handshake"]
    assert (hs["failure"], hs["refused_by"]) == (Failure.NO_COMMON_CIPHER, Party.CLIENT), hs
    assert views(result)["python"]["failure"] == Failure.NONE  # Python's own cipher list replaces the policy's
    assert result["plain_python"]["ok"] is True


@pytest.mark.parametrize("behaviour", ["garbage", "http"])
def test_garbage_is_not_tls(lab: Lab, behaviour: str) -> None:
    server = lab.raw(behaviour)
    truth = s_client(server.port, "garbage.test", lab.root)
    assert not truth.ok, truth.output
    result = probe(lab, server.port, "garbage.test")
    assert result.handshake.failure is Failure.NOT_TLS, result.handshake
    assert result.handshake.refused_by is Party.CLIENT
    assert result.native.verdict is Verdict.NO_CHAIN
    assert list(views(result)) == ["openssl"]  # no client policy makes garbage TLS: no second handshake


def test_a_reset_is_reset_by_the_server(lab: Lab) -> None:
    server = lab.raw("reset")
    truth = s_client(server.port, "reset.test", lab.root)
    assert not truth.ok, truth.output
    result = probe(lab, server.port, "reset.test")
    assert result.handshake.failure is Failure.RESET, result.handshake
    assert result.handshake.refused_by is Party.SERVER
    assert "ECONNRESET" in result.handshake.error


def test_a_close_is_closed_by_the_server(lab: Lab) -> None:
    server = lab.raw("close")
    truth = s_client(server.port, "close.test", lab.root)
    assert not truth.ok, truth.output
    result = probe(lab, server.port, "close.test")
    assert result.handshake.failure is Failure.CLOSED, result.handshake
    assert result.handshake.refused_by is Party.SERVER


def test_a_stall_is_a_timeout_that_nobody_refused(pki: LabPKI, tmp_path: Path) -> None:
    server = TlsServer(None, mode="stall").start()
    try:
        lab = Lab(tmp_path, pki)
        result = probe(lab, server.port, "stall.test", handshake_timeout=0.3)
    finally:
        server.stop()
    assert result.handshake.failure is Failure.HANDSHAKE_TIMEOUT
    assert result.handshake.refused_by is Party.NONE
    assert list(views(result)) == ["openssl"]  # no second handshake after a timeout


def test_an_unknown_name_alert_runs_no_second_handshake(lab: Lab) -> None:
    """unrecognized_name hangs on the SNI sent, not on versions or ciphers: one connection only."""
    named = lab.pki.issue_leaf("named.test")
    server = TlsServer(None, by_sni={"named.test": ServedIdentity.of(named, lab.pki.intermediate)}).start()
    try:
        truth = s_client(server.port, "stranger.test", lab.root)
        assert not truth.ok, truth.output
        before = server.accepted
        result = probe(lab, server.port, "stranger.test")
        connections = server.accepted - before
    finally:
        server.stop()
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "unrecognized_name", Party.SERVER), hs
    assert list(views(result)) == ["openssl"]
    assert connections == 1


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
@pytest.mark.parametrize("name", ["hrr.test", "other.test"])
def test_a_hello_retry_request_reports_the_second_server_hello(lab: Lab, name: str) -> None:
    """A server that only takes P-384 answers the X25519 key share with a HelloRetryRequest: the handshake
    completes (or its chain is refused) with what the second ServerHello chose, as s_client reports it."""
    server = lab.s_server(lab.pki.issue_leaf("hrr.test"), "-tls1_3", "-groups", "P-384")
    truth = ground_truth.s_client(
        "127.0.0.1", server.port, servername=name, env=trust_env(lab.tmp, lab.root), extra=("-groups", "X25519:P-384")
    )
    result = probe(lab, server.port, name)
    hs = result.handshake
    assert truth.connected is (hs.failure is Failure.NONE), truth.output
    assert result.native.verify_code == truth.verify_code
    if truth.connected:
        assert (hs.tls_version, hs.cipher) == (truth.protocol, truth.cipher)
    else:
        # s_client -brief names no version once the chain is refused; the ServerHello after the retry still does.
        assert hs.failure is Failure.CERT_VERIFY and truth.verify_code == 62
        assert (hs.tls_version, hs.cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert list(views(result)) == ["openssl"]


@pytest.mark.parametrize("allowed", [False, True])
def test_a_server_without_secure_renegotiation_is_refused_unless_the_policy_allows_it(lab: Lab, allowed: bool) -> None:
    """OpenSSL 3 clients refuse a ServerHello without renegotiation_info (RFC 5746), unless the host's
    configuration says `Options = UnsafeLegacyServerConnect`: then they go on (and this server hangs up)."""
    server = lab.raw("no_renegotiation_info")
    config = policy_file(lab.tmp, "legacy", "Options = UnsafeLegacyServerConnect") if allowed else None
    truth = s_client(server.port, "legacy.test", lab.root, config=config)
    assert not truth.ok, truth.output
    assert ("unsafe legacy renegotiation disabled" in truth.output) is not allowed, truth.output
    if allowed:
        _, [result] = probe_in_child(config, [{"port": server.port, "name": "legacy.test", "cafile": str(lab.root)}])
        hs = result["handshake"]
        assert (hs["failure"], hs["refused_by"], hs["tls_version"]) == (Failure.CLOSED, Party.SERVER, "TLSv1.2"), hs
    else:
        refused = probe(lab, server.port, "legacy.test").handshake
        assert (refused.failure, refused.refused_by, refused.tls_version) == (
            Failure.PROTOCOL_ERROR,
            Party.CLIENT,
            "TLSv1.2",
        ), refused
        assert "UNSAFE_LEGACY_RENEGOTIATION_DISABLED" in refused.error


def test_no_common_alpn_protocol_is_the_servers_alert_named_from_the_wire(lab: Lab) -> None:
    """s_server speaks http/1.1 alone and refuses a client that offers only h2 with no_application_protocol, an
    alert Python 3.11's table of OpenSSL reasons has no name for: the alert is read off the wire instead."""
    server = lab.s_server(lab.pki.issue_leaf("alpn.test"), "-alpn", "http/1.1")
    truth = s_client(server.port, "alpn.test", lab.root, extra=("-alpn", "h2"))
    assert not truth.ok and "no application protocol" in truth.output, truth.output
    result = probe(lab, server.port, "alpn.test", alpn=("h2",))
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "no_application_protocol", Party.SERVER), hs
    assert result.native.verdict is Verdict.NO_CHAIN
    assert list(views(result)) == ["openssl"]  # an ALPN refusal is no client policy's: no second handshake
    assert s_client(server.port, "alpn.test", lab.root, extra=("-alpn", "h2,http/1.1")).ok
    assert probe(lab, server.port, "alpn.test", alpn=("h2", "http/1.1")).handshake.alpn == "http/1.1"


@pytest.mark.parametrize("endpoint", ["alpn-unoffered", "alpn-unoffered-tls12"])
def test_an_alpn_protocol_the_client_did_not_offer_is_named(tmp_path: Path, endpoint: str) -> None:
    """A server that selects http/1.1 whatever was offered: OpenSSL refuses with a bare BAD_EXTENSION, and the
    agent says which protocol the server chose against what the client offered."""
    served = next(e for e in ENDPOINTS if e.name == endpoint)
    pki = CorpusPKI(PROFILES[0], tmp_path / "pki")
    (tmp_path / "root.pem").write_bytes(pki.root.pem)
    try:
        with serve_endpoint(served, pki, tmp_path / "server") as running:
            result = asyncio.run(
                handshake(
                    "127.0.0.1",
                    running.port,
                    server_hostname_for_sni=served.hostname,
                    expected_name=served.hostname,
                    alpn=("h2",),
                    connect_timeout=3.0,
                    handshake_timeout=5.0,
                    context_cache=ContextCache(cafile=str(tmp_path / "root.pem")),
                )
            )
    except EndpointUnavailable as why:
        pytest.skip(str(why))
    hs = result.handshake
    assert (hs.failure, hs.refused_by, hs.alpn) == (Failure.PROTOCOL_ERROR, Party.CLIENT, "http/1.1"), hs
    assert hs.error.startswith(
        "the server selected ALPN protocol 'http/1.1', which the client did not offer (offered h2)"
    )
    assert "BAD_EXTENSION" in hs.error  # OpenSSL's reason stays, for the diagnosis to read
