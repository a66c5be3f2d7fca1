"""STARTTLS and the proxy in the request: from the CLI's words and a report's config to the wire and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsfleet.agent import wire
from tlsfleet.agent.model import (
    Failure,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    Starttls,
    Target,
)
from tlsfleet.agent.probe.request_limits import RequestError
from tlsfleet.coordinator.probing import ProbeArgumentError, build_request
from tlsfleet.coordinator.service.config import ConfigError, load_config
from tlsfleet.v1 import probe_pb2

NOW_NS = 1_790_000_000_000_000_000


@pytest.mark.parametrize(
    ("target", "asked", "expected"),
    [
        ("db.internal:5432", None, Starttls.POSTGRES),
        ("mail.internal:587", None, Starttls.SMTP),
        ("mail.internal:465", None, Starttls.NONE),  # SMTPS: TLS from the first byte
        ("ldap.internal:636", None, Starttls.NONE),
        ("api.internal", None, Starttls.NONE),
        ("db.internal:5432", "none", Starttls.NONE),  # inference turned off
        ("db.internal:6432", "postgres", Starttls.POSTGRES),  # a pooler on another port, told
        ("mail.internal:2525", "SMTP", Starttls.SMTP),
    ],
)
def test_build_request_infers_or_takes_the_protocol(target: str, asked: str | None, expected: Starttls) -> None:
    assert build_request(target, now_ns=NOW_NS, starttls=asked).options.starttls is expected


def test_an_unknown_protocol_is_named_with_what_is_accepted() -> None:
    with pytest.raises(ProbeArgumentError, match=r"--starttls 'smtps' is not a known protocol; accepted: none, smtp"):
        build_request("mail.internal:465", now_ns=NOW_NS, starttls="smtps")


def test_via_proxy_reaches_the_request() -> None:
    assert build_request("api.internal", now_ns=NOW_NS, via_proxy=True).options.via_proxy
    assert not build_request("api.internal", now_ns=NOW_NS).options.via_proxy


def test_the_request_round_trips_on_the_wire() -> None:
    request = ProbeRequest(Target("db.internal", 5432), ProbeOptions(starttls=Starttls.POSTGRES, via_proxy=True))
    message = wire.request_to_wire(request)
    assert message.options.starttls == "postgres" and message.options.via_proxy
    back = wire.request_from_wire(message, ProbeOptions())
    assert back.options.starttls is Starttls.POSTGRES and back.options.via_proxy
    plain = wire.request_from_wire(wire.request_to_wire(ProbeRequest(Target("a.test", 443))), ProbeOptions())
    assert plain.options.starttls is Starttls.NONE and not plain.options.via_proxy


def test_an_agent_refuses_a_protocol_it_does_not_know() -> None:
    message = wire.request_to_wire(ProbeRequest(Target("db.internal", 5432)))
    message.options.starttls = "gopher"
    with pytest.raises(RequestError, match=r"STARTTLS protocol 'gopher' is not known to this agent; accepted: none"):
        wire.request_from_wire(message, ProbeOptions())


def test_the_result_says_what_was_negotiated_and_through_which_proxy() -> None:
    result = ProbeResult(
        target=Target("mail.internal", 25),
        sni="mail.internal",
        expected_name="mail.internal",
        resolution=Resolution(addresses=("egress.corp",), duration_ms=0.0),
        addresses=(),
        trust_stores=(),
        agent_received_ns=1,
        agent_replied_ns=2,
        starttls=Starttls.SMTP,
        proxy="http://probe:***@egress.corp:3128",
    )
    back, _, _ = wire.result_from_wire(wire.result_to_wire(result, "web-1", "1.0"))
    assert back.starttls is Starttls.SMTP and back.proxy == "http://probe:***@egress.corp:3128"


def test_the_new_failures_cross_the_wire_by_name() -> None:
    for failure in (
        Failure.STARTTLS_UNSUPPORTED,
        Failure.STARTTLS_REFUSED,
        Failure.STARTTLS_BAD_REPLY,
        Failure.STARTTLS_TIMEOUT,
        Failure.PROXY_REFUSED,
        Failure.PROXY_ERROR,
    ):
        assert probe_pb2.Failure.Name(wire._FAILURE_TO_WIRE[failure]) == f"FAILURE_{failure.name}"


REPORTS = """
[[report]]
name = "databases"
targets = ["db-1.internal:5432", "pooler.internal:6432"]
interval = "15m"
starttls = "postgres"

[[report]]
name = "web"
targets = ["api.internal"]
interval = "15m"
"""


def test_a_report_names_its_protocol(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(REPORTS)
    config = load_config(path)
    assert config.report("databases").starttls == "postgres"
    assert config.report("web").starttls is None  # inferred per target's port


def test_a_report_with_an_unknown_protocol_is_named(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(REPORTS.replace('"postgres"', '"pgsql"'))
    with pytest.raises(ConfigError, match=r"starttls 'pgsql' is not accepted; one of none, smtp, imap"):
        load_config(path)
