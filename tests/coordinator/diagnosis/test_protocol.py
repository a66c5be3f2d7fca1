"""Protocol or cipher mismatch: on some vantages, on every vantage, on one backend; and what it is not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.coordinator.diagnosis.handshakes import broken, with_python_view
from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import AddressResult, Client, ClientView, Failure, Party, TlsVersion, Verdict
from tlsfleet.coordinator.diagnosis import protocol
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation, Variant

HOST = "api.example.test"
IP1, IP2 = "127.0.0.41", "127.0.0.42"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf(HOST).der, pki.intermediate.der)


def _alert(ip: str, alert: str) -> AddressResult:
    return address(ip, (), failure=Failure.TLS_ALERT, alert=alert, stores={})


def _run(observation: Observation) -> list[Finding]:
    found = list(protocol.findings(observation, DiagnosisSettings.for_request(observation.request)))
    assert all(f.cause is Cause.PROTOCOL_MISMATCH and f.severity is Severity.CRITICAL for f in found)
    return found


def test_version_alert_on_some_vantages_only_blames_their_clients(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("legacy-1", [_alert(IP1, "protocol_version")]),
        outcome("legacy-2", [_alert(IP1, "protocol_version")]),
        outcome("web-1", [address(IP1, chain, tls_version="TLSv1.3")]),
        outcome("web-2", [address(IP1, chain, tls_version="TLSv1.3")]),
    )
    (f,) = _run(observation)
    assert f.agents == ("legacy-1", "legacy-2")
    assert f.addresses == (IP1,)
    assert "legacy-1 and legacy-2 cannot complete a TLS handshake with api.example.test:443" in f.summary
    assert "(alert protocol_version)" in f.summary
    assert "web-1 and web-2 (2 vantages) negotiate TLSv1.3" in f.summary
    assert "accepts none" not in f.summary and "backend" not in f.summary
    assert "TLS 1.2" in f.fix and "MaxProtocol" in f.fix and "tlsfleet agents" in f.fix
    handshake = next(e for e in f.evidence if e.field == "handshake")
    assert handshake.values == (
        (f"legacy-1@{IP1}", "tls_alert (alert protocol_version)"),
        (f"legacy-2@{IP1}", "tls_alert (alert protocol_version)"),
    )
    negotiated = next(e for e in f.evidence if e.field == "negotiated")
    assert (f"web-1@{IP1}", "TLSv1.3 TLS_AES_128_GCM_SHA256") in negotiated.values
    assert "openssl version" in f.reproduce
    # Version bounds as -min_protocol/-max_protocol, which also work where -tls1_2 and friends were removed.
    assert any(c.endswith("-max_protocol TLSv1.2 </dev/null") for c in f.reproduce)
    assert not any("-tls1_2" in c or "-tls1_3" in c for c in f.reproduce)


def test_cipher_alert_points_at_the_cipher_policy(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("fips-1", [_alert(IP1, "insufficient_security")]),
        outcome("web-1", [address(IP1, chain, tls_version="TLSv1.2")]),
    )
    (f,) = _run(observation)
    assert "cipher policy" in f.fix and "SECLEVEL" in f.fix
    assert "MaxProtocol" not in f.fix


def test_a_bare_protocol_error_is_not_a_version_or_cipher_mismatch(chain: tuple[bytes, bytes]) -> None:
    # Nothing says versions or ciphers were the trouble: that is handshake_incomplete (reachability's).
    broken = address(IP1, (), failure=Failure.PROTOCOL_ERROR, stores={})
    observation = observe(outcome("a", [broken]), outcome("b", [address(IP1, chain)]))
    assert _run(observation) == []


def test_a_protocol_error_after_the_server_chose_tls10_is_a_version_mismatch(chain: tuple[bytes, bytes]) -> None:
    legacy = address(IP1, chain, failure=Failure.PROTOCOL_ERROR, stores={})
    legacy = replace(
        legacy,
        handshake=replace(
            legacy.handshake,
            tls_version="TLSv1",
            cipher="ECDHE-RSA-AES256-SHA",
            refused_by=Party.CLIENT,
            error="[SSL: LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED] legacy sigalg disallowed or unsupported",
        ),
    )
    observation = observe(outcome("a", [legacy]), outcome("b", [legacy]))
    (f,) = _run(observation)
    assert set(f.agents) == {"a", "b"}
    assert "the server chose TLSv1, refused by the client (LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED)" in f.summary
    assert "every vantage's client refuses what the server offers (it chose TLSv1)" in f.summary
    assert "accepts none" not in f.summary  # the server did not refuse: the clients did
    assert any("-max_protocol TLSv1.1 -cipher DEFAULT@SECLEVEL=0" in c for c in f.reproduce)


def test_every_vantage_failing_alike_is_the_servers_mismatch(chain: tuple[bytes, bytes]) -> None:
    observation = observe(*(outcome(a, [_alert(IP1, "protocol_version")]) for a in ("a", "b", "c")), silent("d"))
    (f,) = _run(observation)
    assert set(f.agents) == {"a", "b", "c"}
    assert "No vantage completes a TLS handshake with api.example.test:443" in f.summary
    assert "alert protocol_version on every vantage" in f.summary
    assert "accepts none of the offered TLS versions or ciphers" in f.summary


def test_a_handshake_failure_alert_to_every_offer_names_the_certificate_as_a_possible_reason() -> None:
    """OpenSSL servers send handshake_failure both when no cipher is shared and when their certificate suits
    nothing the client offers (a P-224 or brainpool key; a TLS 1.2-only ECDSA leaf without digitalSignature):
    the chain is not seen, so both are said."""
    observation = observe(*(outcome(a, [_alert(IP1, "handshake_failure")]) for a in ("a", "b")))
    (f,) = _run(observation)
    assert (
        "(it shares no cipher suite, key-exchange group or signature algorithm with what was offered), or has no "
        "certificate it can use with them." in f.summary
    )
    assert "X25519, P-256" in f.fix  # groups too: a server with secp256k1 alone alerts alike
    assert "an EC key on a curve the clients do not offer" in f.fix and "not P-224, brainpool" in f.fix
    assert "ECDSA leaf whose keyUsage lacks digitalSignature" in f.fix
    # A protocol_version alert is about versions alone: no word of the certificate.
    (versions,) = _run(observe(*(outcome(a, [_alert(IP1, "protocol_version")]) for a in ("a", "b"))))
    assert "certificate" not in versions.summary and "keyUsage" not in versions.fix


def test_requested_version_bounds_are_named(chain: tuple[bytes, bytes]) -> None:
    base = request(HOST)
    bounded = replace(base, options=replace(base.options, max_version=TlsVersion.TLS1_2))
    observation = observe(
        *(outcome(a, [_alert(IP1, "protocol_version")], req=bounded) for a in ("a", "b")), req=bounded
    )
    (f,) = _run(observation)
    assert "within the requested bounds (min default, max TLSv1.2)" in f.summary
    bounds = next(e for e in f.evidence if e.field == "requested TLS versions")
    assert bounds.values == (("request", "min default, max TLSv1.2"),)


def test_one_backend_refusing_everyone_is_that_backends_mismatch(chain: tuple[bytes, bytes]) -> None:
    pool = [address(IP1, chain, tls_version="TLSv1.3"), _alert(IP2, "handshake_failure")]
    observation = observe(outcome("a", pool), outcome("b", pool))
    (f,) = _run(observation)
    assert f.addresses == (IP2,)
    assert set(f.agents) == {"a", "b"}
    assert f"{IP2} behind api.example.test refuses the handshake (alert handshake_failure)" in f.summary
    assert f"complete it with {IP1} (TLSv1.3)" in f.summary
    assert IP2 in f.fix


def test_vantage_reaching_only_another_address_says_the_backend_may_differ(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("a", [_alert(IP2, "protocol_version")]),
        outcome("b", [address(IP1, chain)]),
    )
    (f,) = _run(observation)
    assert f.agents == ("a",)
    assert "reached other addresses" in f.summary


@pytest.mark.parametrize(
    "failed",
    [
        address(IP1, (), connect_failure=Failure.REFUSED),
        address(IP1, (), connect_failure=Failure.CONNECT_TIMEOUT),
        address(IP1, (), failure=Failure.HANDSHAKE_TIMEOUT, stores={}),
        address(IP1, (), failure=Failure.CLOSED, stores={}),
        _alert(IP1, "certificate_required"),
        _alert(IP1, "unknown_ca"),
        _alert(IP1, "unrecognized_name"),
    ],
    ids=["refused", "connect-timeout", "handshake-timeout", "closed", "cert-required", "unknown-ca", "unrec-name"],
)
def test_other_failures_are_not_protocol_mismatches(chain: tuple[bytes, bytes], failed: AddressResult) -> None:
    observation = observe(outcome("a", [failed]), outcome("b", [address(IP1, chain)]))
    assert _run(observation) == []


def test_a_rejected_chain_means_the_negotiation_worked(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("a", [address(IP1, chain, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("b", [address(IP1, chain)]),
    )
    assert _run(observation) == []


def test_no_sni_refusal_that_sni_fixes_is_left_to_sni(chain: tuple[bytes, bytes]) -> None:
    no_sni = request(HOST, send_sni=False)
    with_sni = request(HOST)
    observation = observe(
        *(outcome(a, [_alert(IP1, "handshake_failure")], req=no_sni) for a in ("a", "b")),
        req=no_sni,
        variants=[Variant("SNI", with_sni, tuple(outcome(a, [address(IP1, chain)], req=with_sni) for a in "ab"))],
    )
    assert _run(observation) == []
    # Without the variant, nothing says SNI would help: it stays a protocol finding.
    assert len(_run(replace(observation, variants=()))) == 1


def test_sni_refusal_that_no_sni_completes_is_left_to_sni(chain: tuple[bytes, bytes]) -> None:
    no_sni = request(HOST, send_sni=False)
    observation = observe(
        *(outcome(a, [_alert(IP1, "handshake_failure")]) for a in "ab"),
        variants=[Variant("no SNI", no_sni, tuple(outcome(a, [address(IP1, chain)], req=no_sni) for a in "ab"))],
    )
    assert _run(observation) == []


def test_a_variant_does_not_excuse_a_vantage_when_others_complete_with_the_probes_sni(
    chain: tuple[bytes, bytes],
) -> None:
    # 'b' completes with the probe's own SNI at that address: SNI is not why 'a' fails.
    no_sni = request(HOST, send_sni=False)
    observation = observe(
        outcome("a", [_alert(IP1, "protocol_version")]),
        outcome("b", [address(IP1, chain)]),
        variants=[Variant("no SNI", no_sni, (outcome("a", [address(IP1, chain)], req=no_sni),))],
    )
    (f,) = _run(observation)
    assert f.agents == ("a",)


def test_healthy_fleet_gives_nothing(chain: tuple[bytes, bytes]) -> None:
    observation = observe(*(outcome(a, [address(IP1, chain), address(IP2, chain)]) for a in "abc"), silent("d"))
    assert _run(observation) == []


def test_negotiation_failure_classifier(chain: tuple[bytes, bytes]) -> None:
    rows = observe(
        outcome("a", [_alert(IP1, "protocol_version"), address(IP2, chain)]),
    ).rows
    assert [protocol.is_negotiation_failure(r) for r in rows] == [True, False]


def test_every_vantage_failing_where_python_completes_points_at_the_hosts_openssl_configuration() -> None:
    """MinProtocol = TLSv1.3 on every host, a server of TLS 1.2: the server is current, the hosts' policy is not."""
    refused = broken(IP1, Failure.TLS_ALERT, alert="protocol_version", refused_by=Party.SERVER)
    python = ClientView(Client.PYTHON, Verdict.OK, tls_version="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256")
    (f,) = _run(observe(outcome("a", [with_python_view(refused, python)]), outcome("b", [refused])))
    assert "Make the server accept" not in f.fix
    assert f.fix.startswith(
        "On a, Python's default context completes the handshake (TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256), so the server "
        "speaks a current TLS: relax MinProtocol or Protocol in the OpenSSL configuration in force there"
    )


