"""What one run of a scheduled report holds, and what changed since the previous run.

Produced by the report runner, kept by the history store, rendered by the report writers, read by
alerts and metrics. Frozen dataclasses; times are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from ...agent.model import TrustStore
from ..diagnosis.model import Finding
from ..matrix import Matrix, build_matrix
from ..observation import Observation
from ..outcomes import VantageState


@dataclass(frozen=True)
class AgentSnapshot:
    """An agent as the run found it."""

    name: str
    address: str
    labels: tuple[tuple[str, str], ...]
    state: VantageState
    error: str = ""
    version: str = ""
    clock_offset_ms: float | None = None
    clock_error_ms: float | None = None
    stores: tuple[TrustStore, ...] = ()  # with their roots


@dataclass(frozen=True)
class TargetRun:
    """One target of the report: everything the vantages saw, and what the diagnosis concluded."""

    target: str  # as configured, e.g. "api.example.com:443"
    observation: Observation
    findings: tuple[Finding, ...]
    duration_ms: float

    @cached_property
    def matrix(self) -> Matrix:
        """The comparison matrix of what the vantages saw, built once for every format that shows it."""
        return build_matrix(self.observation.outcomes)


@dataclass(frozen=True)
class ReportRun:
    report: str  # the report's name
    started_at: datetime
    finished_at: datetime
    targets: tuple[TargetRun, ...]
    agents: tuple[AgentSnapshot, ...]
    run_id: int | None = None  # assigned by the history store
    abandoned: bool = False  # stopped before every target was probed (deadline or shutdown)
    note: str = ""

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class ChangeKind(StrEnum):
    FINDING_NEW = "finding_new"
    FINDING_RESOLVED = "finding_resolved"
    CERTIFICATE = "certificate"  # fingerprint, issuer, SANs, expiry or chain served changed
    TRUST_STORE = "trust_store"  # roots added or removed on an agent
    CLOCK_JUMP = "clock_jump"
    RESOLUTION = "resolution"  # the addresses a name resolves to changed


@dataclass(frozen=True)
class Change:
    """One difference between a run and the previous run of the same report."""

    kind: ChangeKind
    summary: str  # one plain sentence
    target: str = ""  # "" for agent-wide changes (trust stores, clocks)
    agent: str = ""  # "" for changes that concern the target as a whole
    before: str = ""
    after: str = ""
    since: datetime | None = None  # the first run that saw the new state
    severity: str = ""  # for finding changes: the finding's severity
    cause: str = ""  # for finding changes: the finding's cause
