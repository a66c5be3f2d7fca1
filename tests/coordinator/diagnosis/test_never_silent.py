"""Never silent: every handshake failure an agent can report gives a finding at warning or above, through the
whole engine, on every vantage and on some; and the exit code follows."""

from __future__ import annotations

import pytest

from tests.coordinator.diagnosis.handshakes import HOST, IP1, broken
from tests.outcomes import address, observe, outcome
from tlsfleet.agent import exit_codes
from tlsfleet.agent.model import Failure, Party
from tlsfleet.coordinator.cli.probe import exit_code_for
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Severity
from tlsfleet.coordinator.lab.pki import LabPKI

# Every way a handshake can end after TCP connected, other than completing (NONE) or a rejected chain.
FAILED = sorted(
    set(Failure)
    - {
        Failure.NONE,
        Failure.CERT_VERIFY,
        Failure.DNS_ERROR,
        Failure.DNS_TIMEOUT,
        Failure.REFUSED,
        Failure.CONNECT_TIMEOUT,
        Failure.UNREACHABLE,
        Failure.CONNECT_ERROR,
        Failure.DENIED_BY_POLICY,  # refused by the agent before any connection: policy_denied's (its own tests)
        # Before the ClientHello: STARTTLS and the proxy's CONNECT end the connect phase (connect_failure).
        Failure.STARTTLS_UNSUPPORTED,
        Failure.STARTTLS_REFUSED,
        Failure.STARTTLS_BAD_REPLY,
        Failure.STARTTLS_TIMEOUT,
        Failure.PROXY_REFUSED,
        Failure.PROXY_ERROR,
    }
)
EXPECTED = {
    Failure.HANDSHAKE_TIMEOUT: Cause.HANDSHAKE_INCOMPLETE,
    Failure.TLS_ALERT: Cause.HANDSHAKE_INCOMPLETE,  # an alert that names nothing more specific
    Failure.PROTOCOL_ERROR: Cause.HANDSHAKE_INCOMPLETE,
    Failure.CLOSED: Cause.HANDSHAKE_INCOMPLETE,
    Failure.TOO_LARGE: Cause.HANDSHAKE_INCOMPLETE,
    Failure.INTERNAL: Cause.HANDSHAKE_INCOMPLETE,
    Failure.NOT_TLS: Cause.HANDSHAKE_INCOMPLETE,
    Failure.RESET: Cause.HANDSHAKE_INCOMPLETE,
    Failure.NO_COMMON_VERSION: Cause.PROTOCOL_MISMATCH,
    Failure.NO_COMMON_CIPHER: Cause.PROTOCOL_MISMATCH,
    Failure.WEAK_KEY_EXCHANGE: Cause.WEAK_KEY_EXCHANGE,
    Failure.CERT_TOO_LARGE: Cause.CERTIFICATE_TOO_LARGE,
    Failure.CLIENT_CERT_REQUIRED: Cause.CLIENT_CERT_REQUIRED,
}


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf(HOST).der, pki.intermediate.der)


def test_the_expectations_cover_every_failure() -> None:
    assert set(EXPECTED) == set(FAILED)


@pytest.mark.parametrize("failure", FAILED)
def test_a_failure_on_every_vantage_is_a_loud_finding_and_exit_1(failure: Failure) -> None:
    failed = broken(IP1, failure, alert="decode_error" if failure is Failure.TLS_ALERT else "")
    observation = observe(outcome("a", [failed]), outcome("b", [failed]))
    findings = diagnose(observation)
    top = findings[0]
    assert top.cause is EXPECTED[failure], [(f.cause, f.summary) for f in findings]
    assert top.severity >= Severity.WARNING
    assert set(top.agents) == {"a", "b"}
    assert exit_code_for(observation, findings, Severity.WARNING) == exit_codes.PROBLEM


@pytest.mark.parametrize("failure", FAILED)
def test_a_failure_on_some_vantages_names_only_them(chain: tuple[bytes, bytes], failure: Failure) -> None:
    failed = broken(IP1, failure, alert="decode_error" if failure is Failure.TLS_ALERT else "")
    observation = observe(
        outcome("a", [failed]), outcome("b", [address(IP1, chain)]), outcome("c", [address(IP1, chain)])
    )
    findings = diagnose(observation)
    top = findings[0]
    assert top.cause is EXPECTED[failure], [(f.cause, f.summary) for f in findings]
    assert top.severity >= Severity.WARNING
    assert top.agents == ("a",)
    for words in ("every vantage's client", "the server's side", "No vantage completes", "Every vantage"):
        assert words not in top.summary, top.summary


def test_a_stalling_server_is_never_no_findings() -> None:
    stalled = broken(IP1, Failure.HANDSHAKE_TIMEOUT, error="no complete handshake within 3.6 s")
    observation = observe(outcome("a", [stalled]), outcome("b", [stalled]))
    (top, *_rest) = diagnose(observation)
    assert top.cause is Cause.HANDSHAKE_INCOMPLETE and top.severity is Severity.CRITICAL
    assert "no ServerHello within 3.6 s" in top.summary


def test_a_weak_dh_refusal_with_a_verified_chain_blames_the_key_exchange_only(chain: tuple[bytes, bytes]) -> None:
    weak = broken(
        IP1,
        Failure.WEAK_KEY_EXCHANGE,
        chain=chain,
        tls_version="TLSv1.2",
        cipher="DHE-RSA-AES128-GCM-SHA256",
        error="[SSL: DH_KEY_TOO_SMALL] dh key too small",
        refused_by=Party.CLIENT,
    )
    findings = diagnose(observe(outcome("a", [weak]), outcome("b", [weak])))
    loud = [f for f in findings if f.severity >= Severity.WARNING]
    assert [f.cause for f in loud] == [Cause.WEAK_KEY_EXCHANGE]