def test_every_vantage_refused_over_ciphers_names_the_configured_groups_and_signatures() -> None:
    """Groups = P-384 on the host, an X25519-only server: Python's context keeps the groups, so both fail alike."""
    (f,) = _run(observe(outcome("a", [_alert(IP1, "handshake_failure")])))
    assert f.fix.startswith("Make the server accept what current clients offer")
    assert "Groups, SignatureAlgorithms, Ciphersuites" in f.fix


def test_every_vantage_refused_over_versions_names_the_configured_maximum() -> None:
    """MaxProtocol = TLSv1.2 on the host, a TLS 1.3-only server: Python's context keeps the maximum, fails alike."""
    (f,) = _run(observe(outcome("a", [_alert(IP1, "protocol_version")])))
    assert f.fix.startswith("Make the server accept what current clients offer")
    assert "system_default: MaxProtocol, which Python's default context keeps too" in f.fix


def test_an_alpn_refusal_everywhere_names_the_protocols_offered_not_versions_or_ciphers() -> None:
    base = request()
    offered = replace(base, options=replace(base.options, alpn=("h2",)))
    observation = observe(
        outcome("web-1", [_alert(IP1, "no_application_protocol")]),
        outcome("web-2", [_alert(IP1, "no_application_protocol")]),
        req=offered,
    )
    (f,) = _run(observation)
    assert "(alert no_application_protocol on every vantage)" in f.summary
    assert "the server speaks none of the application protocols offered in ALPN (h2)" in f.summary
    assert "versions or ciphers" not in f.summary and "cipher" not in f.fix
    assert "the probe offered h2" in f.fix and "--alpn http/1.1" in f.fix
    assert any(c.endswith("-alpn h2 </dev/null") for c in f.reproduce), f.reproduce
    assert not any("-min_protocol" in c for c in f.reproduce), f.reproduce
    assert next(e for e in f.evidence if e.field == "offered ALPN").values == (("request", "h2"),)


