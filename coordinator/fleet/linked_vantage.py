"""An agent that dialled in: requests go down its stream and are answered by id within the deadline.

The vantage holds the agent's name, not its stream: each request takes the stream current at that moment,
so a stream replaced between choosing and probing is no failure."""

from __future__ import annotations

import time

from ...agent import wire
from ...agent.model import ProbeRequest
from ...v1 import agent_pb2, link_pb2
from ..outcomes import DescribeOutcome, ProbeOutcome, VantageInfo, VantageKind, VantageState
from .clock_offset import estimate_offset
from .link_registry import LinkedAgentInfo, LinkRegistry, LinkState
from .link_session import LinkBusy, LinkClosed, LinkSession
from .vantage import Vantage

_STATE_BY_CODE = {
    link_pb2.RequestError.CODE_INVALID: VantageState.REFUSED,
    link_pb2.RequestError.CODE_BUSY: VantageState.REFUSED,
}


class _Failed(Exception):
    def __init__(self, state: VantageState, error: str) -> None:
        super().__init__(error)
        self.state = state
        self.error = error


class LinkedVantage:
    def __init__(self, registry: LinkRegistry, agent: LinkedAgentInfo) -> None:
        self.info = VantageInfo(name=agent.name, address=agent.address, labels=agent.labels, kind=VantageKind.DIAL_IN)
        self._registry = registry

    @property
    def connected(self) -> bool:
        return self._registry.session(self.info.name) is not None

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome:
        started = time.perf_counter()
        sent_ns = time.time_ns()
        try:
            session, reply = await self._ask(
                link_pb2.CoordinatorMessage(probe=wire.request_to_wire(request)), timeout_s
            )
            if reply.WhichOneof("body") != "probe_result":
                raise self._unexpected(reply)
            result, agent_name, agent_version = wire.result_from_wire(reply.probe_result)
        except _Failed as failed:
            return ProbeOutcome(self.info, failed.state, error=failed.error, duration_ms=_ms(started))
        received_ns = time.time_ns()
        problem = wire.result_problem(reply.probe_result, request)
        if problem:
            return ProbeOutcome(
                self.info,
                VantageState.ERROR,
                error=f"agent {session.name}'s reply is refused: {problem}",
                duration_ms=_ms(started),
            )
        if agent_name != session.name:
            return ProbeOutcome(
                self.info,
                VantageState.ERROR,
                agent_version=agent_version,
                error=f"the reply on agent {session.name}'s stream came from agent {agent_name!r}",
                duration_ms=_ms(started),
            )
        return ProbeOutcome(
            vantage=self.info,
            state=VantageState.OK,
            result=result,
            agent_version=agent_version,
            clock=estimate_offset(sent_ns, result.agent_received_ns, result.agent_replied_ns, received_ns),
            duration_ms=_ms(started),
        )

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome:
        started = time.perf_counter()
        sent_ns = time.time_ns()
        message = link_pb2.CoordinatorMessage(
            describe=agent_pb2.DescribeRequest(target_host=target_host or "", include_roots=include_roots)
        )
        try:
            session, reply = await self._ask(message, timeout_s)
            if reply.WhichOneof("body") != "description":
                raise self._unexpected(reply)
        except _Failed as failed:
            return DescribeOutcome(self.info, failed.state, error=failed.error, duration_ms=_ms(started))
        received_ns = time.time_ns()
        description = wire.description_from_wire(reply.description)
        problem = wire.description_problem(reply.description)
        if problem:
            error = f"agent {session.name}'s description is refused: {problem}"
            return DescribeOutcome(self.info, VantageState.ERROR, error=error, duration_ms=_ms(started))
        if description.identity.name != session.name:
            return DescribeOutcome(
                self.info,
                VantageState.ERROR,
                error=f"the reply on agent {session.name}'s stream came from agent {description.identity.name!r}",
                duration_ms=_ms(started),
            )
        stamp = description.agent_time_ns  # one agent timestamp: receipt and reply as one instant
        return DescribeOutcome(
            vantage=self.info,
            state=VantageState.OK,
            description=description,
            clock=estimate_offset(sent_ns, stamp, stamp, received_ns),
            duration_ms=_ms(started),
        )

    async def close(self) -> None:
        return None  # the stream belongs to the agent and the registry, not to one command

    async def _ask(
        self, message: link_pb2.CoordinatorMessage, timeout_s: float
    ) -> tuple[LinkSession, link_pb2.AgentMessage]:
        name = self.info.name
        session = self._registry.session(name)
        if session is None:
            raise _Failed(VantageState.OFFLINE, f"agent {name} has no stream to this coordinator (it dials in)")
        try:
            reply = await session.request(message, timeout_s)
        except TimeoutError:
            agent = self._registry.agent(name)
            stale = agent is not None and agent.state is LinkState.STALE
            note = f"; its stream is stale: no message for {agent.silent_s:.0f} s" if agent and stale else ""
            raise _Failed(VantageState.TIMEOUT, f"no answer within {timeout_s:g} s{note}") from None
        except LinkClosed as closed:
            raise _Failed(VantageState.OFFLINE, f"agent {name}'s stream ended: {closed}") from None
        except LinkBusy as busy:
            raise _Failed(VantageState.REFUSED, str(busy)) from None
        if reply.WhichOneof("body") == "error":
            state = _STATE_BY_CODE.get(reply.error.code, VantageState.ERROR)
            raise _Failed(state, reply.error.message or "the agent refused the request")
        return session, reply

    @staticmethod
    def _unexpected(reply: link_pb2.AgentMessage) -> _Failed:
        return _Failed(VantageState.ERROR, f"the agent answered with {reply.WhichOneof('body') or 'nothing'}")


def linked_candidates(registry: LinkRegistry) -> list[tuple[Vantage, bool]]:
    """A vantage for every agent the registry knows, with whether it holds a stream now."""
    vantages = [LinkedVantage(registry, agent) for agent in registry.agents()]
    return [(v, v.connected) for v in vantages]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
