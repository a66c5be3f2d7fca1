"""One agent's stream to this coordinator: requests go down it by id, answers come back by id.

The servicer owns the stream; a session only queues what is to be written (bounded) and matches what
was read to the request waiting for it. A request that outlives its deadline is dropped and the agent is
told to cancel it; an answer that arrives later is ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable

from ...v1 import link_pb2

MAX_PENDING_REQUESTS = 4096  # per stream; a fan-out asks each agent a few things at a time


class LinkClosed(Exception):
    """The stream ended before the answer came; the message says why."""


class LinkBusy(Exception):
    """Too many requests already wait on this stream."""


class _Outbox:
    """A bounded FIFO read by one writer: an asyncio.Queue costs about 1.5 KiB more per connected agent
    (four deques and an event) for what a single reader never uses."""

    __slots__ = ("_items", "_limit", "_reader")

    def __init__(self, limit: int) -> None:
        self._items: deque[link_pb2.CoordinatorMessage | None] = deque()
        self._limit = limit
        self._reader: asyncio.Future[None] | None = None

    def put(self, message: link_pb2.CoordinatorMessage | None) -> bool:
        """Queue `message`; False when the box is full."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(message)
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)
        return True

    def clear(self) -> None:
        self._items.clear()

    async def get(self) -> link_pb2.CoordinatorMessage | None:
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._items.popleft()


class LinkSession:
    def __init__(
        self,
        *,
        name: str,
        version: str,
        labels: tuple[tuple[str, str], ...],
        address: str,
        max_pending: int = MAX_PENDING_REQUESTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.version = version
        self.labels = labels
        self.address = address
        self._clock = clock
        self.connected_at = clock()
        self.last_seen = self.connected_at  # any message from the agent counts as a sign of life
        self._max_pending = max_pending
        self._pending: dict[str, asyncio.Future[link_pb2.AgentMessage]] = {}
        # Room for every pending request, the cancels of as many, and the end-of-stream marker.
        self._outbound = _Outbox(2 * max_pending + 1)
        self._ids = itertools.count(1)
        self.closed = False
        self.close_reason = ""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, message: link_pb2.CoordinatorMessage, timeout_s: float) -> link_pb2.AgentMessage:
        """Send `message` (a probe or describe) and wait at most `timeout_s` for its answer.

        Raises LinkClosed, LinkBusy or TimeoutError."""
        if self.closed:
            raise LinkClosed(self.close_reason)
        if len(self._pending) >= self._max_pending:
            raise LinkBusy(f"{len(self._pending)} requests already wait on agent {self.name}'s stream")
        request_id = f"{next(self._ids):x}"
        message.request_id = request_id
        message.timeout_s = timeout_s
        future: asyncio.Future[link_pb2.AgentMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._outbound.put(message)  # room for every pending request is kept
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            self._put(link_pb2.CoordinatorMessage(request_id=request_id, cancel=link_pb2.Cancel()))
            raise
        finally:
            self._pending.pop(request_id, None)

    def deliver(self, message: link_pb2.AgentMessage) -> None:
        """What the agent sent: a heartbeat, or the answer to a pending request."""
        self.last_seen = self._clock()
        future = self._pending.get(message.request_id) if message.request_id else None
        if future is not None and not future.done():
            future.set_result(message)

    async def next_outbound(self) -> link_pb2.CoordinatorMessage | None:
        """The next message to write, or None once the session is closed."""
        return await self._outbound.get()

    def close(self, reason: str, farewell: link_pb2.CoordinatorMessage | None = None) -> None:
        """End the session: every waiting request fails with `reason`; the writer sends `farewell` (a
        refusal saying why) if given, then stops."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkClosed(reason))
        self._outbound.clear()
        if farewell is not None:
            self._outbound.put(farewell)
        self._outbound.put(None)

    def _put(self, message: link_pb2.CoordinatorMessage) -> None:
        if self.closed:
            return
        # The box holds room for a cancel per pending request; beyond that the agent's own deadline speaks.
        self._outbound.put(message)
