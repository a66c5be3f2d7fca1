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
    role: str = "agent"  # or "coordinator": the CLI asking a coordinator service (--coordinator)


def explain_rpc_failure(code: str, details: str, call: CallContext) -> str:
    """One line for a call that ended with gRPC status `code` (its lower-case name) and `details`."""
    details = " ".join(details.split())
    ca = f" ({call.ca})" if call.ca else ""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f"the {call.role} at {call.address} presented a certificate that this fleet CA{ca} did not sign: "
            f"it belongs to another fleet, or this is the wrong PKI directory"
        )
    if "Hostname Verification Check failed" in details and call.role == "coordinator":
        return (
            f"what answers at {call.address} is not coordinator {call.agent!r}: its certificate names another "
            "identity (an agent's listener, or a coordinator of another name: give --coordinator NAME@HOST:PORT)"
        )
    if "Hostname Verification Check failed" in details:
        return (
            f"the agent at {call.address} is not {call.agent!r}: its certificate names another agent "
            f"(check the inventory's address for {call.agent!r})"
        )
    if any(alert in details for alert in ("alert unknown ca", "alert bad certificate", "alert certificate unknown")):
        return (
            f"the {call.role} at {call.address} refused this coordinator's certificate (signed by the fleet CA{ca}): "
            f"the agent trusts another fleet CA"
        )
    if "Connection refused" in details:
        return f"nothing listens at {call.address} (connection refused): is {call.role} {call.agent!r} running there?"
    if "WRONG_VERSION_NUMBER" in details and call.role == "coordinator":
        return (
            f"what answers at {call.address} does not speak TLS: it is not the agent-link listener "
            f"([agent_link] listen) of coordinator {call.agent!r}"
        )
    if "WRONG_VERSION_NUMBER" in details:
        return (
            f"what answers at {call.address} does not speak TLS: another service holds that port, or agent "
            f"{call.agent!r} runs with --insecure (then give it insecure = true in the inventory)"
        )
    if "failed to connect to all addresses" in details and details.endswith("Socket closed"):
        # A plaintext call to an agent that expects TLS: the agent hangs up on the first bytes.
        return (
            f"what answers at {call.address} closed the connection before any gRPC: agent {call.agent!r} expects "
            "TLS (remove insecure = true from its inventory entry), or another service holds that port"
        )
    if code == "deadline_exceeded":
        # Agents answer within the caller's deadline (they shrink their probe to fit), so silence means the
        # port is held by something that accepted the connection and never answered.
        return (
            f"no answer from {call.address} within the deadline: {call.role} {call.agent!r} is hung or overloaded, "
            f"or what listens there is not a tlsfleet {call.role}"
        )
    shown = details if len(details) <= MAX_DETAIL_CHARS else details[: MAX_DETAIL_CHARS - 1] + "…"
    return f"{code}: {shown}" if shown else code
