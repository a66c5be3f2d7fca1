"""The CLI's way to dial-in agents: the coordinator address, and outcomes carried through it unchanged."""

from __future__ import annotations

import pytest

from tlsfleet.agent.model import ProbeResult, Resolution, Target
from tlsfleet.coordinator.fleet.link_registry import LinkedAgentInfo, LinkState
from tlsfleet.coordinator.fleet.link_wire import (
    describe_from_wire,
    linked_agent_info,
    linked_agent_to_wire,
    probe_outcome_from_wire,
    probe_outcome_to_wire,
)
from tlsfleet.coordinator.fleet.relay import RelayError, parse_coordinator_address
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageKind, VantageState


def test_the_coordinator_address_names_the_identity_to_expect() -> None:
    assert parse_coordinator_address("10.0.0.2:7443") == ("coordinator", "10.0.0.2:7443")
    assert parse_coordinator_address("hub@[::1]:7443") == ("hub", "[::1]:7443")


@pytest.mark.parametrize("bad", ["10.0.0.2", "Hub Name@10.0.0.2:7443", "hub@"])
def test_a_bad_coordinator_address_is_named(bad: str) -> None:
    with pytest.raises(RelayError, match=r"use \[NAME@\]HOST:PORT"):
        parse_coordinator_address(bad)


def test_a_probe_outcome_crosses_the_coordinator_unchanged() -> None:
    info = VantageInfo("k8s-7", "10.9.0.1:40000", (("env", "prod"),), VantageKind.DIAL_IN)
    outcome = ProbeOutcome(
        vantage=info,
        state=VantageState.OK,
        result=ProbeResult(
            target=Target("api.test", 443),
            sni="api.test",
            expected_name="api.test",
            resolution=Resolution(addresses=("10.0.0.9",), duration_ms=1.5),
            addresses=(),
            trust_stores=(),
            agent_received_ns=10,
            agent_replied_ns=20,
        ),
        agent_version="0.1.0",
        clock=ClockEstimate(offset_ms=-3.0, error_ms=1.0),
        duration_ms=12.0,
    )
    assert probe_outcome_from_wire(info, probe_outcome_to_wire(outcome)) == outcome


def test_a_silent_agent_is_listed_with_its_state_and_reason() -> None:
    agent = LinkedAgentInfo("k8s-7", "0.1.0", (("env", "prod"),), "10.9.0.1:40000", LinkState.STALE, 12.0)
    message = linked_agent_to_wire(agent, None)
    assert message.link_state == "stale"
    info = linked_agent_info(message)
    assert info == VantageInfo("k8s-7", "10.9.0.1:40000", (("env", "prod"),), VantageKind.DIAL_IN)
    message.state, message.error = "timeout", "no answer within 5 s"
    described = describe_from_wire(info, message)
    assert (described.state, described.error, described.description) == (VantageState.TIMEOUT, message.error, None)
