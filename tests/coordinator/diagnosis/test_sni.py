"""SNI difference: the default certificate without SNI, refusals without SNI, per-name certificates."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import AddressResult, Failure, ProbeRequest, Verdict
from tlsfleet.coordinator.diagnosis import sni
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation, Variant
from tlsfleet.coordinator.outcomes import ProbeOutcome

HOST = "api.example.test"
IP1, IP2 = "127.0.0.21", "127.0.0.22"
WITH_SNI = request(HOST)
NO_SNI = request(HOST, send_sni=False)
OTHER_SNI = request(HOST, sni="other.example.test")


class Certs:
    def __init__(self) -> None:
        pki = LabPKI("Acme")
        self.pki = pki
        self.api = (pki.issue_leaf(HOST).der, pki.intermediate.der)
        self.api_alt = (pki.issue_leaf(HOST, "www.example.test").der, pki.intermediate.der)
        self.default = (pki.issue_leaf("default.example.test").der, pki.intermediate.der)
        self.other = (pki.issue_leaf("other.example.test").der, pki.intermediate.der)
        self.wrong = (pki.issue_leaf("wrong.example.test").der, pki.intermediate.der)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _outcomes(
    req: ProbeRequest, rows: dict[str, Sequence[AddressResult]], *silent_agents: str
) -> tuple[ProbeOutcome, ...]:
    answered = tuple(outcome(agent, list(addresses), req=req) for agent, addresses in rows.items())
    return answered + tuple(silent(a) for a in silent_agents)


def _observation(
    main_req: ProbeRequest,
    main: dict[str, Sequence[AddressResult]],
    variants: Sequence[tuple[str, ProbeRequest, dict[str, Sequence[AddressResult]]]] = (),
) -> Observation:
    return observe(
        *_outcomes(main_req, main),
        req=main_req,
        variants=[Variant(label, req, _outcomes(req, rows)) for label, req, rows in variants],
    )


def _run(observation: Observation) -> list[Finding]:
    found = list(sni.findings(observation, DiagnosisSettings.for_request(observation.request)))
    assert all(f.cause is Cause.SNI_DIFFERENCE for f in found)
    return found


def test_probe_without_sni_getting_the_default_certificate_is_critical(certs: Certs) -> None:
    # Without SNI the hostname is not checked natively; the store verdicts say mismatch.
    default = {"system": Verdict.HOSTNAME_MISMATCH}
    observation = _observation(
        NO_SNI,
        {a: [address(IP1, certs.default, native=Verdict.OK, stores=default)] for a in ("lb-probe-1", "lb-probe-2")},
        [("SNI api.example.test", WITH_SNI, {a: [address(IP1, certs.api)] for a in ("lb-probe-1", "lb-probe-2")})],
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert f.agents == ("lb-probe-1", "lb-probe-2")
    assert f.addresses == (IP1,)
    assert "Clients that send no SNI get the server's default certificate 'default.example.test'" in f.summary
    assert f"does not cover {HOST}" in f.summary
    assert "send SNI" in f.summary and "old Java" in f.summary
    covers = next(e for e in f.evidence if e.field == f"covers {HOST}")
    assert ("lb-probe-1@127.0.0.21 (main probe, no SNI)", "no") in covers.values
    assert ("lb-probe-1@127.0.0.21 (SNI api.example.test)", "yes") in covers.values
    assert any("-noservername" in c for c in f.reproduce)
    assert any(f"-servername {HOST}" in c for c in f.reproduce)


def test_default_certificate_only_without_sni_is_a_warning_when_the_probe_sent_sni(certs: Certs) -> None:
    observation = _observation(
        WITH_SNI,
        {"a": [address(IP1, certs.api)], "b": [address(IP1, certs.api)]},
        [("no SNI", NO_SNI, {"a": [address(IP1, certs.default)], "b": [address(IP1, certs.default)]})],
    )
    (f,) = _run(observation)
    assert f.severity is Severity.WARNING
    assert "Clients that send no SNI get the server's default certificate 'default.example.test'" in f.summary
    assert "clients without SNI fail" in f.summary
    assert "default" in f.fix


def test_another_certificate_without_sni_that_still_covers_the_name_is_info(certs: Certs) -> None:
    observation = _observation(
        WITH_SNI,
        {"a": [address(IP1, certs.api)]},
        [("no SNI", NO_SNI, {"a": [address(IP1, certs.api_alt)]})],
    )
    (f,) = _run(observation)
    assert f.severity is Severity.INFO
    assert f"both cover {HOST}" in f.summary


def test_different_names_get_different_certificates_is_info(certs: Certs) -> None:
    observation = _observation(
        WITH_SNI,
        {"a": [address(IP1, certs.api)]},
        [("SNI other.example.test", OTHER_SNI, {"a": [address(IP1, certs.other)]})],
    )
    (f,) = _run(observation)
    assert f.severity is Severity.INFO
    assert "selects certificates by the name sent" in f.summary
    assert "'other.example.test'" in f.summary


def test_server_refusing_clients_without_sni_is_a_warning(certs: Certs) -> None:
    refused = address(IP1, (), failure=Failure.TLS_ALERT, alert="handshake_failure", stores={})
    observation = _observation(WITH_SNI, {"a": [address(IP1, certs.api)]}, [("no SNI", NO_SNI, {"a": [refused]})])
    (f,) = _run(observation)
    assert f.severity is Severity.WARNING
    assert "refuses clients that send no SNI (alert handshake_failure)" in f.summary


def test_probe_without_sni_that_is_refused_while_sni_completes_is_critical(certs: Certs) -> None:
    refused = address(IP1, (), failure=Failure.TLS_ALERT, alert="handshake_failure", stores={})
    observation = _observation(
        NO_SNI, {"a": [refused]}, [("SNI api.example.test", WITH_SNI, {"a": [address(IP1, certs.api)]})]
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert "refuses clients that send no SNI" in f.summary


def test_probe_sni_refused_while_no_sni_completes_is_critical(certs: Certs) -> None:
    refused = address(IP1, (), failure=Failure.TLS_ALERT, alert="handshake_failure", stores={})
    observation = _observation(
        WITH_SNI,
        {"a": [refused], "b": [refused]},
        [("no SNI", NO_SNI, {a: [address(IP1, certs.default)] for a in "ab"})],
    )
    (f,) = _run(observation)
    assert f.severity is Severity.CRITICAL
    assert f"refuses the handshake when the SNI is {HOST} (alert handshake_failure)" in f.summary
    assert "'default.example.test'" in f.summary
    assert f"Configure {HOST}" in f.fix


def test_sni_that_selects_the_wrong_certificate_is_a_warning(certs: Certs) -> None:
    observation = _observation(
        NO_SNI,
        {"a": [address(IP1, certs.api)]},
        [("SNI api.example.test", WITH_SNI, {"a": [address(IP1, certs.wrong, native=Verdict.HOSTNAME_MISMATCH)]})],
    )
    (f,) = _run(observation)
    assert f.severity is Severity.WARNING
    assert "selects the wrong certificate" in f.summary


def test_same_certificate_either_way_gives_nothing(certs: Certs) -> None:
    main = {a: [address(IP1, certs.api), address(IP2, certs.api)] for a in ("a", "b", "c")}
    observation = _observation(WITH_SNI, main, [("no SNI", NO_SNI, main)])
    assert _run(observation) == []


def test_no_variants_give_nothing(certs: Certs) -> None:
    assert _run(_observation(WITH_SNI, {"a": [address(IP1, certs.api)]})) == []


def test_rows_are_paired_by_vantage_and_address_never_across_addresses(certs: Certs) -> None:
    # The variant reached another address (DNS answered differently): not an SNI fact.
    observation = _observation(
        WITH_SNI, {"a": [address(IP1, certs.api)]}, [("no SNI", NO_SNI, {"a": [address(IP2, certs.default)]})]
    )
    assert _run(observation) == []


def test_a_pool_handing_out_either_certificate_is_not_an_sni_difference(certs: Certs) -> None:
    # Behind IP1 two backends serve two certificates regardless of SNI: 'a' happened to get the other one.
    observation = _observation(
        WITH_SNI,
        {"a": [address(IP1, certs.api)], "b": [address(IP1, certs.api_alt)]},
        [("no SNI", NO_SNI, {"a": [address(IP1, certs.api_alt)], "b": [address(IP1, certs.api_alt)]})],
    )
    assert _run(observation) == []


def test_when_neither_certificate_covers_the_name_sni_is_not_blamed(certs: Certs) -> None:
    observation = _observation(
        WITH_SNI,
        {"a": [address(IP1, certs.wrong, native=Verdict.HOSTNAME_MISMATCH)]},
        [("no SNI", NO_SNI, {"a": [address(IP1, certs.default, native=Verdict.OK)]})],
    )
    assert _run(observation) == []


def test_a_timeout_in_the_variant_is_not_a_refusal(certs: Certs) -> None:
    timeout = address(IP1, (), failure=Failure.HANDSHAKE_TIMEOUT, stores={})
    observation = _observation(WITH_SNI, {"a": [address(IP1, certs.api)]}, [("no SNI", NO_SNI, {"a": [timeout]})])
    assert _run(observation) == []


def test_silent_vantages_are_not_named(certs: Certs) -> None:
    observation = observe(
        *_outcomes(NO_SNI, {"a": [address(IP1, certs.default)]}, "gone"),
        req=NO_SNI,
        variants=[Variant("SNI", WITH_SNI, _outcomes(WITH_SNI, {"a": [address(IP1, certs.api)]}, "gone"))],
    )
    (f,) = _run(observation)
    assert f.agents == ("a",)


# --- when to probe a variant ----------------------------------------------------------------------


def test_wants_no_sni_variant_after_a_mismatch_with_sni(certs: Certs) -> None:
    mismatch = _observation(WITH_SNI, {"a": [address(IP1, certs.default, native=Verdict.HOSTNAME_MISMATCH)]})
    assert sni.wants_no_sni_variant(mismatch)
    assert not sni.wants_sni_variant(mismatch)
    fine = _observation(WITH_SNI, {"a": [address(IP1, certs.api)]})
    assert not sni.wants_no_sni_variant(fine)


def test_wants_no_sni_variant_not_again_once_probed(certs: Certs) -> None:
    mismatch = {"a": [address(IP1, certs.default, native=Verdict.HOSTNAME_MISMATCH)]}
    observation = _observation(WITH_SNI, mismatch, [("no SNI", NO_SNI, mismatch)])
    assert not sni.wants_no_sni_variant(observation)


def test_wants_sni_variant_after_a_mismatch_without_sni(certs: Certs) -> None:
    mismatch = _observation(NO_SNI, {"a": [address(IP1, certs.default)]})
    assert sni.wants_sni_variant(mismatch)
    assert not sni.wants_no_sni_variant(mismatch)
    fine = _observation(NO_SNI, {"a": [address(IP1, certs.api)]})
    assert not sni.wants_sni_variant(fine)
    probed = _observation(NO_SNI, {"a": [address(IP1, certs.default)]}, [("SNI", WITH_SNI, {})])
    assert not sni.wants_sni_variant(probed)


def test_wants_sni_variant_after_a_refusal_without_sni() -> None:
    refused = address(IP1, (), failure=Failure.TLS_ALERT, alert="handshake_failure", stores={})
    assert sni.wants_sni_variant(_observation(NO_SNI, {"a": [refused]}))
    timeout = address(IP1, (), failure=Failure.HANDSHAKE_TIMEOUT, stores={})
    assert not sni.wants_sni_variant(_observation(NO_SNI, {"a": [timeout]}))
    # With SNI, a refusal is not a default-certificate question.
    assert not sni.wants_no_sni_variant(_observation(WITH_SNI, {"a": [refused]}))


def test_no_sni_variant_wanted_for_an_ip_target(certs: Certs) -> None:
    # An IP literal never goes into SNI, so the probe sent none and an SNI variant cannot help.
    ip_req = request(IP1)
    observation = _observation(ip_req, {"a": [address(IP1, certs.api)]})
    assert not sni.wants_sni_variant(observation)
    assert not sni.wants_no_sni_variant(observation)


def test_no_variant_wanted_when_nobody_answered() -> None:
    observation = observe(silent("a"), req=WITH_SNI)
    assert not sni.wants_no_sni_variant(observation)
    assert not sni.wants_sni_variant(observation)
