"""How the asked name meets the certificate as OpenSSL, Python and curl each compare them: what a wildcard may stand
for, the subject CN they fall back to, and DNS SANs no client matches; each said in words true to who fails."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests.coordinator.diagnosis.handshakes import with_python_view
from tests.outcomes import address, observe, outcome, request
from tlsfleet.agent.model import Client, ClientView, Failure, Verdict
from tlsfleet.agent.trust.names import parse_expected_name
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.names import Mismatch, check_name, findings
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation


def _run(obs: Observation) -> list[Finding]:
    return [f for f in findings(obs, DiagnosisSettings.for_request(obs.request)) if f.cause is Cause.HOSTNAME_MISMATCH]


def _one(pki_leaf: bytes, pki: LabPKI, host: str, native: Verdict) -> Finding:
    req = request(host)
    chain = (pki_leaf, pki.intermediate.der)
    [finding] = _run(observe(outcome("a", [address("10.0.0.1", chain, native=native)], req=req), req=req))
    return finding


def _raw_dns_sans(pki: LabPKI, *values: bytes, common_name: str = "raw") -> bytes:
    """A leaf whose DNS SANs are `values` byte for byte (`cryptography` writes no empty or UTF-8 dNSName)."""

    def der(tag: int, body: bytes) -> bytes:
        assert len(body) < 0x80
        return bytes([tag, len(body)]) + body

    names = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, der(0x30, b"".join(der(0x82, v) for v in values))
    )
    return pki.issue_leaf(common_name=common_name, san=False, extensions=[(names, False)]).der


def test_a_wildcard_over_a_label_with_an_underscore_is_critical_and_says_curl_accepts(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("*.example.test").der
    assert check_name(leaf, parse_expected_name("a_b.example.test")).kind is Mismatch.WILDCARD_CHARACTERS
    finding = _one(leaf, pki, "a_b.example.test", Verdict.HOSTNAME_MISMATCH)
    assert finding.severity is Severity.CRITICAL
    assert "OpenSSL lets a wildcard stand for letters, digits and hyphens only" in finding.summary
    assert "first label 'a_b' holds other characters" in finding.summary
    assert "while curl, whose own name check looks at no character, accepts it" in finding.summary
    assert "Add a_b.example.test to the certificate's subjectAltName" in finding.fix


def test_a_wildcard_below_a_label_with_an_underscore_is_no_wildcard_to_openssl(pki: LabPKI) -> None:
    finding = _one(pki.issue_leaf("*.a_b.example.test").der, pki, "x.a_b.example.test", Verdict.HOSTNAME_MISMATCH)
    assert finding.severity is Severity.CRITICAL
    assert "OpenSSL takes *.a_b.example.test for a literal name, not a wildcard" in finding.summary


def test_a_partial_wildcard_in_the_cn_alone_is_a_warning_naming_python_and_curl(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(common_name="f*.example.test", san=False).der
    finding = _one(leaf, pki, "foo.example.test", Verdict.OK)
    assert finding.severity is Severity.WARNING
    assert "its subject CN f*.example.test is a wildcard inside a label" in finding.summary
    assert "falls back to the CN and accepts it" in finding.summary
    assert "Python's ssl module and curl honour a wildcard only as a whole left-most label" in finding.summary
    assert "DNS:foo.example.test (or DNS:*.example.test)" in finding.fix
    refused = _one(leaf, pki, "foo.example.test", Verdict.HOSTNAME_MISMATCH)
    assert refused.severity is Severity.CRITICAL  # where the native clients refuse it too


def test_a_wildcard_cn_over_an_underscore_says_only_curl_accepts(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(common_name="*.example.test", san=False).der
    finding = _one(leaf, pki, "a_b.example.test", Verdict.HOSTNAME_MISMATCH)
    assert finding.severity is Severity.CRITICAL
    assert "does not match a_b.example.test either for OpenSSL-based clients" in finding.summary
    assert "curl, whose own name check looks at no character, accepts *.example.test" in finding.summary


def test_a_name_in_the_cn_beside_ip_sans_alone_says_curl_refuses(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("10.0.0.1", common_name="api.example.test").der
    finding = _one(leaf, pki, "api.example.test", Verdict.OK)
    assert finding.severity is Severity.WARNING
    assert "curl ignores the CN once a subjectAltName lists IP addresses (10.0.0.1), and refuses it too" in (
        finding.summary
    )
    assert "Python, curl" not in finding.summary


def test_an_address_in_the_cn_alone_says_curl_accepts_it(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(common_name="10.0.0.1", san=False).der
    finding = _one(leaf, pki, "10.0.0.1", Verdict.IP_MISMATCH)
    assert finding.severity is Severity.CRITICAL
    assert "curl falls back to the subject CN 10.0.0.1 and accepts it" in finding.summary
    assert "never compare an IP address with the CN" in finding.summary


def test_a_wildcard_san_with_a_trailing_dot_is_said(pki: LabPKI) -> None:
    finding = _one(pki.issue_leaf("*.example.test.").der, pki, "a.example.test", Verdict.HOSTNAME_MISMATCH)
    assert "its subjectAltName *.example.test. ends in a dot" in finding.summary
    assert "curl strips the dot and accepts it" in finding.summary
    assert "subjectAltName DNS:*.example.test, without the trailing dot" in finding.fix


def test_an_empty_dns_san_says_the_cn_is_ignored(pki: LabPKI) -> None:
    leaf = _raw_dns_sans(pki, b"", common_name="api.example.test")
    finding = _one(leaf, pki, "api.example.test", Verdict.HOSTNAME_MISMATCH)
    assert finding.severity is Severity.CRITICAL
    assert "its DNS subjectAltName '' is empty: no client matches it with api.example.test" in finding.summary
    assert "clients ignore the subject CN api.example.test" in finding.summary


def test_a_nul_or_a_space_in_a_dns_san_is_shown_escaped(pki: LabPKI) -> None:
    refused = Verdict.HOSTNAME_MISMATCH
    nul = _one(_raw_dns_sans(pki, b"api.example.test\x00.evil.test"), pki, "api.example.test", refused)
    assert "its DNS subjectAltName 'api.example.test\\x00.evil.test' holds a NUL byte" in nul.summary
    assert "\x00" not in nul.summary
    space = _one(_raw_dns_sans(pki, b"api.example.test "), pki, "api.example.test", refused)
    assert "its DNS subjectAltName 'api.example.test ' holds whitespace" in space.summary


def test_a_unicode_dns_san_says_certificates_carry_a_labels(pki: LabPKI) -> None:
    leaf = _raw_dns_sans(pki, "bücher.example.test".encode())
    finding = _one(leaf, pki, "xn--bcher-kva.example.test", Verdict.HOSTNAME_MISMATCH)
    assert "its DNS subjectAltName bücher.example.test is not ASCII" in finding.summary
    assert "as xn-- A-labels" in finding.summary


def test_an_odd_san_beside_ordinary_ones_is_noted_among_them(pki: LabPKI) -> None:
    finding = _one(
        _raw_dns_sans(pki, b"www.example.test", b"api.example.test\x00"),
        pki,
        "api.example.test",
        Verdict.HOSTNAME_MISMATCH,
    )
    assert "its names are www.example.test, 'api.example.test\\x00'" in finding.summary
    assert "(the DNS subjectAltName 'api.example.test\\x00' holds a NUL byte)" in finding.summary


def test_a_partial_wildcard_python_refuses_is_told_once_as_the_certificates_not_the_hosts(pki: LabPKI) -> None:
    leaf = pki.issue_leaf(common_name="f*.example.test", san=False).der
    req = request("foo.example.test")
    refused = ClientView(Client.PYTHON, Verdict.HOSTNAME_MISMATCH, 62, Failure.CERT_VERIFY)
    row = with_python_view(address("10.0.0.1", (leaf, pki.intermediate.der)), refused)
    found = diagnose(observe(outcome("a", [row], req=req), req=req))
    loud = [(f.cause, f.severity) for f in found if f.severity >= Severity.WARNING]
    # No client_views_differ blaming the host's client settings: every host's Python and curl refuse that name.
    assert (Cause.HOSTNAME_MISMATCH, Severity.WARNING) in loud
    assert Cause.CLIENT_VIEWS_DIFFER not in [cause for cause, _ in loud]
