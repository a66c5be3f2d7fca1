"""Probing through an HTTPS proxy: the proxy from the environment and NO_PROXY as curl reads them, and
CONNECT through the lab's intercepting proxy, a real explicit proxy that sees (and re-signs) the TLS."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from tlsfleet.agent import wire
from tlsfleet.agent.model import (
    AddressResult,
    Failure,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    Starttls,
    Target,
    Verdict,
)
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.proxy import DEFAULT_PROXY_PORT, Proxy, bypasses, parse_proxy, proxy_for
from tlsfleet.agent.probe.request_limits import RequestError
from tlsfleet.agent.probe.starttls import Route, route_for
from tlsfleet.coordinator.lab.ground_truth import s_client
from tlsfleet.coordinator.lab.intercepting_proxy import InterceptingProxy, ProxyAuthority
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.starttls_servers import ScriptedServer, Step
from tlsfleet.coordinator.lab.tls_server import ServedIdentity

NAME = "api.behind-proxy.test"


@pytest.fixture(scope="module")
def authority() -> ProxyAuthority:
    return ProxyAuthority.create("Corp Egress")


@pytest.fixture(scope="module")
def proxy_root(authority: ProxyAuthority, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_pem(tmp_path_factory.mktemp("proxy-root") / "root.pem", authority.root_pem()))


def through(proxy: Proxy, cache: ContextCache, *, name: str = NAME, port: int = 443, timeout: float = 2.0):
    return asyncio.run(
        handshake(
            proxy.host,
            port,
            server_hostname_for_sni=name,
            expected_name=name,
            connect_timeout=timeout,
            handshake_timeout=3.0,
            context_cache=cache,
            route=Route(proxy=proxy, connect_host=name),
        )
    )


# --- CONNECT through a real proxy ------------------------------------------------------------------


def test_connect_through_an_intercepting_proxy_sees_its_chain(authority: ProxyAuthority, proxy_root: str) -> None:
    with InterceptingProxy(authority, connect=True) as egress:
        proxy = parse_proxy(f"http://{egress.host}:{egress.port}", "HTTPS_PROXY")
        result = through(proxy, ContextCache(cafile=proxy_root))
        assert list(egress.connects) == [f"{NAME}:443"]
    assert result.connect_failure is Failure.NONE, result.connect_error
    assert result.handshake.failure is Failure.NONE, result.handshake.error
    assert result.native.verdict is Verdict.OK  # this host trusts the proxy's root, as a managed host does
    assert len(result.chain) == 2 and result.chain[1] == authority.issuer.der


def test_the_intercepted_chain_is_refused_where_the_proxy_root_is_not_trusted(authority, tmp_path: Path) -> None:
    other = write_pem(tmp_path / "other.pem", ProxyAuthority.create("Elsewhere").root_pem())
    with InterceptingProxy(authority, connect=True) as egress:
        proxy = parse_proxy(f"{egress.host}:{egress.port}", "https_proxy")
        result = through(proxy, ContextCache(cafile=str(other)))
    assert result.native.verdict is Verdict.UNKNOWN_ISSUER
    assert result.chain[1] == authority.issuer.der


def test_the_intercepting_proxy_agrees_with_s_client_through_its_tunnel(authority, proxy_root: str) -> None:
    env = {**os.environ, "SSL_CERT_FILE": proxy_root, "SSL_CERT_DIR": "/nonexistent"}
    with InterceptingProxy(authority, connect=True) as egress:
        # s_client -proxy speaks CONNECT as curl does; the agent's verdict must be the one it reaches.
        truth = s_client(
            NAME, 443, servername=NAME, env=env, extra=("-proxy", f"{egress.host}:{egress.port}"), linger=0.05
        )
        result = through(
            parse_proxy(f"http://{egress.host}:{egress.port}", "HTTPS_PROXY"), ContextCache(cafile=proxy_root)
        )
    assert truth.connected, truth.output
    assert result.native.verdict is Verdict.OK and truth.verify_code == 0
    assert result.handshake.tls_version == truth.protocol


def test_a_403_from_the_proxy_is_reported_with_its_status_line(authority: ProxyAuthority, proxy_root: str) -> None:
    with InterceptingProxy(authority, connect=True, connect_status=403) as egress:
        result = through(
            parse_proxy(f"http://{egress.host}:{egress.port}", "HTTPS_PROXY"), ContextCache(cafile=proxy_root)
        )
    assert result.connect_failure is Failure.PROXY_REFUSED
    assert f"refused CONNECT {NAME}:443" in result.connect_error
    assert "'HTTP/1.1 403 Forbidden'" in result.connect_error
    assert result.native.verdict is Verdict.NO_CHAIN
    assert result.proxy_status == 403  # the status itself, for the coordinator's words
    [back] = wire.result_from_wire(wire.result_to_wire(_result_of(result), "a", "1"))[0].addresses
    assert back.proxy_status == 403


def _result_of(address: AddressResult) -> ProbeResult:
    return ProbeResult(
        target=Target(NAME, 443),
        sni=NAME,
        expected_name=NAME,
        resolution=Resolution(addresses=(address.address,), duration_ms=0.0),
        addresses=(address,),
        trust_stores=(),
        agent_received_ns=1,
        agent_replied_ns=2,
    )


def test_proxy_credentials_from_the_url_are_sent(authority: ProxyAuthority, proxy_root: str) -> None:
    cache = ContextCache(cafile=proxy_root)
    with InterceptingProxy(authority, connect=True, credentials="probe:s3cr3t/%") as egress:
        without = through(parse_proxy(f"http://{egress.host}:{egress.port}", "HTTPS_PROXY"), cache)
        url = f"http://probe:s3cr3t%2F%25@{egress.host}:{egress.port}"
        proxy = parse_proxy(url, "HTTPS_PROXY")
        with_them = through(proxy, cache)
    assert without.connect_failure is Failure.PROXY_REFUSED and without.proxy_status == 407
    assert with_them.connect_failure is Failure.NONE, with_them.connect_error
    assert proxy.authorization == "Basic " + base64.b64encode(b"probe:s3cr3t/%").decode()
    assert "s3cr3t" not in proxy.label and "s3cr3t" not in repr(proxy)


def test_starttls_runs_inside_the_tunnel(pki: LabPKI, tmp_path: Path) -> None:
    """CONNECT first, then the SMTP dialogue through the tunnel, then TLS: one scripted peer plays the
    proxy and the mail server behind it, and records the order it was spoken to."""
    leaf = pki.issue_leaf(NAME)
    heard: list[bytes] = []

    def answer(request: bytes) -> Step:
        heard.append(request.split()[0])
        if request.startswith(b"CONNECT "):
            return Step(b"HTTP/1.1 200 Connection established\r\n\r\n220 mail ESMTP\r\n")
        if request.startswith(b"EHLO "):
            return Step(b"250-mail\r\n250 STARTTLS\r\n")
        return Step(b"220 go ahead\r\n", tls=request.startswith(b"STARTTLS"))

    roots = ContextCache(cafile=str(write_pem(tmp_path / "root.pem", pki.root.cert_pem)))
    with ScriptedServer(b"", answer, identity=ServedIdentity.of(leaf, pki.intermediate)) as peer:
        proxy = parse_proxy(f"{peer.host}:{peer.port}", "HTTPS_PROXY")
        result = asyncio.run(
            handshake(
                proxy.host,
                25,
                server_hostname_for_sni=NAME,
                expected_name=NAME,
                connect_timeout=2.0,
                handshake_timeout=3.0,
                context_cache=roots,
                route=Route(proxy=proxy, connect_host=NAME, starttls=Starttls.SMTP),
            )
        )
    assert heard == [b"CONNECT", b"EHLO", b"STARTTLS"]
    assert result.handshake.failure is Failure.NONE and result.native.verdict is Verdict.OK
    assert result.chain[0] == leaf.der


def test_a_proxy_that_answers_garbage_or_nothing(proxy_root: str) -> None:
    cache = ContextCache(cafile=proxy_root)
    with ScriptedServer(b"", lambda r: Step(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as garbage:
        bad = through(parse_proxy(f"{garbage.host}:{garbage.port}", "HTTPS_PROXY"), cache)
    with ScriptedServer(b"", lambda r: None) as silent:
        quiet = through(parse_proxy(f"{silent.host}:{silent.port}", "HTTPS_PROXY"), cache, timeout=0.3)
    assert bad.connect_failure is Failure.PROXY_ERROR and "not HTTP" in bad.connect_error
    assert quiet.connect_failure is Failure.PROXY_ERROR and "did not answer CONNECT" in quiet.connect_error


def test_a_proxy_that_refuses_tcp_is_named(proxy_root: str) -> None:
    with ScriptedServer(b"", lambda r: None) as gone:
        port = gone.port
    result = through(parse_proxy(f"127.0.0.1:{port}", "HTTPS_PROXY"), ContextCache(cafile=proxy_root))
    assert result.connect_failure is Failure.REFUSED
    assert result.connect_error.startswith(f"proxy 127.0.0.1:{port}: ECONNREFUSED")


def test_the_engine_probes_through_https_proxy_and_records_it(authority: ProxyAuthority, proxy_root: str) -> None:
    with InterceptingProxy(authority, connect=True) as egress:
        environ = {"HTTPS_PROXY": f"http://user:pw@{egress.host}:{egress.port}", "NO_PROXY": "localhost,.internal"}
        engine = ProbeEngine(environ=environ, native_cafile=proxy_root)
        request = ProbeRequest(Target(NAME, 443), ProbeOptions(via_proxy=True, connect_timeout=2.0))
        result: ProbeResult = asyncio.run(engine.probe(request))
        bypassed = asyncio.run(
            engine.probe(
                ProbeRequest(Target("db.internal", 443), ProbeOptions(via_proxy=True, pin_address="127.0.0.1"))
            )
        )
    assert result.proxy == f"http://user:***@{egress.host}:{egress.port}"
    assert result.resolution.addresses == (egress.host,)  # the proxy resolves the name, not this host
    assert result.addresses[0].native.verdict is Verdict.OK
    assert result.starttls is Starttls.NONE
    assert bypassed.proxy == ""  # NO_PROXY's .internal: straight to the pinned address


def test_an_unusable_proxy_variable_refuses_the_probe() -> None:
    engine = ProbeEngine(environ={"HTTPS_PROXY": "socks5://10.0.0.1:1080"})
    with pytest.raises(RequestError, match=r"HTTPS_PROXY='socks5://10.0.0.1:1080': a socks5:// proxy is not supported"):
        asyncio.run(engine.probe(ProbeRequest(Target(NAME, 443), ProbeOptions(via_proxy=True))))


# --- the environment, as curl reads it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypassed"),
    [
        ("api.corp.test", "corp.test", True),
        ("corp.test", "corp.test", True),
        ("api.corp.test", ".corp.test", True),
        ("corp.test", ".corp.test", True),  # curl ignores the leading dot
        ("mycorp.test", "corp.test", False),  # a suffix only at a dot boundary
        ("API.Corp.Test.", "corp.test", True),  # case and the trailing dot do not matter
        ("api.corp.test", "other.test, corp.test", True),
        ("api.corp.test", "other.test corp.test", True),
        ("api.corp.test", "*", True),
        ("api.corp.test", "*.corp.test", False),  # curl takes no wildcards but the lone *
        ("api.corp.test", "", False),
        ("10.1.2.3", "10.1.2.3", True),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("10.1.2.3", "10.1.2.4", False),
        ("10.1.2.3", "1.2.3", False),  # no suffix matching for addresses
        ("[::1]", "::1", True),
        ("::1", "[::1]", True),
        ("fd00::5", "fd00::/8", True),
        ("localhost", "localhost:8080", False),  # no ports in entries, as in curl
    ],
)
def test_no_proxy_matching(host: str, no_proxy: str, bypassed: bool) -> None:
    assert bypasses(host, no_proxy) is bypassed


def test_which_variable_names_the_proxy() -> None:
    assert proxy_for("a.test", {}) is None
    lower_first = proxy_for("a.test", {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"})
    assert lower_first is not None and (lower_first.host, lower_first.port) == ("low", 1)
    fallback = proxy_for("a.test", {"ALL_PROXY": "proxy.corp"})
    assert fallback is not None and (fallback.host, fallback.port) == ("proxy.corp", DEFAULT_PROXY_PORT)
    assert proxy_for("a.test", {"HTTP_PROXY": "http://p:3128"}) is None  # http_proxy is for http URLs
    assert proxy_for("a.test", {"HTTPS_PROXY": "http://p:3128", "no_proxy": "a.test"}) is None
    assert proxy_for("a.test", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "b.test"}) is not None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("https://p:3128", "https:// proxy is not supported"),
        ("socks5h://p:1080", "socks5h:// proxy is not supported"),
        ("http://p:99999", "port that is not a number 1-65535"),
        ("http://:3128", "names no proxy host"),
    ],
)
def test_unusable_proxy_urls_are_refused_by_name(value: str, complaint: str) -> None:
    with pytest.raises(RequestError, match=complaint):
        parse_proxy(value, "HTTPS_PROXY")


def test_the_route_connects_to_the_proxy_and_asks_for_the_target() -> None:
    request = ProbeRequest(Target("db.corp.test", 5432), ProbeOptions(via_proxy=True, starttls=Starttls.POSTGRES))
    route = route_for(request, {"HTTPS_PROXY": "http://egress:3128"})
    assert route.proxy is not None and route.dial("10.9.9.9", 5432) == ("egress", 3128)
    assert route.connect_host == "db.corp.test" and route.starttls is Starttls.POSTGRES
    assert route_for(ProbeRequest(Target("db.corp.test", 443)), {"HTTPS_PROXY": "http://egress:3128"}).proxy is None
