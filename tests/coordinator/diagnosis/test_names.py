"""Names the served leaf does not cover: plain misses, wildcard depth, CN-only certificates, IP targets."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import Verdict
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.names import findings
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation, Variant

NAME = "api.example.test"


def _run(obs: Observation) -> list[Finding]:
    return list(findings(obs, DiagnosisSettings.for_request(obs.request)))


def _evidence(finding: Finding, name: str) -> dict[str, str]:
    return dict(next(e for e in finding.evidence if e.field == name).values)


def _chain(pki: LabPKI, *names: str, **kwargs: object) -> tuple[bytes, bytes]:
    return (pki.issue_leaf(*names, **kwargs).der, pki.intermediate.der)  # type: ignore[arg-type]


def _leaf_with_dns_san(pki: LabPKI, dns: str) -> bytes:
    """A leaf whose SAN holds `dns` as a DNS name, even when it is an IP literal (a common mistake)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def test_name_not_covered_anywhere_is_critical_with_the_sans(pki: LabPKI) -> None:
    chain = _chain(pki, "www.example.test", "shop.example.test")
    obs = observe(
        outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]),
        outcome("b", [address("10.0.0.2", chain, native=Verdict.HOSTNAME_MISMATCH)]),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.HOSTNAME_MISMATCH
    assert finding.severity is Severity.CRITICAL
    assert "does not cover api.example.test" in finding.summary
    assert "www.example.test, shop.example.test" in finding.summary
    assert _evidence(finding, "subjectAltName") == {
        "a@10.0.0.1": "www.example.test, shop.example.test",
        "b@10.0.0.2": "www.example.test, shop.example.test",
    }
    assert finding.agents == ("a", "b")
    assert "subjectAltName" in finding.fix
    assert any("-ext subjectAltName" in cmd for cmd in finding.reproduce)
    assert any("-verify_hostname api.example.test" in cmd for cmd in finding.reproduce)


def test_wildcard_one_level_too_shallow_is_said(pki: LabPKI) -> None:
    req = request("a.b.example.test")
    chain = _chain(pki, "*.example.test")
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)], req=req), req=req)
    [finding] = _run(obs)
    assert "*.example.test matches exactly one label" in finding.summary
    assert "covers b.example.test but not a.b.example.test" in finding.summary
    assert "*.b.example.test" in finding.fix


def test_wildcard_does_not_cover_the_bare_domain(pki: LabPKI) -> None:
    req = request("example.test")
    obs = observe(
        outcome("a", [address("10.0.0.1", _chain(pki, "*.example.test"), native=Verdict.HOSTNAME_MISMATCH)], req=req),
        req=req,
    )
    [finding] = _run(obs)
    assert "not the bare domain example.test" in finding.summary
    assert finding.severity is Severity.CRITICAL


def test_wildcard_that_covers_the_name_is_fine(pki: LabPKI) -> None:
    obs = observe(outcome("a", [address("10.0.0.1", _chain(pki, "*.example.test"))]))
    assert _run(obs) == []


def test_cn_only_certificate_naming_the_host_is_a_warning_naming_who_fails(pki: LabPKI) -> None:
    chain = _chain(pki, common_name=NAME, san=False)
    # Python's default context falls back to the CN (native OK); the store verdicts do not.
    obs = observe(
        outcome("a", [address("10.0.0.1", chain, native=Verdict.OK, stores={"system": Verdict.HOSTNAME_MISMATCH})])
    )
    [finding] = _run(obs)
    assert finding.severity is Severity.WARNING
    assert "does not cover api.example.test for modern clients" in finding.summary
    assert "only in its subject CN" in finding.summary
    assert "browsers and Go" in finding.summary and "Python" in finding.summary
    assert _evidence(finding, "subject CN") == {"a@10.0.0.1": NAME}
    assert f"DNS:{NAME}" in finding.fix


def test_a_partial_label_wildcard_is_said_with_who_accepts_it(pki: LabPKI) -> None:
    chain = _chain(pki, "a*.example.test")
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]))
    [finding] = _run(obs)
    assert finding.severity is Severity.CRITICAL
    assert "its wildcard a*.example.test sits inside a label: OpenSSL's own name check" in finding.summary
    assert "Python's ssl module, curl, browsers and Go" in finding.summary
    assert f"{NAME} (or *.example.test)" in finding.fix


