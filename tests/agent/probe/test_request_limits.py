"""Bounds on probe requests: each accepted at its edge, refused just past it by name; deadline fitting."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target, TlsVersion
from tlsfleet.agent.probe.request_limits import (
    MAX_ADDRESSES,
    MAX_ALPN_PROTOCOLS,
    MAX_HOST_LENGTH,
    MAX_PHASE_TIMEOUT_S,
    RequestError,
    fit_to_deadline,
    validate_request,
)


def _request(host: str = "example.test", port: int = 443, **options: object) -> ProbeRequest:
    return ProbeRequest(Target(host, port), ProbeOptions(**options), request_id="r-1")  # type: ignore[arg-type]


def _accepted(request: ProbeRequest) -> None:
    assert validate_request(request) is request


def _refused(request: ProbeRequest, *fragments: str) -> None:
    with pytest.raises(RequestError) as caught:
        validate_request(request)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_limits_have_the_documented_values() -> None:
    assert (MAX_ADDRESSES, MAX_PHASE_TIMEOUT_S, MAX_ALPN_PROTOCOLS, MAX_HOST_LENGTH) == (64, 60.0, 16, 253)


def test_default_request_is_accepted_and_returned_unchanged() -> None:
    _accepted(_request())
    _accepted(ProbeRequest(Target("::1", 8443)))


def test_request_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_request(_request(port=0))


# --- target ------------------------------------------------------------------------------------------


def test_host_length_edge() -> None:
    _accepted(_request("a" * MAX_HOST_LENGTH))
    _refused(_request("a" * (MAX_HOST_LENGTH + 1)), "target host", "1-253 characters")


@pytest.mark.parametrize("host", ["", "exa mple.test", "example.test\n", "\texample.test"])
def test_empty_or_spaced_host_is_refused(host: str) -> None:
    _refused(_request(host), "target host", repr(host), "no spaces")


@pytest.mark.parametrize("port", [1, 443, 65535])
def test_port_edges_accepted(port: int) -> None:
    _accepted(_request(port=port))


@pytest.mark.parametrize("port", [0, -1, 65536, 100_000])
def test_port_past_edges_refused(port: int) -> None:
    _refused(_request(port=port), f"target port {port}", "accepted: 1-65535")


# --- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, MAX_ADDRESSES])
def test_max_addresses_edges_accepted(count: int) -> None:
    _accepted(_request(max_addresses=count))


@pytest.mark.parametrize("count", [0, -3, MAX_ADDRESSES + 1])
def test_max_addresses_past_edges_refused(count: int) -> None:
    _refused(_request(max_addresses=count), f"max_addresses {count}", "accepted: 1-64")


@pytest.mark.parametrize("field", ["resolve_timeout", "connect_timeout", "handshake_timeout"])
@pytest.mark.parametrize("value", [1e-6, 0.001, MAX_PHASE_TIMEOUT_S])
def test_phase_timeout_edges_accepted(field: str, value: float) -> None:
    _accepted(_request(**{field: value}))


@pytest.mark.parametrize("field", ["resolve_timeout", "connect_timeout", "handshake_timeout"])
@pytest.mark.parametrize("value", [0.0, -1.0, MAX_PHASE_TIMEOUT_S + 0.001, math.inf, math.nan])
def test_phase_timeout_past_edges_refused(field: str, value: float) -> None:
    phase = field.removesuffix("_timeout")
    _refused(_request(**{field: value}), f"{phase} timeout", "above 0, at most 60 s")


def test_alpn_count_edge() -> None:
    _accepted(_request(alpn=tuple(f"p{i}" for i in range(MAX_ALPN_PROTOCOLS))))
    _refused(_request(alpn=tuple(f"p{i}" for i in range(MAX_ALPN_PROTOCOLS + 1))), "ALPN list", "at most 16")


def test_alpn_protocol_length_is_counted_in_bytes() -> None:
    _accepted(_request(alpn=("h2", "x" * 255)))
    _accepted(_request(alpn=("é" * 127,)))  # 254 bytes
    _refused(_request(alpn=("x" * 256,)), "ALPN list", "1-255 bytes")
    _refused(_request(alpn=("é" * 128,)), "ALPN list")  # 128 characters, 256 bytes
    _refused(_request(alpn=("h2", "")), "ALPN list", "1-255 bytes")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "::1", "2001:db8::7", "::ffff:192.0.2.1"])
def test_pinned_address_literals_accepted(address: str) -> None:
    _accepted(_request(pin_address=address))


@pytest.mark.parametrize("address", ["", "example.test", "127.0.0.1:443", "256.1.1.1", "[::1]"])
def test_pinned_address_not_a_literal_refused(address: str) -> None:
    _refused(_request(pin_address=address), "pinned address", repr(address), "IPv4 or IPv6 literal")


def test_sni_edges() -> None:
    _accepted(_request(sni=None))
    _accepted(_request(sni="s"))
    _accepted(_request(sni="s" * MAX_HOST_LENGTH))
    _refused(_request(sni=""), "SNI name ''", "1-253 characters")
    _refused(_request(sni="s" * (MAX_HOST_LENGTH + 1)), "SNI name")


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (TlsVersion.TLS1_0, TlsVersion.TLS1_0),
        (TlsVersion.TLS1_0, TlsVersion.TLS1_1),
        (TlsVersion.TLS1_2, TlsVersion.TLS1_3),
        (TlsVersion.TLS1_3, TlsVersion.TLS1_3),
        (None, TlsVersion.TLS1_0),
        (TlsVersion.TLS1_3, None),
    ],
)
def test_version_bounds_in_order_accepted(low: TlsVersion | None, high: TlsVersion | None) -> None:
    _accepted(_request(min_version=low, max_version=high))


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (TlsVersion.TLS1_1, TlsVersion.TLS1_0),  # "TLSv1" must sort below "TLSv1.1"
        (TlsVersion.TLS1_3, TlsVersion.TLS1_2),
        (TlsVersion.TLS1_3, TlsVersion.TLS1_0),
    ],
)
def test_version_bounds_inverted_refused(low: TlsVersion, high: TlsVersion) -> None:
    _refused(_request(min_version=low, max_version=high), f"TLS minimum {low}", f"maximum {high}")


# --- fit_to_deadline ---------------------------------------------------------------------------------


def _phases(request: ProbeRequest) -> tuple[float, float, float]:
    o = request.options
    return o.resolve_timeout, o.connect_timeout, o.handshake_timeout


def test_no_deadline_leaves_the_request_alone() -> None:
    request = _request()
    assert fit_to_deadline(request, None) is request


def test_enough_time_leaves_the_request_alone() -> None:
    request = _request(resolve_timeout=1.0, connect_timeout=2.0, handshake_timeout=3.0)
    assert fit_to_deadline(request, 60.0) is request
    # Exactly enough once the 0.2 s reply margin is kept.
    assert fit_to_deadline(request, 6.2) is request


@pytest.mark.parametrize("seconds_left", [10.0, 5.0, 1.0, 0.5, 0.3])
def test_scaling_keeps_the_sum_under_the_budget_and_the_proportions(seconds_left: float) -> None:
    request = _request(resolve_timeout=3.0, connect_timeout=3.0, handshake_timeout=5.0)
    fitted = fit_to_deadline(request, seconds_left)
    phases = _phases(fitted)
    budget = seconds_left - 0.2
    assert sum(phases) <= budget + 1e-9
    assert sum(phases) == pytest.approx(budget)
    assert sum(phases) < seconds_left
    # Every phase keeps its share, so none is starved in favour of another.
    assert phases[0] / phases[2] == pytest.approx(3.0 / 5.0)
    assert phases[1] / phases[2] == pytest.approx(3.0 / 5.0)
    # Only the timeouts change; the shrunken request still passes validation.
    assert replace(fitted.options, resolve_timeout=3.0, connect_timeout=3.0, handshake_timeout=5.0) == request.options
    assert fitted.target == request.target
    assert fitted.request_id == request.request_id
    assert validate_request(fitted) is fitted


@pytest.mark.parametrize("seconds_left", [0.25, 0.2, 0.0, -5.0])
def test_deadline_at_or_past_the_margin_floors_at_a_small_positive_budget(seconds_left: float) -> None:
    fitted = fit_to_deadline(_request(), seconds_left)
    phases = _phases(fitted)
    assert sum(phases) == pytest.approx(0.05)
    assert all(p > 0 for p in phases)
    assert validate_request(fitted) is fitted


def test_fit_does_not_mutate_the_original() -> None:
    request = _request()
    before = _phases(request)
    fit_to_deadline(request, 1.0)
    assert _phases(request) == before
