"""Reachability: handshakes that never complete after TCP connected (timeout, reset, close, not TLS), on every
vantage, on one backend, on some vantages only; and what they are not."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from tests.coordinator.diagnosis.handshakes import HOST, IP1, IP2, broken, with_python_view
from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import AddressResult, Client, ClientView, Failure, Party, Verdict
from tlsfleet.coordinator.diagnosis import reachability
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation, Variant


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf(HOST).der, pki.intermediate.der)


def _incomplete(observation: Observation) -> list[Finding]:
    found = reachability.findings(observation, DiagnosisSettings.for_request(observation.request))
    return [f for f in found if f.cause is Cause.HANDSHAKE_INCOMPLETE]


STALL = broken(IP1, Failure.HANDSHAKE_TIMEOUT, error="no complete handshake within 3.6 s")
RESET = broken(
    IP1,
    Failure.RESET,
    error="the server reset the connection during the handshake: ECONNRESET: Connection reset by peer",
    refused_by=Party.SERVER,
    duration_ms=0.5,
)
CLOSED = broken(
    IP1,
    Failure.CLOSED,
    error="the server closed the connection during the handshake",
    refused_by=Party.SERVER,
    duration_ms=0.8,
)
NOT_TLS = broken(
    IP1, Failure.NOT_TLS, error="[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", duration_ms=0.6
)


@pytest.mark.parametrize(
    ("failed", "phase", "why"),
    [
        (STALL, "TCP connects, then no ServerHello within 3.6 s of the ClientHello", "never answers the ClientHello"),
        (
            RESET,
            "TCP connects, then the connection is reset right after the ClientHello, before any ServerHello",
            "reset on the ClientHello: a firewall or IPS",
        ),
        (
            CLOSED,
            "TCP connects, then the connection is closed right after the ClientHello, before any ServerHello",
            "speaks only old TLS versions such as TLS 1.0",
        ),
        (
            NOT_TLS,
            "TCP connects, but the answer to the ClientHello is not TLS (WRONG_VERSION_NUMBER)",
            "the port does not speak TLS",
        ),
    ],
    ids=["stall", "reset", "closed", "not-tls"],
)
def test_no_handshake_completes_anywhere_is_critical_and_says_in_which_phase(
    failed: AddressResult, phase: str, why: str
) -> None:
    observation = observe(outcome("a", [failed]), outcome("b", [failed]), silent("c"))
    (f,) = _incomplete(observation)
    assert f.severity is Severity.CRITICAL
    assert f.agents == ("a", "b") and f.addresses == (IP1,)
    assert f"No TLS handshake with api.example.test:443 completes ({phase}, on every vantage)" in f.summary
    assert why in f.summary
    assert "it is the server's side" in f.summary
    phases = next(e for e in f.evidence if e.field == "phase")
    assert phases.values[0][0] == f"a@{IP1}" and phases.values[0][1].startswith("TCP connects (0.5 ms)")
    assert next(e for e in f.evidence if e.field == "TCP connect").values[0] == (f"a@{IP1}", "ok in 0.5 ms")
    assert f.reproduce[0] == f"nc -vz -w 5 {IP1} 443"
    assert f.reproduce[1].startswith("timeout 15 openssl s_client -connect 127.0.0.41:443 -servername api.example.test")
    assert "-msg" in f.reproduce[1]


def test_a_server_that_hangs_up_on_the_hello_gets_older_version_and_no_sni_commands() -> None:
    (f,) = _incomplete(observe(outcome("a", [CLOSED]), outcome("b", [CLOSED])))
    assert any("-max_protocol TLSv1.1 -cipher DEFAULT@SECLEVEL=0" in c for c in f.reproduce)
    assert any("-noservername" in c for c in f.reproduce)
    assert not any("-tls1" in c for c in f.reproduce)


def test_not_tls_suggests_starttls() -> None:
    (f,) = _incomplete(observe(outcome("a", [NOT_TLS]), outcome("b", [NOT_TLS])))
    assert "-starttls" in f.fix
    assert any("HEAD / HTTP/1.0" in c for c in f.reproduce)


def test_a_stall_after_the_server_hello_says_so(chain: tuple[bytes, bytes]) -> None:
    late = broken(IP1, Failure.HANDSHAKE_TIMEOUT, tls_version="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256")
    (f,) = _incomplete(observe(outcome("a", [late]), outcome("b", [late])))
    assert "the ServerHello (TLSv1.2) arrives, then nothing more within 3.6 s" in f.summary
    assert "MTU black hole" in f.summary and "MSS" in f.fix


def test_only_some_vantages_failing_names_them_and_never_the_server(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("dc-1", [RESET]),
        outcome("dc-2", [RESET]),
        outcome("web-1", [address(IP1, chain, tls_version="TLSv1.3")]),
    )
    (f,) = _incomplete(observation)
    assert f.severity is Severity.CRITICAL
    assert f.agents == ("dc-1", "dc-2")
    assert f.summary.startswith(
        "dc-1 and dc-2 cannot complete a TLS handshake with api.example.test:443 (TCP connects, then the connection is "
        "reset right after the ClientHello, before any ServerHello) while web-1"
    )
    assert "while web-1 (1 vantage) completes it (TLSv1.3)" in f.summary
    assert "a middlebox, firewall or proxy on their path" in f.summary and "not the server" in f.summary
    assert "server's side" not in f.summary
    assert "HTTPS_PROXY" in f.fix
    negotiated = next(e for e in f.evidence if e.field == "negotiated")
    assert negotiated.values == ((f"web-1@{IP1}", "TLSv1.3 TLS_AES_128_GCM_SHA256"),)


def test_one_backend_that_stalls_for_everyone(chain: tuple[bytes, bytes]) -> None:
    stalled = broken(IP2, Failure.HANDSHAKE_TIMEOUT)
    pool = [address(IP1, chain), stalled]
    (f,) = _incomplete(observe(outcome("a", pool), outcome("b", pool)))
    assert f.addresses == (IP2,) and set(f.agents) == {"a", "b"}
    assert f"{IP2} behind api.example.test never completes a TLS handshake with a and b" in f.summary
    assert f"which complete it with {IP1} (TLSv1.3)" in f.summary
    assert IP2 in f.fix and "out of the pool" in f.fix


def test_other_alerts_and_protocol_errors_are_never_silent() -> None:
    unrecognized = broken(IP1, Failure.TLS_ALERT, alert="unrecognized_name", refused_by=Party.SERVER)
    (f,) = _incomplete(observe(outcome("a", [unrecognized]), outcome("b", [unrecognized])))
    assert "with alert unrecognized_name" in f.summary and "does not serve the name sent in SNI" in f.summary
    error = broken(IP1, Failure.PROTOCOL_ERROR, error="[SSL: BAD_PACKET] bad packet (_ssl.c:1006)")
    (g,) = _incomplete(observe(outcome("a", [error]), outcome("b", [error])))
    assert "protocol error (BAD_PACKET)" in g.summary


def test_a_refusal_that_another_sni_setting_completes_is_left_to_sni(chain: tuple[bytes, bytes]) -> None:
    no_sni = request(HOST, send_sni=False)
    observation = observe(
        *(outcome(a, [CLOSED]) for a in "ab"),
        variants=[Variant("no SNI", no_sni, tuple(outcome(a, [address(IP1, chain)], req=no_sni) for a in "ab"))],
    )
    assert _incomplete(observation) == []


@pytest.mark.parametrize(
    "other",
    [
        address(IP1, (), connect_failure=Failure.REFUSED),
        broken(IP1, Failure.TLS_ALERT, alert="protocol_version"),
        broken(IP1, Failure.NO_COMMON_CIPHER),
        broken(IP1, Failure.CLIENT_CERT_REQUIRED, requested=True),
        broken(IP1, Failure.CERT_TOO_LARGE),
        broken(IP1, Failure.WEAK_KEY_EXCHANGE),
    ],
    ids=["refused", "version-alert", "no-cipher", "client-cert", "too-large", "weak-kx"],
)
def test_what_other_rules_explain_is_not_an_incomplete_handshake(other: AddressResult) -> None:
    assert _incomplete(observe(outcome("a", [other]), outcome("b", [other]))) == []


def test_a_healthy_fleet_gives_nothing(chain: tuple[bytes, bytes]) -> None:
    assert _incomplete(observe(*(outcome(a, [address(IP1, chain)]) for a in "abc"))) == []


def test_python_completing_where_openssl_is_cut_off_everywhere_is_not_the_servers() -> None:
    python = ClientView(Client.PYTHON, Verdict.OK, tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")
    cut = with_python_view(CLOSED, python)
    (f,) = _incomplete(observe(outcome("a", [cut]), outcome("b", [cut])))
    assert "Python's default context completes it on a and b" in f.summary
    assert "OpenSSL configuration of these hosts" in f.summary
    assert "server's side" not in f.summary


def _unreachable(observation: Observation) -> list[Finding]:
    found = reachability.findings(observation, DiagnosisSettings.for_request(observation.request))
    return [f for f in found if f.cause is Cause.UNREACHABLE]


def test_a_proxy_that_refuses_the_tunnel_is_its_own_finding_beside_a_refused_port() -> None:
    """Through the proxy and straight to the port are two roads, and each says what to look at."""
    proxied = outcome("edge-1", [address(IP1, (), connect_failure=Failure.PROXY_REFUSED)])
    direct = outcome("edge-2", [address(IP1, (), connect_failure=Failure.REFUSED)])
    by_proxy, by_network = sorted(_unreachable(observe(proxied, direct)), key=lambda f: "proxy" not in f.summary)
    assert by_proxy.agents == ("edge-1",) and "through the HTTPS proxy" in by_proxy.summary
    assert "NO_PROXY" in by_proxy.fix and "firewall" not in by_proxy.fix
    assert by_network.agents == ("edge-2",) and "a network fact" in by_network.summary
    assert all(f.severity is Severity.CRITICAL for f in (by_proxy, by_network)), "no vantage got through"


def test_a_server_without_starttls_was_reached() -> None:
    no_tls = outcome("edge-1", [address(IP1, (), connect_failure=Failure.STARTTLS_UNSUPPORTED)])
    (finding,) = _unreachable(observe(no_tls))
    assert f"answers from every vantage at {IP1}, but TLS does not start" in finding.summary
    assert "--starttls" in finding.fix


def test_a_server_that_turns_some_hosts_away_before_starttls_is_told_apart_from_one_without_it(
    chain: tuple[bytes, bytes],
) -> None:
    words = 'the server turned the session away before STARTTLS: it greets with MySQL error 1130: "Host ..."'
    away = replace(address(IP1, (), connect_failure=Failure.STARTTLS_REFUSED), connect_error=words)
    (finding,) = _unreachable(observe(outcome("edge-1", [away]), outcome("edge-2", [address(IP1, chain)])))
    assert finding.severity is Severity.WARNING and finding.agents == ("edge-1",)
    assert f"at {IP1} turns edge-1 away before STARTTLS can be asked (starttls_refused)" in finding.summary
    assert finding.fix.startswith("Read the server's words") and "Turn TLS on" not in finding.fix
    assert words in finding.evidence[0].values[0][1]


NO_RENEGOTIATION_INFO = broken(
    IP1,
    Failure.PROTOCOL_ERROR,
    tls_version="TLSv1.2",
    cipher="ECDHE-RSA-AES128-GCM-SHA256",
    error="[SSL: UNSAFE_LEGACY_RENEGOTIATION_DISABLED] unsafe legacy renegotiation disabled (_ssl.c:1006)",
    refused_by=Party.CLIENT,
    duration_ms=0.7,
)


def test_a_server_without_secure_renegotiation_is_named_with_the_option_that_lets_clients_through() -> None:
    (f,) = _incomplete(observe(outcome("a", [NO_RENEGOTIATION_INFO]), outcome("b", [NO_RENEGOTIATION_INFO])))
    assert f.severity is Severity.CRITICAL
    assert "does not support secure renegotiation (RFC 5746" in f.summary
    assert f.fix.startswith("Upgrade or reconfigure the server's TLS stack to support RFC 5746")
    assert "UnsafeLegacyServerConnect" in f.fix


def test_hosts_allowing_legacy_servers_get_through_and_the_others_are_told_why(chain: tuple[bytes, bytes]) -> None:
    """Hosts with Options = UnsafeLegacyServerConnect complete; the strict ones are named, with the cause."""
    (f,) = _incomplete(observe(outcome("debian-1", [NO_RENEGOTIATION_INFO]), outcome("rhel-1", [address(IP1, chain)])))
    assert f.agents == ("debian-1",)
    assert "RFC 5746" in f.fix and "rhel-1 gets through" in f.fix, f.fix


def test_an_alpn_protocol_the_client_did_not_offer_is_named_and_reproduced_with_the_offer() -> None:
    """OpenSSL refuses it with a bare BAD_EXTENSION; the agent named the protocol the server chose."""
    refused = broken(
        IP1,
        Failure.PROTOCOL_ERROR,
        tls_version="TLSv1.3",
        cipher="TLS_AES_128_GCM_SHA256",
        error="the server selected ALPN protocol 'http/1.1', which the client did not offer (offered h2): "
        "[SSL: BAD_EXTENSION] bad extension (_ssl.c:1006)",
        refused_by=Party.CLIENT,
        duration_ms=0.9,
    )
    unoffered = dataclasses.replace(refused, handshake=dataclasses.replace(refused.handshake, alpn="http/1.1"))
    base = request()
    offered = dataclasses.replace(base, options=dataclasses.replace(base.options, alpn=("h2",)))
    (f,) = _incomplete(observe(outcome("a", [unoffered]), outcome("b", [unoffered]), req=offered))
    assert f.severity is Severity.CRITICAL
    assert "the server selected ALPN protocol 'http/1.1', which the client did not offer" in f.summary
    assert "selects an application protocol in ALPN that the client did not offer" in f.summary
    assert "sends TLS that OpenSSL clients reject" not in f.summary
    assert f.fix.startswith("Make the server choose among the protocols the client offers")
    # Without the offer the handshake would complete: every s_client command offers what the probe offered.
    commands = [c for c in f.reproduce if "s_client" in c]
    assert commands and all(" -alpn h2 " in c for c in commands), f.reproduce


def test_an_unrecognized_name_alert_to_a_probe_without_sni_does_not_speak_of_the_name_sent() -> None:
    bare = request(send_sni=False)
    refused = broken(
        IP1,
        Failure.TLS_ALERT,
        alert="unrecognized_name",
        error="[SSL: TLSV1_UNRECOGNIZED_NAME] tlsv1 unrecognized name (_ssl.c:1006)",
        refused_by=Party.SERVER,
        duration_ms=0.5,
    )
    (f,) = _incomplete(observe(outcome("a", [refused], req=bare), outcome("b", [refused], req=bare), req=bare))
    assert "no SNI was sent, and the server refuses clients that name no host" in f.summary
    assert "the name sent in SNI" not in f.summary
    assert f.fix.startswith("Send SNI: probe without --no-sni")
    (named,) = _incomplete(observe(outcome("a", [refused]), outcome("b", [refused])))
    assert "the server does not serve the name sent in SNI" in named.summary