def test_a_partial_label_wildcard_openssl_clients_accept_is_a_warning(pki: LabPKI) -> None:
    chain = _chain(pki, "*i.example.test")
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.OK, stores={"system": Verdict.OK})]))
    [finding] = _run(obs)
    assert finding.severity is Severity.WARNING
    assert "does not cover api.example.test for modern clients: its wildcard *i.example.test" in finding.summary


def test_a_san_with_a_trailing_dot_is_said(pki: LabPKI) -> None:
    chain = _chain(pki, f"{NAME}.")
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]))
    [finding] = _run(obs)
    assert finding.severity is Severity.CRITICAL
    assert f"its subjectAltName {NAME}. ends in a dot" in finding.summary
    assert f"DNS:{NAME}, without the trailing dot" in finding.fix


def test_a_name_asked_with_a_trailing_dot_is_said_with_who_fails_and_who_does_not(pki: LabPKI) -> None:
    """`host.` asked, `host` covered: OpenSSL and Python send and check the dot and refuse (62), curl drops it.
    The fix is the name as asked, not the certificate."""
    asked = request(f"{NAME}.")
    chain = _chain(pki, NAME)
    obs = observe(
        outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)], req=asked),
        outcome("b", [address("10.0.0.2", chain, native=Verdict.HOSTNAME_MISMATCH)], req=asked),
        req=asked,
    )
    [finding] = _run(obs)
    assert finding.severity is Severity.CRITICAL and finding.agents == ("a", "b")
    assert f"covers {NAME} but not {NAME}., the name as asked, with a trailing dot" in finding.summary
    assert "OpenSSL-based clients (openssl s_client, Python's ssl module) keep the dot" in finding.summary
    assert "they send it in SNI" in finding.summary and "curl drops the dot and accepts it" in finding.summary
    assert f"Ask for {NAME} without the trailing dot" in finding.fix and "needs no change" in finding.fix
    assert any(f"-servername {NAME}. " in cmd for cmd in finding.reproduce)
    assert any(f"-verify_hostname {NAME}." in cmd for cmd in finding.reproduce)
    # A wildcard covering the name without the dot is the same story; a SAN written with the dot covers it.
    wild = _chain(pki, "*.example.test")
    [wildcard] = _run(
        observe(outcome("a", [address("10.0.0.1", wild, native=Verdict.HOSTNAME_MISMATCH)], req=asked), req=asked)
    )
    assert "the name as asked, with a trailing dot" in wildcard.summary
    dotted = _chain(pki, f"{NAME}.")
    assert _run(observe(outcome("a", [address("10.0.0.1", dotted)], req=asked), req=asked)) == []


def test_a_name_asked_with_a_trailing_dot_and_not_covered_without_it_is_a_plain_miss(pki: LabPKI) -> None:
    asked = request(f"{NAME}.")
    chain = _chain(pki, "www.example.test")
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)], req=asked), req=asked)
    [finding] = _run(obs)
    assert f"does not cover {NAME}.: its names are www.example.test" in finding.summary
    assert "trailing dot" not in finding.summary


def test_cn_only_certificate_for_another_name_is_critical(pki: LabPKI) -> None:
    chain = _chain(pki, common_name="other.example.test", san=False)
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]))
    [finding] = _run(obs)
    assert finding.severity is Severity.CRITICAL
    assert "'other.example.test' does not match" in finding.summary


def test_ip_target_without_ip_san(pki: LabPKI) -> None:
    req = request("10.0.0.9")
    obs = observe(outcome("a", [address("10.0.0.9", _chain(pki, NAME), native=Verdict.IP_MISMATCH)], req=req), req=req)
    [finding] = _run(obs)
    assert finding.cause is Cause.HOSTNAME_MISMATCH
    assert finding.severity is Severity.CRITICAL
    assert "no IP address in its subjectAltName" in finding.summary
    assert "IP:10.0.0.9" in finding.fix
    assert not any("-verify_hostname" in cmd for cmd in finding.reproduce)


def test_ip_written_as_a_dns_san_is_said(pki: LabPKI) -> None:
    req = request("10.0.0.9")
    chain = (_leaf_with_dns_san(pki, "10.0.0.9"), pki.intermediate.der)
    obs = observe(outcome("a", [address("10.0.0.9", chain, native=Verdict.IP_MISMATCH)], req=req), req=req)
    [finding] = _run(obs)
    assert "as a DNS name, not as an IP address SAN" in finding.summary


