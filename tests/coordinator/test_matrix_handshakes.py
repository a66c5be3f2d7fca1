"""Matrix rows of failed handshakes: never shown as fine, whichever client on the host failed."""

from __future__ import annotations

from tests.coordinator.diagnosis.handshakes import IP1, broken, with_python_view
from tests.outcomes import address, outcome
from tlsfleet.agent.model import Client, ClientView, Failure, Party, Verdict
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import build_matrix, row_is_fine


def _chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Matrix")
    return (pki.issue_leaf("api.example.test").der, pki.intermediate.der)


def test_failed_handshakes_are_never_fine_even_after_a_verified_chain() -> None:
    chain = _chain()
    weak = broken(
        IP1,
        Failure.WEAK_KEY_EXCHANGE,
        chain=chain,
        tls_version="TLSv1.2",
        error="[SSL: DH_KEY_TOO_SMALL] dh key too small",
        refused_by=Party.CLIENT,
        native=Verdict.OK,
    )
    cert_required = broken(
        IP1, Failure.CLIENT_CERT_REQUIRED, chain=chain, tls_version="TLSv1.3", alert="certificate_required"
    )
    stalled = broken(IP1, Failure.HANDSHAKE_TIMEOUT, error="no complete handshake within 3.6 s")
    python_fails = with_python_view(
        address(IP1, chain), ClientView(Client.PYTHON, Verdict.NO_CHAIN, failure=Failure.NO_COMMON_CIPHER)
    )
    rows = build_matrix([outcome("a", [weak, cert_required, stalled, python_fails, address(IP1, chain)])]).rows
    assert [r.ok for r in rows] == [False, False, False, False, True]
    assert rows[0].cell("native").startswith("weak_key_exchange: ")
    assert rows[1].cell("native") == "client_cert_required: certificate_required"
    assert rows[2].cell("native") == "handshake_timeout: no complete handshake within 3.6 s"
    assert rows[3].cell("native") == "ok; python: no_common_cipher"


def test_row_is_fine_only_for_a_verified_handshake_on_every_view() -> None:
    chain = _chain()
    assert row_is_fine(address(IP1, chain))
    assert not row_is_fine(address(IP1, chain, native=Verdict.UNKNOWN_ISSUER))
    assert not row_is_fine(address(IP1, (), connect_failure=Failure.REFUSED))
