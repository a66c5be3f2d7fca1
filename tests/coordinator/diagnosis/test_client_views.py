"""Client views that differ on one host: OpenSSL clients and Python's default context disagree."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.coordinator.diagnosis.handshakes import HOST, IP1, broken, with_python_view
from tests.outcomes import address, observe, outcome
from tlsfleet.agent.model import AddressResult, Client, ClientView, Failure, Verdict
from tlsfleet.coordinator.diagnosis import client_views
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

PY_HANDSHAKE_FAILURE = ClientView(
    Client.PYTHON,
    Verdict.NO_CHAIN,
    failure=Failure.TLS_ALERT,
    error="[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure (_ssl.c:1006)",
    detail="Python's default context (security level 2, TLSv1.2 to any version, 14 TLS<=1.2 ciphers) fails: "
    "tls_alert handshake_failure: it does not offer TLSv1.2 with AES128-GCM-SHA256, which the openssl view negotiated",
)
PY_PROTOCOL_VERSION = ClientView(
    Client.PYTHON,
    Verdict.NO_CHAIN,
    failure=Failure.TLS_ALERT,
    error="[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version (_ssl.c:1006)",
)


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf(HOST).der, pki.intermediate.der)


def _run(observation: Observation) -> list[Finding]:
    found = list(client_views.findings(observation, DiagnosisSettings.for_request(observation.request)))
    assert all(f.cause is Cause.CLIENT_VIEWS_DIFFER for f in found)
    return found


def _ok(chain: tuple[bytes, ...], version: str, cipher: str) -> AddressResult:
    result = address(IP1, chain, tls_version=version)
    return replace(result, handshake=replace(result.handshake, cipher=cipher))


def test_static_rsa_only_server_leaves_python_out_on_every_vantage(chain: tuple[bytes, bytes]) -> None:
    static = with_python_view(_ok(chain, "TLSv1.2", "AES128-GCM-SHA256"), PY_HANDSHAKE_FAILURE)
    (f,) = _run(observe(outcome("web-1", [static]), outcome("web-2", [static])))
    assert f.severity is Severity.WARNING
    assert f.agents == ("web-1", "web-2")
    assert f.summary.startswith(
        "On every vantage (web-1 and web-2), OpenSSL clients (curl, openssl s_client) connect to api.example.test:443 "
        "(TLSv1.2 AES128-GCM-SHA256) but Python's default context refuses: no common cipher (the server offers only "
        "static RSA key exchange, AES128-GCM-SHA256, which Python's default context leaves out)"
    )
    assert "the server's configuration leaves these clients out everywhere" in f.summary
    assert "ECDHE" in f.fix and "set_ciphers" in f.fix
    python = next(e for e in f.evidence if e.field == "python view")
    assert "it does not offer TLSv1.2 with AES128-GCM-SHA256" in python.values[0][1]
    openssl = next(e for e in f.evidence if e.field == "openssl view")
    assert openssl.values[0] == (f"web-1@{IP1}", "ok TLSv1.2 AES128-GCM-SHA256")
    assert f.reproduce[0].startswith("openssl s_client -connect 127.0.0.41:443 -servername api.example.test")
    assert f.reproduce[1].startswith("python3 -c ") and "create_default_context" in f.reproduce[1]


def test_one_host_differing_is_named_alone_and_the_server_is_not_blamed(chain: tuple[bytes, bytes]) -> None:
    static = with_python_view(_ok(chain, "TLSv1.2", "AES128-GCM-SHA256"), PY_HANDSHAKE_FAILURE)
    agree = _ok(chain, "TLSv1.3", "TLS_AES_128_GCM_SHA256")
    (f,) = _run(observe(outcome("web-1", [static]), outcome("web-2", [agree])))
    assert f.agents == ("web-1",) and f.severity is Severity.WARNING
    assert f.summary.startswith("On web-1, OpenSSL clients (curl, openssl s_client) connect")
    assert "these hosts' client settings, not the server" in f.summary
    assert f.fix.startswith("On web-1: ")


def test_tls10_that_only_openssl_accepts(chain: tuple[bytes, bytes]) -> None:
    legacy = with_python_view(_ok(chain, "TLSv1", "ECDHE-RSA-AES256-SHA"), PY_PROTOCOL_VERSION)
    (f,) = _run(observe(outcome("a", [legacy]), outcome("b", [legacy])))
    assert (
        "no common version (the server speaks TLSv1; Python's default context requires TLS 1.2 or later)" in f.summary
    )
    assert "Enable TLS 1.2" in f.fix


def test_openssl_failing_where_python_connects(chain: tuple[bytes, bytes]) -> None:
    failing = broken(IP1, Failure.NO_COMMON_CIPHER, error="[SSL: NO_CIPHERS_AVAILABLE] no ciphers available")
    python = ClientView(Client.PYTHON, Verdict.OK, tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    (f,) = _run(
        observe(outcome("fips-1", [with_python_view(failing, python)]), outcome("web-1", [address(IP1, chain)]))
    )
    assert f.severity is Severity.WARNING and f.agents == ("fips-1",)
    assert "On fips-1, Python's default context connects to api.example.test:443 (TLSv1.3 TLS_AES_256_GCM_SHA384)" in (
        f.summary
    )
    assert "but OpenSSL clients (curl, openssl s_client) fail: no common cipher" in f.summary
    assert "openssl.cnf" in f.fix


def test_python_rejecting_the_chain_on_trust_alone(chain: tuple[bytes, bytes]) -> None:
    python = ClientView(Client.PYTHON, Verdict.UNKNOWN_ISSUER, verify_code=20, failure=Failure.CERT_VERIFY)
    (f,) = _run(observe(outcome("a", [with_python_view(address(IP1, chain), python)])))
    assert f.severity is Severity.WARNING
    assert "Python's default context refuses: it rejects the chain: unknown_issuer (20)" in f.summary


@pytest.mark.parametrize("code", [66, 67, 68, 79])
def test_one_view_refusing_on_policy_is_left_to_the_policy_finding(chain: tuple[bytes, bytes], code: int) -> None:
    python = ClientView(Client.PYTHON, Verdict.OTHER, verify_code=code, failure=Failure.CERT_VERIFY)
    assert _run(observe(outcome("a", [with_python_view(address(IP1, chain), python)]))) == []


def test_both_completing_differently_is_info(chain: tuple[bytes, bytes]) -> None:
    python = ClientView(Client.PYTHON, Verdict.OK, tls_version="TLSv1.3")
    (f,) = _run(observe(outcome("a", [with_python_view(_ok(chain, "TLSv1.2", "AES128-GCM-SHA256"), python)])))
    assert f.severity is Severity.INFO
    assert "both complete, OpenSSL clients with TLSv1.2, Python with TLSv1.3" in f.summary


def test_both_failing_is_left_to_the_handshake_rules() -> None:
    failing = broken(IP1, Failure.PROTOCOL_ERROR, tls_version="TLSv1")
    assert _run(observe(outcome("a", [with_python_view(failing, PY_PROTOCOL_VERSION)]))) == []


def test_no_python_view_no_finding(chain: tuple[bytes, bytes]) -> None:
    assert _run(observe(outcome("a", [address(IP1, chain)]), outcome("b", [address(IP1, chain)]))) == []


def test_static_rsa_names() -> None:
    assert client_views.is_static_rsa("AES128-GCM-SHA256") and client_views.is_static_rsa("DES-CBC3-SHA")
    for forward_secret in ("ECDHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256", ""):
        assert not client_views.is_static_rsa(forward_secret)


def test_openssl_refused_over_versions_where_python_connects_names_the_hosts_minimum() -> None:
    """MinProtocol = TLSv1.3 on the host, a TLS 1.2 server: Python's own minimum (TLS 1.2) lets it through."""
    refused = broken(IP1, Failure.TLS_ALERT, alert="protocol_version", error=PY_PROTOCOL_VERSION.error)
    python = ClientView(Client.PYTHON, Verdict.OK, tls_version="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256")
    (f,) = _run(observe(outcome("strict-1", [with_python_view(refused, python)])))
    assert "fail: no common version (the server speaks up to TLSv1.2, which the host's OpenSSL configuration" in (
        f.summary
    )
    assert "Lower MinProtocol to TLSv1.2" in f.fix
    assert "Python's default context refuses versions below TLS 1.2" not in f.fix
