"""Which agents may hold a stream, one stream per identity, and online / stale / offline by heartbeat."""

from __future__ import annotations

import asyncio

import pytest

from tlsfleet.coordinator.fleet.link_registry import (
    LinkPolicy,
    LinkRegistry,
    LinkState,
    admission_refusal,
    parse_version,
)
from tlsfleet.coordinator.fleet.link_session import LinkClosed, LinkSession
from tlsfleet.v1 import link_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = LinkPolicy(
    inventory_names=frozenset({"db-1"}),
    allow_patterns=("edge-*",),
    min_version="0.2.0",
    heartbeat_interval_s=1.0,
    stale_after=3,
)


def session(name: str, clock: Clock, address: str = "10.0.0.1:5000") -> LinkSession:
    return LinkSession(name=name, version="0.2.0", labels=(("env", "prod"),), address=address, clock=clock)


def test_agents_in_the_inventory_or_matching_a_pattern_are_admitted() -> None:
    assert admission_refusal(POLICY, ("agent", "db-1"), "db-1", "0.2.0") is None
    assert admission_refusal(POLICY, ("agent", "edge-7"), "edge-7", "0.3.1rc1") is None


@pytest.mark.parametrize(
    ("certificate", "registered", "version", "reason"),
    [
        (None, "edge-1", "0.2.0", "no tlsfleet identity"),
        (("coordinator", "edge-1"), "edge-1", "0.2.0", "a coordinator certificate"),
        (("agent", "edge-2"), "edge-1", "0.2.0", "the certificate names agent 'edge-2', but the stream registered as"),
        (
            ("agent", "web-1"),
            "web-1",
            "0.2.0",
            "not in the inventory and matches no [agent_link] allow pattern (edge-*)",
        ),
        (("agent", "edge-1"), "edge-1", "0.1.9", "runs tlsfleet 0.1.9; this coordinator accepts 0.2.0 or newer"),
        (("agent", "edge-1"), "edge-1", "", "runs tlsfleet (no version)"),
    ],
)
def test_refusals_say_why(certificate: tuple[str, str] | None, registered: str, version: str, reason: str) -> None:
    refusal = admission_refusal(POLICY, certificate, registered, version)
    assert refusal is not None and reason in refusal


def test_labels_a_selector_cannot_match_are_refused() -> None:
    refusal = admission_refusal(POLICY, ("agent", "edge-1"), "edge-1", "0.2.0", (("bad key", "x"),))
    assert refusal is not None and "label 'bad key' is not accepted" in refusal
    many = tuple((f"k{i}", "v") for i in range(65))
    refusal = admission_refusal(POLICY, ("agent", "edge-1"), "edge-1", "0.2.0", many)
    assert refusal is not None and "65 labels; at most 64" in refusal


def test_versions_compare_by_number_not_text() -> None:
    assert parse_version("0.10.0") > parse_version("0.9.9")  # type: ignore[operator]
    assert parse_version("1.2") == (1, 2, 0)
    assert parse_version("dev") is None


def test_stale_after_silent_intervals_and_back_online_with_a_heartbeat() -> None:
    clock = Clock()
    registry = LinkRegistry(POLICY, clock=clock)
    edge = session("edge-1", clock)
    registry.attach(edge)
    assert registry.state("edge-1") is LinkState.ONLINE
    clock.now += 2.9
    assert registry.sweep() == []
    assert registry.state("edge-1") is LinkState.ONLINE
    clock.now += 0.2  # 3.1 s silent: more than 3 intervals of 1 s
    assert registry.state("edge-1") is LinkState.STALE
    assert registry.sweep() == [("edge-1", LinkState.STALE)]
    assert registry.sweep() == []  # told once
    edge.deliver(link_pb2.AgentMessage(heartbeat=link_pb2.Heartbeat(agent_time_ns=1)))
    assert registry.state("edge-1") is LinkState.ONLINE
    assert registry.sweep() == [("edge-1", LinkState.ONLINE)]


def test_a_stream_that_ends_leaves_the_agent_offline_and_known() -> None:
    clock = Clock()
    registry = LinkRegistry(POLICY, clock=clock)
    assert registry.state("edge-1") is None
    edge = session("edge-1", clock)
    registry.attach(edge)
    registry.detach(edge, "the stream ended")
    assert registry.session("edge-1") is None
    assert registry.state("edge-1") is LinkState.OFFLINE
    [known] = registry.agents()
    assert (known.name, known.state, known.address) == ("edge-1", LinkState.OFFLINE, "10.0.0.1:5000")
    assert edge.closed and edge.close_reason == "the stream ended"


def test_a_newer_stream_replaces_the_older_cleanly() -> None:
    asyncio.run(_replacement())


async def _replacement() -> None:
    clock = Clock()
    registry = LinkRegistry(POLICY, clock=clock)
    old = session("edge-1", clock, "10.0.0.1:5000")
    registry.attach(old)
    waiting = asyncio.ensure_future(old.request(link_pb2.CoordinatorMessage(describe={}), 5.0))
    await asyncio.sleep(0)
    new = session("edge-1", clock, "10.0.0.2:6000")
    assert registry.attach(new) is old
    # The older stream is told why, then ends; what waited on it fails with the reason.
    with pytest.raises(LinkClosed, match=r"replaced by a newer stream of agent edge-1 from 10\.0\.0\.2:6000"):
        await waiting
    farewell = await old.next_outbound()
    assert farewell is not None and not farewell.refusal.retry  # two live holders must not take turns quickly
    assert "replaced by a newer stream" in farewell.refusal.reason
    assert await old.next_outbound() is None
    # The older stream's end does not take the agent offline: the newer one holds it.
    registry.detach(old, "the stream ended")
    assert registry.session("edge-1") is new
    assert registry.state("edge-1") is LinkState.ONLINE


def test_the_number_of_agents_tracked_is_bounded() -> None:
    clock = Clock()
    registry = LinkRegistry(LinkPolicy(allow_patterns=("*",), max_agents=1), clock=clock)
    registry.attach(session("edge-1", clock))
    assert registry.refusal(("agent", "edge-1"), "edge-1", "0.1.0") is None  # a known one may come back
    refusal = registry.refusal(("agent", "edge-2"), "edge-2", "0.1.0")
    assert refusal is not None and "already tracks 1 agents" in refusal
