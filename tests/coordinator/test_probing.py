"""The one road from what a person typed to a probe request: plain parameters in, a validated request out."""

from __future__ import annotations

import pytest

from tlsfleet.agent.errors import UsageError
from tlsfleet.agent.model import TlsVersion
from tlsfleet.coordinator.probing import MAX_TIMEOUT_S, ProbeArgumentError, build_request

NOW_NS = 1_790_000_000_000_000_000


def test_every_parameter_reaches_the_request() -> None:
    request = build_request(
        "api.example.test:8443",
        now_ns=NOW_NS,
        timeout=4.0,
        sni="other.example.test",
        alpn=("h2",),
        tls_min="1.2",
        tls_max="TLSv1.3",
        address="192.0.2.7",
        max_addresses=3,
        client_cert="billing",
    )
    o = request.options
    assert (request.target.host, request.target.port) == ("api.example.test", 8443)
    assert (o.sni, o.send_sni, o.alpn, o.pin_address, o.max_addresses) == (
        "other.example.test",
        True,
        ("h2",),
        "192.0.2.7",
        3,
    )
    assert (o.min_version, o.max_version) == (TlsVersion.TLS1_2, TlsVersion.TLS1_3)
    assert o.client_cert == "billing" and o.reference_time_ns == NOW_NS and request.request_id
    # The three phases fit inside the one deadline.
    assert o.resolve_timeout + o.connect_timeout + o.handshake_timeout <= 4.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sni": "a.test", "no_sni": True}, "contradict"),
        ({"timeout": MAX_TIMEOUT_S + 1}, "--timeout"),
        ({"tls_min": "1.4"}, "--tls-min"),
        ({"max_addresses": 0}, "address"),
        ({"max_addresses": 65}, "--max-addresses 65 is out of range; accepted: 1-64"),
        ({"client_cert": ""}, "--client-cert '' is not accepted; give the NAME"),
        ({"client_cert": "billing=/etc/b.pem,/etc/b.key"}, "--client-cert 'billing=/etc/b.pem,/etc/b.key' is not"),
        ({"client_cert": "x" * 100_000}, "--client-cert 'x{64}' is not accepted"),
    ],
)
def test_what_is_not_accepted_is_named(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ProbeArgumentError, match=fragment) as caught:
        build_request("api.example.test", now_ns=NOW_NS, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, UsageError)  # every command turns it into one line and exit 2
