"""What a real HAProxy does where a misconfiguration stops clients, and what the findings say of it, proved
against `openssl s_client` and curl on this host.

HAProxy fails the handshake where nginx answers at HTTP level: `strict-sni` refuses a name it has no
certificate for (and a client without SNI) with unrecognized_name whatever its default certificate, a bind
line limited to TLS 1.0/1.1 answers internal_error and logs no reason, `accept-proxy` resets a direct client,
and a `bind` without `ssl` answers the ClientHello with HTTP 400. Each behaviour is reproduced with the lab's
own servers so that it runs anywhere; the tests that need HAProxy itself skip without it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import Lab, Truth, key_pem, needs_openssl, probe, s_client
from tests.coordinator.diagnosis.real_servers import (
    NAME,
    ServerProcess,
    clients_see,
    curl,
    findings_for,
    free_port,
    installed,
    needs_curl,
)
from tests.coordinator.diagnosis.real_servers import lab as lab  # the fixture, by its name
from tlsfleet.agent.model import AddressResult, Failure, Party
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.coordinator.diagnosis.model import Cause, Finding
from tlsfleet.coordinator.lab.misbehaving_servers import BEHAVIOURS, MisbehavingServer
from tlsfleet.coordinator.lab.pki import chain_pem, write_pem

pytestmark = pytest.mark.e2e  # real servers as processes of their own (openssl s_server, HAProxy)

UNKNOWN = "unknown.example.test"
HAPROXY = installed("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed here (Debian: haproxy)")


def _one(found: list[Finding], cause: Cause) -> Finding:
    [finding] = [f for f in found if f.cause is cause]
    return finding


def _probe_without_sni(lab: Lab, port: int) -> AddressResult:
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=None,
            expected_name=NAME,
            connect_timeout=3.0,
            handshake_timeout=5.0,
            context_cache=ContextCache(cafile=str(lab.root)),
        )
    )


def _s_client_without_sni(port: int, cafile: Path) -> Truth:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername", "-CAfile", str(cafile)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
    )
    return Truth(done.returncode, 0, (done.stdout + done.stderr).decode(errors="replace"))


# -------------------------------------------------------------------------------------------- HAProxy


class HAProxy(ServerProcess):
    """One HAProxy process (`-db`: in the foreground, logging to stderr) with one frontend bound as `bind`."""

    def __init__(self, workdir: Path, bind: str) -> None:
        assert HAPROXY is not None
        self.dir = workdir
        port = free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(
            "global\n  log stderr format raw local0 info\n"
            "defaults\n  log global\n  option httplog\n  mode http\n"
            "  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n"
            f"frontend fe\n  bind 127.0.0.1:{port} {bind.replace('{dir}', str(workdir))}\n"
            "  http-request return status 200 content-type text/plain string ok\n"
        )
        # SIGUSR1 is HAProxy's soft stop: finish and exit.
        argv = [HAPROXY, "-f", str(config), "-db"]
        super().__init__(argv, port, workdir / "haproxy.log", stop_signal=signal.SIGUSR1, capture=True)


@pytest.fixture
def served(lab: Lab) -> Path:
    """The lab's leaf for NAME with its intermediate and key in one PEM (HAProxy's `crt`), and one for
    default.example.test, from a crt-list that names NAME only."""
    leaf = lab.pki.issue_leaf(NAME)
    write_pem(lab.tmp / "api.pem", chain_pem(leaf, lab.pki.intermediate) + key_pem(leaf))
    fallback = lab.pki.issue_leaf("default.example.test")
    write_pem(lab.tmp / "default.pem", chain_pem(fallback, lab.pki.intermediate) + key_pem(fallback))
    (lab.tmp / "list.txt").write_text(f"{lab.tmp}/default.pem\n{lab.tmp}/api.pem {NAME}\n")
    return lab.tmp


# ------------------------------------------------------------------- a bind line without ssl


@needs_openssl
def test_an_http_answer_to_the_client_hello_is_quoted_and_the_fix_enables_tls_on_the_listener(lab: Lab) -> None:
    """A listener that speaks HTTP answers the ClientHello with an HTTP error: the agent quotes it, the finding
    names plain HTTP and tells to enable TLS there, not only to probe another port."""
    with MisbehavingServer(BEHAVIOURS["http"]) as server:
        truth = s_client(server.port, NAME, lab.root)
        result = probe(lab, server.port, NAME)
    assert not truth.ok and "wrong version number" in truth.output, truth.output
    hs = result.handshake
    assert hs.failure is Failure.NOT_TLS, hs
    assert "the server answered in plain text: 'HTTP/1.1 400 Bad Request'" in hs.error
    finding = _one(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "speaks plain HTTP" in finding.summary and "'HTTP/1.1 400 Bad Request'" in finding.summary
    assert "`bind ... ssl crt FILE`" in finding.fix and "listen ... ssl" in finding.fix


@needs_openssl
def test_a_binary_answer_that_is_not_tls_is_shown_in_hex_and_not_called_http(lab: Lab) -> None:
    with MisbehavingServer(BEHAVIOURS["random"]) as server:
        result = probe(lab, server.port, NAME)
    assert result.handshake.failure is Failure.NOT_TLS
    assert "the server's first bytes: 07 08 09 0a" in result.handshake.error
    finding = _one(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "plain HTTP, SSH" in finding.summary and "ssl crt" not in finding.fix


@needs_haproxy
@needs_curl
def test_haproxy_bind_without_ssl_answers_the_client_hello_with_http_400(lab: Lab, served: Path) -> None:
    server = HAProxy(served, "")
    truth, fetched, result = clients_see(lab, server)
    assert not truth.ok and "wrong version number" in truth.output, truth.output
    assert fetched.returncode == 35 and "wrong version number" in fetched.stderr, fetched
    assert result.handshake.failure is Failure.NOT_TLS
    assert "answered in plain text: 'HTTP/1.1 400 Bad request'" in result.handshake.error
    finding = _one(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "speaks plain HTTP" in finding.summary and "ssl crt" in finding.fix


# ------------------------------------------------------------------------------------- strict-sni


@needs_openssl
def test_an_sni_name_refused_with_unrecognized_name_names_strict_sni_and_checks_without_sni(lab: Lab) -> None:
    """`s_server -servername_fatal` refuses any other SNI name with a fatal unrecognized_name, as HAProxy's
    strict-sni does; without SNI it answers with its certificate, which the added reproduce command shows."""
    named = lab.pki.issue_leaf(NAME)
    cert2 = write_pem(lab.tmp / "named.pem", named.cert_pem)
    key2 = write_pem(lab.tmp / "named.key", key_pem(named))
    server = lab.s_server(
        lab.pki.issue_leaf("default.example.test"),
        *("-servername", NAME, "-cert2", str(cert2), "-key2", str(key2), "-servername_fatal"),
    )
    truth = s_client(server.port, UNKNOWN, lab.root)
    assert not truth.ok and "unrecognized name" in truth.output, truth.output
    result = probe(lab, server.port, UNKNOWN)
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "unrecognized_name", Party.SERVER), hs
    finding = _one(findings_for(result, server.port, UNKNOWN), Cause.HANDSHAKE_INCOMPLETE)
    assert "strict-sni" in finding.summary and "crt-list" in finding.fix
    [without_sni] = [c for c in finding.reproduce if "-noservername" in c]
    done = subprocess.run(without_sni, shell=True, capture_output=True, text=True, timeout=10)
    assert "CN = default.example.test" in done.stdout  # this server has a default for clients without SNI


@needs_openssl
def test_no_sni_refused_with_unrecognized_name_says_a_default_certificate_is_not_enough_under_strict_sni(
    lab: Lab,
) -> None:
    with MisbehavingServer(BEHAVIOURS["alert:unrecognized_name"]) as server:
        truth = _s_client_without_sni(server.port, lab.root)
        result = _probe_without_sni(lab, server.port)
    assert not truth.ok and "unrecognized name" in truth.output, truth.output
    assert (result.handshake.failure, result.handshake.alert) == (Failure.TLS_ALERT, "unrecognized_name")
    finding = _one(findings_for(result, server.port, send_sni=False), Cause.HANDSHAKE_INCOMPLETE)
    assert "no SNI was sent" in finding.summary and "strict-sni" in finding.summary
    assert "drop `strict-sni`" in finding.fix


@needs_haproxy
@needs_curl
def test_haproxy_strict_sni_refuses_an_unknown_name_and_no_sni_alike(lab: Lab, served: Path) -> None:
    server = HAProxy(served, "ssl crt-list {dir}/list.txt strict-sni")
    try:
        assert s_client(server.port, NAME, lab.root, extra=("-verify_hostname", NAME)).ok
        named = s_client(server.port, UNKNOWN, lab.root)
        bare = _s_client_without_sni(server.port, lab.root)
        fetched = curl(server.port, lab.root, UNKNOWN)
        unknown = probe(lab, server.port, UNKNOWN)
        no_sni = _probe_without_sni(lab, server.port)
    finally:
        server.stop()
    for truth in (named, bare):
        assert not truth.ok and "unrecognized name" in truth.output, truth.output
    assert fetched.returncode == 35 and "unrecognized name" in fetched.stderr, fetched
    assert (unknown.handshake.failure, unknown.handshake.alert) == (Failure.TLS_ALERT, "unrecognized_name")
    assert (no_sni.handshake.failure, no_sni.handshake.alert) == (Failure.TLS_ALERT, "unrecognized_name")
    assert "strict-sni" in _one(findings_for(unknown, server.port, UNKNOWN), Cause.HANDSHAKE_INCOMPLETE).summary
    bare_finding = _one(findings_for(no_sni, server.port, send_sni=False), Cause.HANDSHAKE_INCOMPLETE)
    assert "drop `strict-sni`" in bare_finding.fix


# ------------------------------------------------------------ the first certificate answers any other name


@needs_openssl
def test_a_name_without_a_certificate_gets_the_first_one_and_the_fix_names_haproxy_crt_list(lab: Lab) -> None:
    other = lab.pki.issue_leaf(NAME)
    cert2 = write_pem(lab.tmp / "named.pem", other.cert_pem)
    key2 = write_pem(lab.tmp / "named.key", key_pem(other))
    server = lab.s_server(
        lab.pki.issue_leaf("default.example.test"), "-servername", NAME, "-cert2", str(cert2), "-key2", str(key2)
    )
    truth = s_client(server.port, UNKNOWN, lab.root, extra=("-verify_hostname", UNKNOWN))
    assert not truth.ok and truth.verify_code == 62, truth.output
    result = probe(lab, server.port, UNKNOWN)
    assert result.native.verify_code == 62
    finding = _one(findings_for(result, server.port, UNKNOWN), Cause.HOSTNAME_MISMATCH)
    assert "first certificate of its bind line" in finding.fix and "`crt-list` line" in finding.fix


@needs_haproxy
@needs_curl
def test_haproxy_crt_list_answers_an_unlisted_name_with_its_first_certificate(lab: Lab, served: Path) -> None:
    server = HAProxy(served, "ssl crt-list {dir}/list.txt")
    try:
        truth = s_client(server.port, UNKNOWN, lab.root, extra=("-verify_hostname", UNKNOWN))
        fetched = curl(server.port, lab.root, UNKNOWN)
        result = probe(lab, server.port, UNKNOWN)
    finally:
        server.stop()
    assert not truth.ok and truth.verify_code == 62 and "0 s:CN = default.example.test" in truth.output
    assert fetched.returncode == 60, fetched
    assert result.native.verify_code == 62
    finding = _one(findings_for(result, server.port, UNKNOWN), Cause.HOSTNAME_MISMATCH)
    assert "'CN=default.example.test'" in finding.summary and "crt-list" in finding.fix


# ------------------------------------------------------------------- TLS 1.0/1.1 only, accept-proxy


@needs_openssl
def test_internal_error_from_a_server_limited_to_old_versions_names_haproxy_ssl_min_ver(lab: Lab) -> None:
    server = lab.s_server(lab.pki.issue_leaf(NAME), "-tls1_1")
    truth = s_client(server.port, NAME, lab.root)
    assert not truth.ok and "alert internal error" in truth.output, truth.output
    result = probe(lab, server.port, NAME)
    assert (result.handshake.failure, result.handshake.alert) == (Failure.TLS_ALERT, "internal_error")
    finding = _one(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "HAProxy with `ssl-max-ver TLSv1.1`" in finding.summary
    assert "`ssl-min-ver TLSv1.2`" in finding.fix and "'SSL handshake failure'" in finding.fix


@needs_haproxy
def test_haproxy_ssl_max_ver_tlsv1_1_is_internal_error_and_logs_no_reason(lab: Lab, served: Path) -> None:
    server = HAProxy(served, "ssl crt {dir}/api.pem ssl-min-ver TLSv1.0 ssl-max-ver TLSv1.1")
    try:
        truth = s_client(server.port, NAME, lab.root)
        tls12 = s_client(server.port, NAME, lab.root, extra=("-tls1_2",))
        result = probe(lab, server.port, NAME)
    finally:
        server.stop()
    for seen in (truth, tls12):  # even a TLS 1.2-only ClientHello: no protocol_version alert to tell it by
        assert not seen.ok and "alert internal error" in seen.output, seen.output
    assert "SSL handshake failure" in server.log() and "signature" not in server.log()
    assert (result.handshake.failure, result.handshake.alert) == (Failure.TLS_ALERT, "internal_error")
    assert "ssl-min-ver TLSv1.2" in _one(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE).fix


@needs_haproxy
@needs_curl
def test_haproxy_accept_proxy_reached_directly_resets_and_the_fix_quotes_its_log(lab: Lab, served: Path) -> None:
    server = HAProxy(served, "ssl crt {dir}/api.pem accept-proxy")
    truth, fetched, result = clients_see(lab, server)
    assert not truth.ok and "errno=104" in truth.output, truth.output
    assert fetched.returncode == 35 and "reset" in fetched.stderr.lower(), fetched
    quoted = "Received something which does not look like a PROXY protocol header"
    assert quoted in server.log()
    assert (result.handshake.failure, result.handshake.refused_by) == (Failure.RESET, Party.SERVER)
    finding = _one(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert quoted in finding.fix and "without `accept-proxy`" in finding.fix
