"""Targets as typed, and resolution through the host's own resolver."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tlsfleet.agent.model import Failure, Target
from tlsfleet.agent.probe.resolve import resolve
from tlsfleet.agent.probe.targets import TargetError, is_ip_literal, is_loopback, parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", Target("example.com", 443)),
        # The trailing dot stays: OpenSSL and Python send it in SNI and check the name with it.
        ("Example.COM.", Target("example.com.", 443)),
        ("example.com:8443", Target("example.com", 8443)),
        ("10.0.0.5", Target("10.0.0.5", 443)),
        ("10.0.0.5:1", Target("10.0.0.5", 1)),
        ("[2001:db8::1]:8443", Target("2001:db8::1", 8443)),
        ("[2001:DB8:0::1]", Target("2001:db8::1", 443)),
        ("::1", Target("::1", 443)),
        ("https://example.com", Target("example.com", 443)),
        ("HTTPS://example.com:65535/login?next=/#top", Target("example.com", 65535)),
        ("https://[::1]:8443/", Target("::1", 8443)),
        ("https://example.com?q=1", Target("example.com", 443)),
        ("bücher.example", Target("xn--bcher-kva.example", 443)),
        ("https://bücher.example:444/x", Target("xn--bcher-kva.example", 444)),
        ("svc_name.internal", Target("svc_name.internal", 443)),
        ("localhost", Target("localhost", 443)),
        ("a" * 63 + ".test", Target("a" * 63 + ".test", 443)),
    ],
)
def test_accepted_targets(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


def test_default_port_is_used_only_without_one() -> None:
    assert parse_target("example.com", default_port=8443).port == 8443
    assert parse_target("example.com:9443", default_port=8443).port == 9443


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty target"),
        ("example.com ", "whitespace"),
        ("exa mple.com", "whitespace"),
        ("example.com:https", "port 'https' is not a number"),
        ("example.com:", "port '' is not a number"),
        ("example.com:0", "port 0 is out of range"),
        ("example.com:65536", "port 65536 is out of range"),
        ("example.com:-1", "is not a number"),
        ("http://example.com", "scheme 'http'"),
        ("ftp://example.com", "scheme 'ftp'"),
        ("https://", "no host"),
        ("https://user@example.com", "user information"),
        ("[::1", "without a closing"),
        ("[example.com]:443", "is not an IPv6 address"),
        ("[::1]443", "where ':PORT' belongs"),
        ("1:2:3", "neither an IPv6 address"),
        ("-bad.example", "not a valid host name label"),
        ("bad-.example", "not a valid host name label"),
        ("ex*ample.com", "not a valid host name label"),
        ("a..b", "label"),
        ("a" * 64 + ".test", "label"),
        (".".join(["a" * 60] * 5), "at most 253"),
        ("999.1.1.1", "not a valid IPv4 address"),
        ("example.com/path", "not a valid host name label"),
    ],
)
def test_rejected_targets_name_the_problem_and_what_is_accepted(text: str, problem: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(text)
    message = str(caught.value)
    assert problem in message
    assert "accepted" in message


def test_target_error_is_a_value_error() -> None:
    assert issubclass(TargetError, ValueError)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("::2", False),
        ("localhost.example", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_is_ip_literal() -> None:
    assert is_ip_literal("127.0.0.1") and is_ip_literal("::1")
    assert not is_ip_literal("example.com") and not is_ip_literal("[::1]")


def test_ip_literals_resolve_to_themselves_without_a_lookup() -> None:
    result = asyncio.run(resolve("0:0::1", 443, timeout=1.0, cap=4))
    assert result.addresses == ("::1",)
    assert result.failure is Failure.NONE
    assert result.duration_ms == 0.0


def test_localhost_resolves_through_the_host_resolver() -> None:
    expected = list(dict.fromkeys(str(i[4][0]) for i in socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)))
    result = asyncio.run(resolve("localhost", 443, timeout=3.0, cap=8))
    assert result.failure is Failure.NONE, result.error
    assert list(result.addresses) == expected  # deduplicated, resolver order
    assert all(is_loopback(a) for a in result.addresses)
    assert result.duration_ms > 0
    assert result.truncated_from == 0


def test_the_cap_keeps_the_first_addresses_and_records_the_total() -> None:
    everything = asyncio.run(resolve("localhost", 443, timeout=3.0, cap=8)).addresses
    if len(everything) < 2:
        pytest.skip(f"localhost has one address here ({everything[0]}); the cap needs two to show")
    capped = asyncio.run(resolve("localhost", 443, timeout=3.0, cap=1))
    assert capped.addresses == everything[:1]
    assert capped.truncated_from == len(everything)


def test_resolver_errors_are_dns_error_with_the_resolver_message() -> None:
    # Longer than a DNS name may be: the resolver refuses it without sending a query.
    name = "a." * 130 + "test"
    result = asyncio.run(resolve(name, 443, timeout=3.0, cap=8))
    assert result.failure is Failure.DNS_ERROR
    assert result.addresses == ()
    assert name in result.error and len(result.error) > len(name)


def test_unencodable_names_are_dns_errors() -> None:
    result = asyncio.run(resolve("a..b", 443, timeout=3.0, cap=8))
    assert result.failure is Failure.DNS_ERROR
    assert "not a resolvable name" in result.error


def test_resolver_deadline_is_a_dns_timeout() -> None:
    # A microsecond is shorter than any trip through the resolver thread.
    result = asyncio.run(resolve("localhost", 443, timeout=1e-6, cap=8))
    assert result.failure is Failure.DNS_TIMEOUT
    assert "within" in result.error


def test_resolve_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(resolve("localhost", 443, timeout=1.0, cap=0))
    with pytest.raises(ValueError, match="above 0"):
        asyncio.run(resolve("localhost", 443, timeout=0, cap=1))
