"""The first failures people meet between fleet parts, said in one line; the words come from real agents
and real gRPC in tests/coordinator/cli/test_first_errors_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsfleet.agent.pki.fleet_ca import init_fleet_ca
from tlsfleet.agent.pki.location import pki_dir_problem
from tlsfleet.coordinator.fleet.rpc_failures import MAX_DETAIL_CHARS, CallContext, explain_rpc_failure

CALL = CallContext(agent="web-1", address="10.0.0.5:7443", ca="/etc/tlsfleet/pki/ca.pem")
PREFIX = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.5:7443: "


@pytest.mark.parametrize(
    ("details", "said"),
    [
        (
            PREFIX + "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
            "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK",
            "presented a certificate that this fleet CA (/etc/tlsfleet/pki/ca.pem) did not sign",
        ),
        (
            PREFIX + "Custom verification check failed with error: UNAUTHENTICATED: "
            "Hostname Verification Check failed.",
            "the agent at 10.0.0.5:7443 is not 'web-1'",
        ),
        (PREFIX + "Failed to connect to remote host: Connection refused", "nothing listens at 10.0.0.5:7443"),
        (
            PREFIX + "Tls handshake failed: SSL_ERROR_SSL: error:10000418:SSL routines:OPENSSL_internal:"
            "TLSV1_ALERT_UNKNOWN_CA: tlsv1 alert unknown ca",
            "refused this coordinator's certificate",
        ),
    ],
)
def test_known_failures_are_explained_in_one_line(details: str, said: str) -> None:
    text = explain_rpc_failure("unavailable", details, CALL)
    assert said in text
    assert "\n" not in text and "SSL_ERROR" not in text


def test_a_port_that_never_answers_or_does_not_speak_tls_is_said_so() -> None:
    silent = explain_rpc_failure("deadline_exceeded", "Deadline Exceeded", CALL)
    assert silent.startswith("no answer from 10.0.0.5:7443 within the deadline") and "not a tlsfleet agent" in silent
    plaintext = PREFIX + (
        "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:"
        "OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification context: OK"
    )
    said = explain_rpc_failure("unavailable", plaintext, CALL)
    assert "does not speak TLS" in said and "insecure = true" in said and "SSL_ERROR" not in said
    closed = explain_rpc_failure(
        "unavailable",
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.0.5:7443: Socket closed",
        CALL,
    )
    assert "expects TLS (remove insecure = true" in closed
    # An agent that dies mid-call also closes its socket, but after the call began: gRPC's words stay.
    assert explain_rpc_failure("unavailable", "Stream removed (Socket closed)", CALL).startswith("unavailable:")


def test_a_coordinator_service_is_named_as_one() -> None:
    """`--coordinator` dials a coordinator service: the words name a coordinator, never an agent."""
    service = CallContext(agent="hub", address="10.0.0.9:7443", role="coordinator")
    said = {
        explain_rpc_failure("unavailable", PREFIX + "Failed to connect to remote host: Connection refused", service),
        explain_rpc_failure("deadline_exceeded", "Deadline Exceeded", service),
        explain_rpc_failure("unavailable", PREFIX + "Tls handshake failed: WRONG_VERSION_NUMBER", service),
        explain_rpc_failure("unavailable", PREFIX + "Hostname Verification Check failed.", service),
    }
    assert all("coordinator 'hub'" in line and "agent '" not in line for line in said), said
    assert any("give --coordinator NAME@HOST:PORT" in line for line in said)


def test_anything_else_keeps_grpcs_words_bounded() -> None:
    assert explain_rpc_failure("cancelled", "", CALL) == "cancelled"
    long = explain_rpc_failure("unknown", "x" * 10_000, CALL)
    assert len(long) <= len("unknown: ") + MAX_DETAIL_CHARS


def test_pki_dir_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = tmp_path / "pki"
    init_fleet_ca(pki)
    (pki / "agents").mkdir()
    assert pki_dir_problem(pki) is None
    assert "is the agents/ sub-folder; give the PKI directory itself" in (pki_dir_problem(pki / "agents") or "")
    nowhere = tmp_path / "nowhere"
    assert "(from $TLSFLEET_PKI_DIR)" not in (pki_dir_problem(nowhere) or "")
    monkeypatch.setenv("TLSFLEET_PKI_DIR", str(nowhere))
    assert f"PKI directory {nowhere} (from $TLSFLEET_PKI_DIR) holds no fleet CA" in (pki_dir_problem(nowhere) or "")
