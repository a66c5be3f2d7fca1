"""One bound on probes in flight, shared by every run: the slots themselves, and two report runs at once."""

from __future__ import annotations

import asyncio

import pytest

from tests.outcomes import outcome
from tlsfleet.agent.model import ProbeRequest
from tlsfleet.coordinator.fleet.probe_slots import ProbeSlots
from tlsfleet.coordinator.outcomes import DescribeOutcome, ProbeOutcome, VantageInfo, VantageState
from tlsfleet.coordinator.service.config import ReportConfig
from tlsfleet.coordinator.service.runner import run_report


def test_slots_are_granted_first_come_first_served_within_the_capacity() -> None:
    async def scenario() -> list[str]:
        slots = ProbeSlots(4)
        order: list[str] = []
        release = asyncio.Event()

        async def holder(name: str, n: int) -> None:
            async with slots.hold(n):
                order.append(name)
                assert slots.in_use <= slots.capacity
                await release.wait()

        first = asyncio.create_task(holder("wide", 3))
        await asyncio.sleep(0)
        second = asyncio.create_task(holder("blocked", 3))  # 3 + 3 > 4: waits
        third = asyncio.create_task(holder("narrow", 1))  # would fit, but is behind "blocked"
        await asyncio.sleep(0.01)
        assert order == ["wide"] and slots.in_use == 3
        release.set()
        await asyncio.gather(first, second, third)
        assert slots.in_use == 0 and slots.peak <= 4
        return order

    assert asyncio.run(scenario()) == ["wide", "blocked", "narrow"]


def test_a_waiter_cancelled_in_the_queue_gives_way_to_the_next() -> None:
    async def scenario() -> None:
        slots = ProbeSlots(2)
        gate = asyncio.Event()
        got: list[str] = []

        async def holder(name: str, n: int) -> None:
            async with slots.hold(n):
                got.append(name)
                await gate.wait()

        running = asyncio.create_task(holder("running", 2))
        await asyncio.sleep(0)
        doomed = asyncio.create_task(holder("doomed", 2))
        after = asyncio.create_task(holder("after", 1))
        await asyncio.sleep(0.01)
        doomed.cancel()
        gate.set()
        await asyncio.gather(running, after)
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert got == ["running", "after"] and slots.in_use == 0

    asyncio.run(scenario())


def test_a_fan_out_wider_than_the_bound_runs_alone() -> None:
    async def scenario() -> int:
        slots = ProbeSlots(2)
        async with slots.hold(50) as taken:
            return taken

    assert asyncio.run(scenario()) == 2


def test_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ProbeSlots(0)


class CountingVantage:
    """A vantage that answers after a short wait and counts the probes in flight across all vantages."""

    in_flight = 0
    peak = 0

    def __init__(self, name: str) -> None:
        self.info = VantageInfo(name=name, address=f"{name}:7443")

    async def probe(self, request: ProbeRequest, timeout_s: float) -> ProbeOutcome:
        cls = type(self)
        cls.in_flight += 1
        cls.peak = max(cls.peak, cls.in_flight)
        try:
            await asyncio.sleep(0.02)
        finally:
            cls.in_flight -= 1
        return outcome(self.info.name, [], req=request)

    async def describe(
        self, timeout_s: float, target_host: str | None = None, *, include_roots: bool = False
    ) -> DescribeOutcome:
        return DescribeOutcome(self.info, VantageState.OFFLINE, error="a test vantage describes nothing")

    async def close(self) -> None:
        return None


def test_two_report_runs_at_once_stay_within_one_shared_bound() -> None:
    """Each run alone would keep 7 // 3 = 2 fan-outs (6 probes) in flight; two runs with per-run bounds would
    reach 12. One shared bound of 7 slots admits two fan-outs of 3 at a time, whichever run they belong to."""
    CountingVantage.in_flight = CountingVantage.peak = 0
    targets = tuple(f"t{i}.example.test:443" for i in range(8))

    async def scenario() -> ProbeSlots:
        slots = ProbeSlots(7)
        runs = []
        for name in ("first", "second"):
            vantages = [CountingVantage(f"{name}-{i}") for i in range(3)]
            report = ReportConfig(name=name, targets=targets, probe_timeout_s=5.0)
            runs.append(run_report(report, inventory=None, slots=slots, vantages=vantages))
        done = await asyncio.gather(*runs)
        assert all(len(run.targets) == len(targets) and not run.abandoned for run in done)
        return slots

    slots = asyncio.run(scenario())
    assert CountingVantage.peak == 6, CountingVantage.peak
    assert slots.peak == 6 and slots.in_use == 0