def test_a_handshake_failure_alert_to_a_probe_without_sni_says_no_sni_was_sent() -> None:
    """A server that picks its configuration by SNI refuses a client that names no host with handshake_failure:
    with no variant to show it, the finding must not pin it on versions or ciphers alone."""
    bare = request(send_sni=False)
    observation = observe(
        outcome("web-1", [_alert(IP1, "handshake_failure")], req=bare),
        outcome("web-2", [_alert(IP1, "handshake_failure")], req=bare),
        req=bare,
    )
    (f,) = _run(observation)
    assert "the server accepts none of the offered TLS versions or ciphers" in f.summary
    assert "but no SNI was sent" in f.summary and "probe with SNI" in f.summary
    assert f.fix.startswith("Probe with SNI first (without --no-sni, or with --sni NAME)")
    # With SNI sent (or an IP target, never named in SNI), nothing is said of SNI.
    sent = observe(
        outcome("web-1", [_alert(IP1, "handshake_failure")]), outcome("web-2", [_alert(IP1, "handshake_failure")])
    )
    assert "SNI" not in _run(sent)[0].summary
    by_ip = request("127.0.0.41")
    at_ip = observe(outcome("web-1", [_alert(IP1, "handshake_failure")], req=by_ip), req=by_ip)
    assert "SNI" not in _run(at_ip)[0].summary
