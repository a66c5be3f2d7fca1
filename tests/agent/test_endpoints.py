"""`host:port` endpoints for agents and coordinators: parsing, refusal messages, loopback detection."""

from __future__ import annotations

import socket

import pytest

from tlsfleet.agent.endpoints import EndpointError, bind_failure, is_loopback_host, join_host_port, split_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7443", ("127.0.0.1", 7443)),
        ("agent-1.example:7443", ("agent-1.example", 7443)),
        ("localhost:1", ("localhost", 1)),
        ("10.0.0.5:65535", ("10.0.0.5", 65535)),
        ("[::1]:7443", ("::1", 7443)),
        ("[2001:db8::5]:443", ("2001:db8::5", 443)),
        ("  web-1:8443  ", ("web-1", 8443)),
        ("host:00080", ("host", 80)),
    ],
)
def test_split_accepts_host_port_forms(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("agent-1.example", "has no port"),
        ("", "has no port"),
        ("[::1]", "no port after the bracketed address"),
        ("[::1]7443", "no port after the bracketed address"),
        ("[::1", "no port after the bracketed address"),
        ("::1:7443", "put an IPv6 address in brackets"),
        ("2001:db8::5:443", "put an IPv6 address in brackets"),
        (":7443", "has no host"),
        ("[]:7443", "has no host"),
        ("my host:7443", "has no host"),
        ("host:", "port '' is not a number"),
        ("host:http", "port 'http' is not a number"),
        ("host:-1", "port '-1' is not a number"),
        ("host:+80", "port '+80' is not a number"),
        ("host: 80", "port ' 80' is not a number"),
        ("host:65536", "port 65536 is out of range 1-65535"),
        ("host:99999999999", "is out of range 1-65535"),
        ("host:0", "port 0 is out of range 1-65535"),
    ],
)
def test_split_refuses_with_a_message_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(EndpointError) as caught:
        split_host_port(text)
    message = str(caught.value)
    assert fragment in message
    # Every refusal shows the accepted forms, so the reader can fix the input without the docs.
    if "out of range" not in message:
        assert "accepted: HOST:PORT" in message


def test_endpoint_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        split_host_port("nope")


def test_port_zero_only_when_allowed() -> None:
    with pytest.raises(EndpointError, match="out of range 1-65535"):
        split_host_port("127.0.0.1:0")
    assert split_host_port("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
    assert split_host_port("[::1]:0", allow_port_zero=True) == ("::1", 0)
    with pytest.raises(EndpointError, match="out of range 0-65535"):
        split_host_port("127.0.0.1:65536", allow_port_zero=True)


def test_superscript_digit_port_is_refused_as_endpoint_error() -> None:
    with pytest.raises(EndpointError, match="is not a number"):
        split_host_port("host:²")


@pytest.mark.parametrize("text", ["host:٣", "host:７４４３"])
def test_non_ascii_digit_port_is_refused(text: str) -> None:
    with pytest.raises(EndpointError):
        split_host_port(text)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 7443, "127.0.0.1:7443"),
        ("agent-1.example", 1, "agent-1.example:1"),
        ("::1", 7443, "[::1]:7443"),
        ("2001:db8::5", 443, "[2001:db8::5]:443"),
    ],
)
def test_join_brackets_ipv6_and_round_trips(host: str, port: int, expected: str) -> None:
    joined = join_host_port(host, port)
    assert joined == expected
    assert split_host_port(joined) == (host, port)


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "LocalHost", "127.0.0.1", "127.0.0.2", "127.255.255.254", "::1"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host) is True


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.5",
        "0.0.0.0",
        "::",
        "128.0.0.1",
        "192.168.1.1",
        "2001:db8::1",
        "example.com",
        "localhost.example.com",
        "mylocalhost",
        "[::1]",
        "",
    ],
)
def test_non_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host) is False


def test_a_listener_that_cannot_bind_is_told_why() -> None:
    """gRPC's own words ("Failed to bind ...; set GRPC_VERBOSITY=debug") say neither cause."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert bind_failure(f"127.0.0.1:{port}") == "Address already in use (another process holds that port)"
    # 192.0.2.0/24 is documentation space: no host has it.
    assert bind_failure("192.0.2.7:7443") == "Cannot assign requested address (the address is not one of this host's)"
