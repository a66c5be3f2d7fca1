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


def routed(commands: Sequence[str], options: Sequence[str], observation: Observation | None = None) -> tuple[str, ...]:
    """`commands` with every `openssl s_client -connect ADDRESS` in them taking `options` (route_options).
    Through a proxy, the address an agent reports is the proxy's own: a command to that address asks the
    proxy for what the agent asked it (`proxied_authority`) instead. Commands naming a proxy already stay."""
    if not options:
        return tuple(commands)
    extra = " ".join(shlex.quote(o) for o in options)
    proxy = options[options.index("-proxy") + 1] if "-proxy" in options else ""
    proxy_host = proxy.rsplit(":", 1)[0].strip("[]")

    def add(match: re.Match[str]) -> str:
        connect = match.group(0)
        host = connect.removeprefix("openssl s_client -connect ").strip("'").rsplit(":", 1)[0].strip("[]")
        if observation is not None and proxy_host and host == proxy_host:
            connect = f"openssl s_client -connect {shlex.quote(proxied_authority(observation))}"
        return f"{connect} {extra}"

    return tuple(c if " -proxy " in c else _S_CLIENT.sub(add, c) for c in commands)


def proxied_authority(observation: Observation) -> str:
    """host:port an agent asks its proxy to CONNECT to: the pinned address, else the target's name."""
    target = observation.request.target
    return join_host_port(observation.request.options.pin_address or target.host, target.port)


def s_client_via(proxy: str, observation: Observation, sni: str | None) -> str:
    """`openssl s_client` through the proxy an agent reported (its URL), to what the agent asked it for."""
    parts = ["openssl", "s_client", "-connect", proxied_authority(observation)]
    address = _proxy_address(proxy)
    parts += ["-proxy", address] if address else []
    parts += ["-servername", sni] if sni else ["-noservername"]
    return " ".join(shlex.quote(p) for p in [*parts, "-showcerts"]) + " </dev/null"


def _proxy_address(label: str) -> str | None:
    """host:port of a proxy as the agent reported it (a URL, its password redacted); credentials are not
    for a command line."""
    from ...agent.probe.proxy import DEFAULT_PROXY_PORT  # loaded for a proxied probe's commands only

    try:
        url = urlsplit(label if "://" in label else f"http://{label}")
        port = url.port or DEFAULT_PROXY_PORT
    except ValueError:
        return None
    return join_host_port(url.hostname, port) if url.hostname else None
