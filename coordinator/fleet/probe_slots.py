"""One bound on probes in flight, shared by every caller that holds it: each fan-out takes one slot per
vantage it asks, before its deadline starts, and gives them back when it ends. First come, first served,
so a wide fan-out is not starved by narrow ones."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ProbeSlots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"probe slots: capacity {capacity} is not accepted; at least 1")
        self.capacity = capacity
        self._free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.peak = 0  # the most slots ever held at once: what tests and metrics read

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    @asynccontextmanager
    async def hold(self, wanted: int) -> AsyncIterator[int]:
        """Hold `wanted` slots (at most the capacity: a fan-out wider than the bound runs alone)."""
        taken = await self._acquire(max(1, min(wanted, self.capacity)))
        try:
            yield taken
        finally:
            self._release(taken)

    async def _acquire(self, n: int) -> int:
        if not self._waiters and self._free >= n:
            self._take(n)
            return n
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self._release(n)  # granted just as we were cancelled
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()
            raise
        return n

    def _take(self, n: int) -> None:
        self._free -= n
        self.peak = max(self.peak, self.in_use)

    def _release(self, n: int) -> None:
        self._free += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._free >= self._waiters[0][0]:
            n, future = self._waiters.popleft()
            if future.done():
                continue
            self._take(n)
            future.set_result(None)
