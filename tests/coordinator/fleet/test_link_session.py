"""Requests multiplexed on one agent stream: answered by id in any order, each within its deadline."""

from __future__ import annotations

import asyncio

import pytest

from tlsfleet.agent.model import ProbeRequest, Target
from tlsfleet.coordinator.fleet.link_registry import LinkPolicy, LinkRegistry
from tlsfleet.coordinator.fleet.link_session import LinkBusy, LinkClosed, LinkSession
from tlsfleet.coordinator.fleet.linked_vantage import LinkedVantage, linked_candidates
from tlsfleet.coordinator.outcomes import VantageKind, VantageState
from tlsfleet.v1 import agent_pb2, link_pb2, probe_pb2


def new_session(name: str = "edge-1", max_pending: int = 16) -> LinkSession:
    return LinkSession(name=name, version="0.1.0", labels=(), address="127.0.0.1:5000", max_pending=max_pending)


def describe() -> link_pb2.CoordinatorMessage:
    return link_pb2.CoordinatorMessage(describe=agent_pb2.DescribeRequest())


def test_answers_find_their_request_by_id_in_any_order() -> None:
    async def scenario() -> None:
        session = new_session()
        first = asyncio.ensure_future(session.request(describe(), 5.0))
        second = asyncio.ensure_future(session.request(describe(), 5.0))
        sent = [await session.next_outbound(), await session.next_outbound()]
        assert all(m is not None and m.timeout_s == 5.0 for m in sent)
        ids = [m.request_id for m in sent if m is not None]
        assert len(set(ids)) == 2
        # The second request is answered first.
        for request_id, hostname in ((ids[1], "second"), (ids[0], "first")):
            session.deliver(
                link_pb2.AgentMessage(
                    request_id=request_id,
                    description=agent_pb2.AgentDescription(facts=agent_pb2.HostFacts(hostname=hostname)),
                )
            )
        assert (await first).description.facts.hostname == "first"
        assert (await second).description.facts.hostname == "second"
        assert session.pending == 0

    asyncio.run(scenario())


def test_a_request_past_its_deadline_is_cancelled_and_a_late_answer_ignored() -> None:
    async def scenario() -> None:
        session = new_session()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await session.request(describe(), 0.2)
        assert 0.2 <= loop.time() - started < 1.0
        sent, cancel = await session.next_outbound(), await session.next_outbound()
        assert sent is not None and cancel is not None
        assert cancel.WhichOneof("body") == "cancel" and cancel.request_id == sent.request_id
        session.deliver(link_pb2.AgentMessage(request_id=sent.request_id, error=link_pb2.RequestError()))
        assert session.pending == 0

    asyncio.run(scenario())


def test_a_closed_stream_fails_what_waits_on_it_and_refuses_more() -> None:
    async def scenario() -> None:
        session = new_session()
        waiting = asyncio.ensure_future(session.request(describe(), 5.0))
        await asyncio.sleep(0)
        session.close("the stream ended")
        with pytest.raises(LinkClosed, match="the stream ended"):
            await waiting
        with pytest.raises(LinkClosed):
            await session.request(describe(), 5.0)
        assert await session.next_outbound() is None

    asyncio.run(scenario())


def test_requests_waiting_on_one_stream_are_bounded() -> None:
    async def scenario() -> None:
        session = new_session(max_pending=2)
        waiting = [asyncio.ensure_future(session.request(describe(), 5.0)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(LinkBusy, match="2 requests already wait"):
            await session.request(describe(), 5.0)
        session.close("done")
        await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(scenario())


async def _answer_as_agent(session: LinkSession, agent_name: str, answer: str) -> None:
    """A stand-in for the stream's far end: answers what the session sends."""
    while (message := await session.next_outbound()) is not None:
        if message.WhichOneof("body") != "probe":
            continue
        if answer == "result":
            result = probe_pb2.ProbeResult(
                agent=probe_pb2.AgentRef(name=agent_name, version="0.1.0"),
                target=message.probe.target,
                agent_received_ns=1,
                agent_replied_ns=2,
            )
            session.deliver(link_pb2.AgentMessage(request_id=message.request_id, probe_result=result))
        elif answer == "busy":
            error = link_pb2.RequestError(code=link_pb2.RequestError.CODE_BUSY, message="agent busy")
            session.deliver(link_pb2.AgentMessage(request_id=message.request_id, error=error))


def probe_with(answer: str, timeout_s: float = 2.0, agent_name: str = "edge-1"):
    async def scenario():
        registry = LinkRegistry(LinkPolicy(allow_patterns=("*",)))
        session = new_session()
        registry.attach(session)
        [(vantage, connected)] = linked_candidates(registry)
        assert connected and vantage.info.kind is VantageKind.DIAL_IN
        far_end = asyncio.ensure_future(_answer_as_agent(session, agent_name, answer))
        try:
            return await vantage.probe(ProbeRequest(Target("example.test", 443)), timeout_s)
        finally:
            registry.detach(session, "test over")
            await far_end

    return asyncio.run(scenario())


def test_a_linked_vantage_probes_down_the_stream() -> None:
    outcome = probe_with("result")
    assert outcome.state is VantageState.OK, outcome.error
    assert outcome.result is not None and outcome.result.target == Target("example.test", 443)
    assert outcome.clock is not None


def test_a_linked_vantage_ends_in_an_explicit_state() -> None:
    silent = probe_with("nothing", timeout_s=0.3)
    assert (silent.state, silent.error) == (VantageState.TIMEOUT, "no answer within 0.3 s")
    assert probe_with("busy").state is VantageState.REFUSED
    impostor = probe_with("result", agent_name="edge-9")
    assert impostor.state is VantageState.ERROR and "edge-9" in impostor.error


def test_an_agent_without_a_stream_is_offline() -> None:
    async def scenario():
        registry = LinkRegistry(LinkPolicy(allow_patterns=("*",)))
        session = new_session()
        registry.attach(session)
        [agent] = registry.agents()
        registry.detach(session, "the stream ended")
        return await LinkedVantage(registry, agent).probe(ProbeRequest(Target("example.test", 443)), 1.0)

    outcome = asyncio.run(scenario())
    assert outcome.state is VantageState.OFFLINE
    assert "has no stream to this coordinator" in outcome.error
