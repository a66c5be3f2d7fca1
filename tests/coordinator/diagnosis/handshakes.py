"""Builders for handshakes that break off, for the handshake rules' tests (no network)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from tests.outcomes import address
from tlsfleet.agent.model import AddressResult, Client, ClientView, Failure, Handshake, Party, Verdict

HOST = "api.example.test"
IP1, IP2 = "127.0.0.41", "127.0.0.42"


def broken(
    ip: str,
    failure: Failure,
    *,
    chain: Sequence[bytes] = (),
    tls_version: str = "",
    cipher: str = "",
    alert: str = "",
    error: str = "",
    refused_by: Party = Party.NONE,
    requested: bool = False,
    ca_names: tuple[str, ...] = (),
    client_cert: str = "",
    duration_ms: float = 3600.0,
    native: Verdict | None = None,
) -> AddressResult:
    """One connected address whose handshake ended in `failure`, as an agent reports it."""
    result = address(ip, tuple(chain), failure=failure, stores={"system": Verdict.OK} if chain else {})
    verdict = native if native is not None else (Verdict.OK if chain else Verdict.NO_CHAIN)
    return replace(
        result,
        native=replace(result.native, verdict=verdict),
        handshake=Handshake(
            failure=failure,
            error=error,
            tls_version=tls_version,
            cipher=cipher,
            alert=alert,
            refused_by=refused_by,
            duration_ms=duration_ms,
            client_cert_requested=requested,
            acceptable_ca_names=ca_names,
            client_cert=client_cert,
        ),
        views=(ClientView(Client.OPENSSL, verdict, failure=failure, error=error, tls_version=tls_version),),
    )


def with_python_view(result: AddressResult, python: ClientView) -> AddressResult:
    """The address with the python view the agent adds where it differs from the openssl view."""
    openssl = result.views[0] if result.views else ClientView(Client.OPENSSL, result.native.verdict)
    openssl = replace(openssl, tls_version=result.handshake.tls_version, cipher=result.handshake.cipher)
    return replace(result, views=(openssl, python))