def test_ip_target_with_another_ip_san(pki: LabPKI) -> None:
    req = request("10.0.0.9")
    obs = observe(
        outcome("a", [address("10.0.0.9", _chain(pki, "10.0.0.8"), native=Verdict.IP_MISMATCH)], req=req), req=req
    )
    [finding] = _run(obs)
    assert "IP address SANs are 10.0.0.8, not 10.0.0.9" in finding.summary


def test_ip_target_covered_by_ip_san(pki: LabPKI) -> None:
    req = request("10.0.0.9")
    obs = observe(
        outcome("a", [address("10.0.0.9", _chain(pki, str(ipaddress.ip_address("10.0.0.9"))))], req=req), req=req
    )
    assert _run(obs) == []


def test_mismatch_on_some_rows_only_is_not_claimed(pki: LabPKI) -> None:
    good = _chain(pki, NAME)
    bad = _chain(pki, "old.example.test")
    obs = observe(
        outcome("a", [address("10.0.0.1", good), address("10.0.0.2", bad, native=Verdict.HOSTNAME_MISMATCH)]),
        outcome("b", [address("10.0.0.1", good)]),
    )
    assert _run(obs) == []


def test_mismatch_seen_by_one_vantage_only_is_not_claimed(pki: LabPKI) -> None:
    # One vantage behind a middlebox gets a certificate for another name: not the server's certificate.
    obs = observe(
        outcome("a", [address("10.0.0.1", _chain(pki, NAME))]),
        outcome("proxied", [address("10.0.0.1", _chain(pki, "proxy.corp.test"), native=Verdict.HOSTNAME_MISMATCH)]),
    )
    assert _run(obs) == []


def test_different_certificates_that_all_miss_are_one_finding(pki: LabPKI) -> None:
    obs = observe(
        outcome("a", [address("10.0.0.1", _chain(pki, "x.example.test"), native=Verdict.HOSTNAME_MISMATCH)]),
        outcome("b", [address("10.0.0.2", _chain(pki, "y.example.test"), native=Verdict.HOSTNAME_MISMATCH)]),
    )
    [finding] = _run(obs)
    assert "None of the 2 certificates" in finding.summary
    assert "x.example.test" in finding.summary and "y.example.test" in finding.summary


def _no_sni_observation(pki: LabPKI, variant_chain: tuple[bytes, ...] | None) -> Observation:
    req = request(send_sni=False)
    default = _chain(pki, "default.example.test")
    variants = []
    if variant_chain is not None:
        sni_req = request()
        variants.append(
            Variant("SNI api.example.test", sni_req, (outcome("a", [address("10.0.0.1", variant_chain)], req=sni_req),))
        )
    # Without SNI, OpenSSL checks no name: the agent's native verdict says so.
    row = address("10.0.0.1", default, native=Verdict.OK)
    row = replace(row, native=replace(row.native, hostname_checked=False))
    main = outcome("a", [row], req=req)
    return observe(main, req=req, variants=variants)


def test_no_sni_mismatch_is_held_back_when_sni_gets_the_right_certificate(pki: LabPKI) -> None:
    assert _run(_no_sni_observation(pki, _chain(pki, NAME))) == []


def test_no_sni_mismatch_is_reported_when_sni_does_not_help(pki: LabPKI) -> None:
    [finding] = _run(_no_sni_observation(pki, _chain(pki, "other.example.test")))
    assert finding.cause is Cause.HOSTNAME_MISMATCH
    assert "no SNI" in finding.summary
    assert _evidence(finding, "native verdict") == {"a@10.0.0.1": "ok (no name checked)"}


def test_no_sni_mismatch_without_variants_says_so(pki: LabPKI) -> None:
    [finding] = _run(_no_sni_observation(pki, None))
    assert "the probe sent no SNI" in finding.summary
    assert any("-noservername" in cmd for cmd in finding.reproduce)


def test_healthy_observation_yields_nothing(pki: LabPKI) -> None:
    chain = _chain(pki, NAME)
    obs = observe(*(outcome(n, [address("10.0.0.1", chain)]) for n in ("a", "b", "c")), silent("d"))
    assert _run(obs) == []


def test_only_answering_vantages_are_named(pki: LabPKI) -> None:
    chain = _chain(pki, "www.example.test")
    obs = observe(outcome("a", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]), silent("gone"))
    [finding] = _run(obs)
    assert finding.agents == ("a",)
    assert "gone" not in finding.summary


def test_nothing_without_chains() -> None:
    assert _run(observe(outcome("a", [address("10.0.0.1", ())]), silent("b"))) == []
