"""What a failed call to an agent means, in one line a person can act on.

gRPC reports a refused TLS handshake between fleet parts as a status whose details are C-core text
("... Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: ... CERTIFICATE_VERIFY_FAILED ...").
That text is all a client is given, so the first failures people meet are recognised from it here, once,
and said in words; anything else keeps gRPC's own words.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DETAIL_CHARS = 300


@dataclass(frozen=True)
class CallContext:
    """Who was dialled, and with which fleet CA (and where that choice came from)."""

    agent: str
    address: str
    ca: str = ""  # e.g. "/etc/tlsfleet/pki/ca.pem (PKI directory from $TLSFLEET_PKI_DIR)"


def explain_rpc_failure(code: str, details: str, call: CallContext) -> str:
    """One line for a call that ended with gRPC status `code` (its lower-case name) and `details`."""
    details = " ".join(details.split())
    ca = f" ({call.ca})" if call.ca else ""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f"the agent at {call.address} presented a certificate that this fleet CA{ca} did not sign: "
            f"it belongs to another fleet, or this is the wrong PKI directory"
        )
    if "Hostname Verification Check failed" in details:
        return (
            f"the agent at {call.address} is not {call.agent!r}: its certificate names another agent "
            f"(check the inventory's address for {call.agent!r})"
        )
    if any(alert in details for alert in ("alert unknown ca", "alert bad certificate", "alert certificate unknown")):
        return (
            f"the agent at {call.address} refused this coordinator's certificate (signed by the fleet CA{ca}): "
            f"the agent trusts another fleet CA"
        )
    if "Connection refused" in details:
        return f"nothing listens at {call.address} (connection refused): is agent {call.agent!r} running there?"
    shown = details if len(details) <= MAX_DETAIL_CHARS else details[: MAX_DETAIL_CHARS - 1] + "…"
    return f"{code}: {shown}" if shown else code
