"""Commands a person can paste on an affected host to see what the agent saw."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from ...agent.endpoints import join_host_port
from ...agent.model import Starttls
from ..observation import Observation

_S_CLIENT = re.compile(r"openssl s_client -connect \S+")
_PROXY_PORT = 3128  # what a proxy URL without a port means (agent/probe/proxy.py)


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


def route_options(observation: Observation) -> tuple[str, ...]:
    """`openssl s_client` options for the road the agents took to the ClientHello: the STARTTLS dialogue they
    spoke (as `-starttls`, with XMPP's `-xmpphost`), and the HTTPS proxy they went through (`-proxy`) when
    all that used one used the same; () for TLS from the first byte, straight to the address."""
    answered = [o.result for o in observation.answered if o.result is not None]
    spoken = {r.starttls for r in answered if r.starttls is not Starttls.NONE}
    asked = observation.request.options.starttls
    starttls = next(iter(spoken)) if len(spoken) == 1 else asked
    options: list[str] = ["-starttls", starttls.value] if starttls is not Starttls.NONE else []
    if starttls is Starttls.XMPP:
        # s_client's stream `to` is the -connect host unless told: the agents' is the name, as a client's is.
        options += ["-xmpphost", observation.request.options.sni or observation.request.target.host]
    proxies = {r.proxy for r in answered if r.proxy}
    address = _proxy_address(next(iter(proxies))) if len(proxies) == 1 else None
    if address:
        options += ["-proxy", address]
    return tuple(options)


def routed(commands: Sequence[str], options: Sequence[str]) -> tuple[str, ...]:
    """`commands` with every `openssl s_client -connect ADDRESS` in them taking `options` (route_options)."""
    if not options:
        return tuple(commands)
    extra = " ".join(shlex.quote(o) for o in options)
    return tuple(_S_CLIENT.sub(lambda m: f"{m.group(0)} {extra}", c) for c in commands)


def _proxy_address(label: str) -> str | None:
    """host:port of a proxy as the agent reported it (a URL, its password redacted); credentials are not
    for a command line."""
    try:
        url = urlsplit(label if "://" in label else f"http://{label}")
        port = url.port or _PROXY_PORT
    except ValueError:
        return None
    return join_host_port(url.hostname, port) if url.hostname else None
