"""Commands a person can paste on an affected host to see what the agent saw."""

from __future__ import annotations

import shlex
from datetime import datetime

from ...agent.endpoints import join_host_port


def s_client(address: str, port: int, sni: str | None, *, show_certs: bool = True) -> str:
    """`openssl s_client` against one address, with the SNI the probe used (or none)."""
    parts = ["openssl", "s_client", "-connect", join_host_port(address, port)]
    parts += ["-servername", sni] if sni else ["-noservername"]
    if show_certs:
        parts.append("-showcerts")
    return " ".join(shlex.quote(p) for p in parts) + " </dev/null"


def verify_at(when: datetime, cafile: str | None, name: str | None = None) -> str:
    """`openssl verify` of a saved chain at a chosen time (chain.pem: leaf first, as served)."""
    parts = ["openssl", "verify", "-attime", str(int(when.timestamp()))]
    if cafile:
        parts += ["-CAfile", cafile]
    if name:
        parts += ["-verify_hostname", name]
    parts += ["-untrusted", "chain.pem", "leaf.pem"]
    return " ".join(shlex.quote(p) for p in parts)


def save_chain(address: str, port: int, sni: str | None) -> str:
    """Save the served chain as chain.pem and its leaf as leaf.pem, for `openssl verify`."""
    fetch = s_client(address, port, sni)
    return (
        f"{fetch} 2>/dev/null | awk '/BEGIN CERT/,/END CERT/' > chain.pem && "
        "awk '/BEGIN CERT/,/END CERT/{print} /END CERT/{exit}' chain.pem > leaf.pem"
    )
