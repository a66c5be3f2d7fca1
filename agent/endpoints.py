"""`host:port` endpoints for listening and dialling (agents, coordinators), as opposed to probe targets."""

from __future__ import annotations

import ipaddress
import socket

from .errors import UsageError


class EndpointError(UsageError):
    """An endpoint that is not HOST:PORT; the message says what is accepted."""


ACCEPTED = "accepted: HOST:PORT, e.g. 127.0.0.1:7443, agent-1.example:7443 or [::1]:7443"


def split_host_port(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split `host:port` / `[v6]:port`; the port is required."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise EndpointError(f"endpoint {text!r} has no port after the bracketed address; {ACCEPTED}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise EndpointError(f"endpoint {text!r} has no port; {ACCEPTED}")
        if ":" in host:
            raise EndpointError(f"endpoint {text!r}: put an IPv6 address in brackets; {ACCEPTED}")
    if not host or any(c.isspace() for c in host):
        raise EndpointError(f"endpoint {text!r} has no host; {ACCEPTED}")
    if not (port_text.isascii() and port_text.isdigit()):
        raise EndpointError(f"endpoint {text!r}: port {port_text!r} is not a number; {ACCEPTED}")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise EndpointError(f"endpoint {text!r}: port {port} is out of range {low}-65535")
    return host, port


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_failure(listen: str) -> str:
    """Why a listener on `listen` (HOST:PORT) cannot bind, in the system's words: gRPC says only "Failed to
    bind" (and to set GRPC_VERBOSITY), never whether the port is taken or the address is not this host's."""
    host, port = split_host_port(listen, allow_port_zero=True)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(address)
    except OSError as error:
        hint = {98: " (another process holds that port)", 99: " (the address is not one of this host's)"}
        return f"{error.strerror or error}{hint.get(error.errno or 0, '')}"
    return "the address is in use or not local"


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: the only places plaintext gRPC is allowed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
