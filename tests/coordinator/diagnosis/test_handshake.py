"""Refusals over what one side presented: a client certificate, a certificate message too large, a weak key
exchange; and the classification every handshake rule shares."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.coordinator.diagnosis.handshakes import HOST, IP1, IP2, broken
from tests.outcomes import address, observe, outcome, request
from tlsfleet.agent.model import AddressResult, Failure, Party, Verdict
from tlsfleet.coordinator.diagnosis import handshake
from tlsfleet.coordinator.diagnosis.handshake import Outcome
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

CA = "CN=Acme Client CA,O=Acme"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf(HOST).der, pki.intermediate.der)


def _run(observation: Observation) -> list[Finding]:
    return list(handshake.findings(observation, DiagnosisSettings.for_request(observation.request)))


def _cert_required(ip: str, chain: tuple[bytes, ...], *, tls13: bool = True, presented: str = "") -> AddressResult:
    if tls13:
        return broken(
            ip,
            Failure.CLIENT_CERT_REQUIRED,
            chain=chain,
            tls_version="TLSv1.3",
            cipher="TLS_AES_256_GCM_SHA384",
            alert="certificate_required",
            error="[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)",
            refused_by=Party.SERVER,
            requested=True,
            ca_names=(CA,),
            client_cert=presented,
        )
    return broken(
        ip,
        Failure.CLIENT_CERT_REQUIRED,
        chain=chain,
        tls_version="TLSv1.2",
        cipher="ECDHE-ECDSA-AES256-GCM-SHA384",
        alert="handshake_failure",
        error="the server requires a client certificate and none was presented: [SSL: SSLV3_ALERT_HANDSHAKE_FAILURE]",
        refused_by=Party.SERVER,
        requested=True,
        ca_names=(CA,),
    )


# --- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (address(IP1, (b"x",)), Outcome.COMPLETED),
        (address(IP1, (b"x",), native=Verdict.UNKNOWN_ISSUER), Outcome.COMPLETED),
        (broken(IP1, Failure.NO_COMMON_VERSION), Outcome.NEGOTIATION),
        (broken(IP1, Failure.NO_COMMON_CIPHER), Outcome.NEGOTIATION),
        (broken(IP1, Failure.TLS_ALERT, alert="protocol_version"), Outcome.NEGOTIATION),
        (broken(IP1, Failure.TLS_ALERT, alert="handshake_failure"), Outcome.NEGOTIATION),
        (broken(IP1, Failure.PROTOCOL_ERROR, tls_version="TLSv1"), Outcome.NEGOTIATION),
        (broken(IP1, Failure.PROTOCOL_ERROR, tls_version="TLSv1.2"), Outcome.INCOMPLETE),
        (broken(IP1, Failure.PROTOCOL_ERROR), Outcome.INCOMPLETE),
        (broken(IP1, Failure.TLS_ALERT, alert="handshake_failure", requested=True), Outcome.CLIENT_CERT),
        (broken(IP1, Failure.TLS_ALERT, alert="unknown_ca", requested=True, client_cert="c"), Outcome.CLIENT_CERT),
        (broken(IP1, Failure.CLOSED, requested=True, client_cert="c"), Outcome.CLIENT_CERT),
        (broken(IP1, Failure.CLOSED, requested=True), Outcome.INCOMPLETE),
        (broken(IP1, Failure.CLIENT_CERT_REQUIRED), Outcome.CLIENT_CERT),
        (broken(IP1, Failure.CERT_TOO_LARGE), Outcome.CERT_TOO_LARGE),
        (broken(IP1, Failure.WEAK_KEY_EXCHANGE), Outcome.WEAK_KEY_EXCHANGE),
        (broken(IP1, Failure.HANDSHAKE_TIMEOUT), Outcome.INCOMPLETE),
        (broken(IP1, Failure.RESET), Outcome.INCOMPLETE),
        (broken(IP1, Failure.NOT_TLS), Outcome.INCOMPLETE),
        (broken(IP1, Failure.TLS_ALERT, alert="unknown_ca"), Outcome.INCOMPLETE),
        (broken(IP1, Failure.TOO_LARGE), Outcome.INCOMPLETE),
        (address(IP1, (), connect_failure=Failure.REFUSED), None),
    ],
)
def test_every_failure_has_one_family(result: AddressResult, expected: Outcome | None) -> None:
    (row,) = observe(outcome("a", [result])).rows
    assert handshake.outcome_of(row) is expected


def test_reason_code_reads_openssls_mnemonic() -> None:
    assert handshake.reason_code("[SSL: DH_KEY_TOO_SMALL] dh key too small (_ssl.c:1006)") == "DH_KEY_TOO_SMALL"
    assert handshake.reason_code("no complete handshake within 3 s") == ""


# --- client certificate -----------------------------------------------------------------------------


@pytest.mark.parametrize("tls13", [True, False], ids=["tls13", "tls12"])
def test_client_certificate_required_everywhere_says_so_and_names_the_cas(
    chain: tuple[bytes, bytes], tls13: bool
) -> None:
    observation = observe(*(outcome(a, [_cert_required(IP1, chain, tls13=tls13)]) for a in ("a", "b")))
    (f,) = _run(observation)
    assert f.cause is Cause.CLIENT_CERT_REQUIRED and f.severity is Severity.WARNING
    assert f.agents == ("a", "b") and f.addresses == (IP1,)
    assert (
        "api.example.test:443 requires a client certificate (mutual TLS) and every vantage presented none" in f.summary
    )
    assert "it accepts certificates issued by 'Acme Client CA'" in f.summary
    assert ("alert certificate_required" if tls13 else "alert handshake_failure") in f.summary
    assert "server's policy, not a fault" in f.summary
    assert "--client-cert NAME=CERT,KEY" in f.fix and "tlsfleet probe --client-cert NAME" in f.fix
    presented = next(e for e in f.evidence if e.field == "client certificate presented")
    assert presented.values == ((f"a@{IP1}", "none"), (f"b@{IP1}", "none"))
    names = next(e for e in f.evidence if e.field == "acceptable CA names")
    assert names.values[0] == (f"a@{IP1}", CA)
    assert any("Acceptable client certificate CA names" in c for c in f.reproduce)
    assert any("-cert client.pem -key client.key" in c for c in f.reproduce)


def test_a_presented_certificate_refused_is_critical(chain: tuple[bytes, bytes]) -> None:
    refused = broken(
        IP1,
        Failure.TLS_ALERT,
        chain=chain,
        tls_version="TLSv1.3",
        alert="unknown_ca",
        refused_by=Party.SERVER,
        requested=True,
        ca_names=(CA,),
        client_cert="billing",
    )
    observation = observe(outcome("a", [refused]), outcome("b", [refused]))
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert "refuses the client certificate 'billing' that a and b present (alert unknown_ca" in f.summary
    assert "client CA list" in f.fix and "clientAuth" in f.fix


def test_only_the_vantages_without_a_certificate_are_named(chain: tuple[bytes, bytes]) -> None:
    plain = address(IP1, chain)
    with_cert = replace(plain, handshake=replace(plain.handshake, client_cert_requested=True, client_cert="billing"))
    observation = observe(outcome("bare", [_cert_required(IP1, chain)]), outcome("mtls", [with_cert]))
    (f,) = _run(observation)
    assert f.agents == ("bare",) and f.severity is Severity.WARNING
    assert "demands a client certificate from bare, which presented none" in f.summary
    assert "mtls presents a client certificate (billing) and completes it" in f.summary
    assert "requires a client certificate (mutual TLS) and every" not in f.summary  # the server is not blamed


def test_a_backend_that_alone_requires_a_certificate(chain: tuple[bytes, bytes]) -> None:
    pool = [address(IP1, chain), _cert_required(IP2, chain)]
    (f,) = _run(observe(outcome("a", pool), outcome("b", pool)))
    assert f.addresses == (IP2,) and set(f.agents) == {"a", "b"}
    assert f"{IP2} behind api.example.test requires a client certificate from a and b" in f.summary
    assert f"while {IP1} completes the handshake without one" in f.summary


# --- certificate too large --------------------------------------------------------------------------


def _too_large(ip: str) -> AddressResult:
    return broken(
        ip,
        Failure.CERT_TOO_LARGE,
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        error="[SSL: EXCESSIVE_MESSAGE_SIZE] excessive message size (_ssl.c:1006)",
        refused_by=Party.CLIENT,
    )


def test_certificate_too_large_everywhere_is_the_servers(chain: tuple[bytes, bytes]) -> None:
    (f,) = _run(observe(outcome("a", [_too_large(IP1)]), outcome("b", [_too_large(IP1)])))
    assert f.cause is Cause.CERTIFICATE_TOO_LARGE and f.severity is Severity.CRITICAL
    assert "larger than OpenSSL clients accept (100 KiB)" in f.summary
    assert "after the ServerHello (TLSv1.3 TLS_AES_256_GCM_SHA384)" in f.summary
    assert "its size is unknown" in f.summary and "The server must send a smaller one" in f.summary
    assert "fewer names per certificate" in f.fix and "SSL_CTX_set_max_cert_list" in f.fix
    assert any("excessive message size" in c for c in f.reproduce)


def test_certificate_too_large_on_some_vantages_names_their_library_and_the_size(chain: tuple[bytes, bytes]) -> None:
    (f,) = _run(observe(outcome("small", [_too_large(IP1)]), outcome("big", [address(IP1, chain)])))
    assert f.agents == ("small",)
    assert "The clients on small refuse" in f.summary and "big (1 vantage) accepts it" in f.summary
    assert f"about {sum(len(c) for c in chain) / 1024:.0f} KiB" in f.summary
    assert "must send a smaller one" not in f.summary


# --- weak key exchange ------------------------------------------------------------------------------


def _weak(ip: str, chain: tuple[bytes, ...]) -> AddressResult:
    return broken(
        ip,
        Failure.WEAK_KEY_EXCHANGE,
        chain=chain,
        tls_version="TLSv1.2",
        cipher="DHE-RSA-AES128-GCM-SHA256",
        error="[SSL: DH_KEY_TOO_SMALL] dh key too small (_ssl.c:1006)",
        refused_by=Party.CLIENT,
    )


def test_weak_dh_everywhere_names_the_group_and_the_fix(chain: tuple[bytes, bytes]) -> None:
    (f,) = _run(observe(outcome("a", [_weak(IP1, chain)]), outcome("b", [_weak(IP1, chain)])))
    assert f.cause is Cause.WEAK_KEY_EXCHANGE and f.severity is Severity.CRITICAL
    assert "Every vantage's client refuses api.example.test:443's key exchange as too weak" in f.summary
    assert "Diffie-Hellman group is smaller than the client's security level allows" in f.summary
    assert "DHE-RSA-AES128-GCM-SHA256" in f.summary
    assert "2048 bits" in f.fix and "ECDHE" in f.fix
    assert any("-max_protocol TLSv1.2" in c for c in f.reproduce)
    assert any("DEFAULT@SECLEVEL=0" in c and "Server Temp Key" in c for c in f.reproduce)
    assert not any("-tls1_2" in c for c in f.reproduce)


def test_weak_dh_on_some_vantages_blames_their_security_level(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("strict", [_weak(IP1, chain)]), outcome("lax", [address(IP1, chain, tls_version="TLSv1.2")])
    )
    (f,) = _run(observation)
    assert f.agents == ("strict",)
    assert "the security level on strict is stricter" in f.summary
    assert "Every vantage" not in f.summary


def test_healthy_and_other_failures_give_nothing_here(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("a", [address(IP1, chain)]),
        outcome("b", [broken(IP1, Failure.HANDSHAKE_TIMEOUT)]),
        outcome("c", [broken(IP1, Failure.TLS_ALERT, alert="protocol_version")]),
        req=request(HOST),
    )
    assert _run(observation) == []
