"""One run of a report: describe the agents, probe every target, diagnose each. The same fan-out,
probing path and diagnosis engine as `tlsfleet probe`; what happens to the result is report_pipeline's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...agent.logs import get_logger
from ...agent.model import ProbeRequest
from ..diagnosis.engine import diagnose
from ..fleet.fanout import describe_all
from ..fleet.probe_slots import ProbeSlots
from ..fleet.vantage import Vantage
from ..observation import DiagnosisSettings
from ..outcomes import DescribeOutcome
from ..probing import build_request, observe
from .config import ReportConfig
from .report_model import AgentSnapshot, ReportRun, TargetRun

log = get_logger("tlsfleet.coordinator")
DESCRIBE_TIMEOUT_S = 5.0


async def run_report(
    report: ReportConfig,
    *,
    inventory: Path | None,
    slots: ProbeSlots,
    vantages: Sequence[Vantage] | None = None,
    abandon: asyncio.Event | None = None,
    linked: Sequence[tuple[Vantage, bool]] = (),
) -> ReportRun:
    """Probe every target of `report` from its agents, within its deadline. Targets not probed by the
    deadline, or when `abandon` is set (shutdown), are left out and the run is marked abandoned; what was
    probed is kept. `linked` are the agents that dial in (see `select_vantages`)."""
    from ..fleet.choose import select_vantages

    started_at = datetime.now(UTC)
    owned = vantages is None
    if vantages is None:
        vantages = select_vantages(
            inventory_path=inventory,
            selector_text=report.agents,
            include_local=report.include_local,
            linked=linked,
            without_local="the report leaves out this machine (include_local = true adds it)",
            streamed=True,
        ).vantages
    done: list[TargetRun] = []
    abandoned, note = False, ""
    try:
        agents = await _snapshots(vantages)

        # Targets start together; each fan-out waits for its slots in the bound every run shares.
        async def one(target: str) -> None:
            done.append(await _probe_target(report, target, vantages, slots))

        work = asyncio.ensure_future(asyncio.gather(*(one(t) for t in report.targets)))
        stopper = asyncio.ensure_future((abandon or asyncio.Event()).wait())
        try:
            pending: set[asyncio.Future[Any]] = {work, stopper}
            finished, _ = await asyncio.wait(pending, timeout=report.deadline_s, return_when="FIRST_COMPLETED")
        except BaseException:
            # Cancelled from outside (Ctrl-C): the targets' probes go too, and their end is read so that
            # asyncio has no unread exception to complain about as the process exits.
            work.cancel()
            work.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        finally:
            stopper.cancel()
        if work not in finished:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            abandoned = True
            why = "shutdown" if abandon is not None and abandon.is_set() else f"deadline of {report.deadline_s:g} s"
            note = f"{why}: {len(done)} of {len(report.targets)} targets probed"
            log.warning("report_run_abandoned", report=report.name, reason=why, probed=len(done))
        else:
            work.result()  # a bug in a target's probe must not pass silently
    finally:
        if owned:
            await asyncio.gather(*(v.close() for v in vantages), return_exceptions=True)
    order = {target: index for index, target in enumerate(report.targets)}
    return ReportRun(
        report=report.name,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        targets=tuple(sorted(done, key=lambda t: order[t.target])),
        agents=agents,
        abandoned=abandoned,
        note=note,
    )


async def _probe_target(report: ReportConfig, target: str, vantages: Sequence[Vantage], slots: ProbeSlots) -> TargetRun:
    started = time.perf_counter()
    request: ProbeRequest = build_request(
        target, timeout=report.probe_timeout_s, now_ns=time.time_ns(), starttls=report.starttls
    )
    observation = await observe(vantages, request, report.probe_timeout_s, slots=slots)
    settings = DiagnosisSettings.for_request(
        request,
        clock_tolerance_ms=report.clock_tolerance_s * 1000,
        expiry_warning_days=report.expiry_warning_days,
        expiry_critical_days=report.expiry_critical_days,
    )
    return TargetRun(
        target=target,
        observation=observation,
        findings=diagnose(observation, settings),
        duration_ms=(time.perf_counter() - started) * 1000,
    )


async def _snapshots(vantages: Sequence[Vantage]) -> tuple[AgentSnapshot, ...]:
    return tuple(_snapshot(o) for o in await describe_all(vantages, DESCRIBE_TIMEOUT_S, include_roots=True))


def _snapshot(outcome: DescribeOutcome) -> AgentSnapshot:
    d = outcome.description
    return AgentSnapshot(
        name=outcome.vantage.name,
        address=outcome.vantage.address,
        labels=outcome.vantage.labels,
        state=outcome.state,
        error=outcome.error,
        version=d.identity.version if d else "",
        clock_offset_ms=outcome.clock.offset_ms if outcome.clock else None,
        clock_error_ms=outcome.clock.error_ms if outcome.clock else None,
        stores=d.trust_stores if d else (),
    )
