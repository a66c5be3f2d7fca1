"""What a run of an unchanged fleet adds to the history, on real observations: 50 targets probed by 5
vantages (the probe engine in process, under five names) against a lab TLS server, three runs through the
report runner. Healthy targets, targets resolving to three addresses of which two refuse, and targets whose
name the certificate does not cover (the handshake fails verification). Every test runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.coordinator.service.history import old_layout
from tests.coordinator.service.history.backends import HistoryDatabase
from tlsfleet.agent.model import Failure, Verdict
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.hosts_override import with_overrides
from tlsfleet.agent.probe.resolve import resolve
from tlsfleet.coordinator.fleet.local_vantage import LocalVantage
from tlsfleet.coordinator.fleet.probe_slots import ProbeSlots
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.outcomes import VantageInfo, VantageKind, VantageState
from tlsfleet.coordinator.service.changes import changes_between
from tlsfleet.coordinator.service.config import ReportConfig
from tlsfleet.coordinator.service.history import first_seen_lookup, key_of
from tlsfleet.coordinator.service.report_model import ReportRun
from tlsfleet.coordinator.service.runner import run_report

# Real probes and three report runs per backend: seconds, so kept out of the unit subset.
pytestmark = pytest.mark.slow

AGENTS = 5
HEALTHY, SPREAD, MISMATCHED = 40, 5, 5  # targets of each shape: 50 in all
# Shared tables: an unchanged run adds no row to any of them.
SHARED = (
    "shared_parts",
    "part_findings",
    "target_sightings",
    "certificates",
    "root_sets",
    "leaf_sightings",
    "dictionaries",
)
# Timings are kept to the microsecond.
TIMING_TOLERANCE_MS = 0.0005


def _targets(port: int) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    names = [f"t{i}.growth.test" for i in range(HEALTHY + SPREAD)] + [f"m{i}.other.test" for i in range(MISMATCHED)]
    spread = {f"t{i}.growth.test" for i in range(HEALTHY, HEALTHY + SPREAD)}
    table = {n: ("127.0.0.1", "127.0.0.2", "127.0.0.3") if n in spread else ("127.0.0.1",) for n in names}
    return table, tuple(f"{n}:{port}" for n in names)


class _Named(LocalVantage):
    """The in-process probe engine under another name: one of several vantages of a fleet."""

    def __init__(self, engine: ProbeEngine, name: str) -> None:
        super().__init__(engine)
        self.info = VantageInfo(name=name, address=f"{name}.fleet.test:7443", kind=VantageKind.LOCAL)


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ReportRun]]:
    """Three runs of one report, probed for real, a minute apart as far as the history can tell."""
    pki = LabPKI("Growth")
    root = write_pem(tmp_path_factory.mktemp("growth") / "root.pem", pki.root_pem())
    server = TlsServer(ServedIdentity.of(pki.issue_leaf("*.growth.test"), pki.intermediate)).start()
    try:
        table, targets = _targets(server.port)
        engine = ProbeEngine(native_cafile=str(root), resolver=with_overrides(table, resolve))
        vantages = [_Named(engine, f"agent-{n}") for n in range(1, AGENTS + 1)]
        config = ReportConfig(name="growth", targets=targets, deadline_s=60.0, probe_timeout_s=5.0)
        runs = [
            asyncio.run(run_report(config, inventory=None, slots=ProbeSlots(64), vantages=vantages)) for _ in range(3)
        ]
    finally:
        server.stop()
    yield runs


@pytest.fixture
def store(history_db: HistoryDatabase):  # type: ignore[no-untyped-def]
    history = history_db.open()
    yield history
    history.close()


def assert_same_at_stored_precision(back: Any, run: Any, where: str = "run") -> None:
    """Equal, but for floats (timings), which may differ below the microsecond."""
    if dataclasses.is_dataclass(run) and not isinstance(run, type):
        assert type(back) is type(run), where
        for field in dataclasses.fields(run):
            assert_same_at_stored_precision(
                getattr(back, field.name), getattr(run, field.name), f"{where}.{field.name}"
            )
    elif isinstance(run, tuple | list):
        assert isinstance(back, tuple | list) and len(back) == len(run), where
        for i, (b, r) in enumerate(zip(back, run, strict=True)):
            assert_same_at_stored_precision(b, r, f"{where}[{i}]")
    elif isinstance(run, float) and not isinstance(back, bool):
        assert math.isclose(back, run, abs_tol=TIMING_TOLERANCE_MS), f"{where}: {back} != {run}"
    else:
        assert back == run, f"{where}: {back!r} != {run!r}"


def test_the_runs_have_the_shapes_the_growth_is_measured_on(probed: list[ReportRun]) -> None:
    run = probed[0]
    assert len(run.targets) == HEALTHY + SPREAD + MISMATCHED and len(run.agents) == AGENTS
    outcomes = [o for t in run.targets for o in t.observation.outcomes]
    assert all(o.state is VantageState.OK for o in outcomes)
    addresses = [a for o in outcomes for a in o.result.addresses]  # type: ignore[union-attr]
    assert any(a.connect_failure is not Failure.NONE for a in addresses), "two of a spread target's addresses refuse"
    assert any(a.native.verdict is not Verdict.OK for a in addresses if a.chain), "mismatched names fail verification"
    assert any(t.findings for t in run.targets)


def test_unchanged_runs_add_no_shared_rows_and_one_small_timings_blob(
    store: Any, history_db: HistoryDatabase, probed: list[ReportRun]
) -> None:
    ids = [store.save_run(probed[0])]
    shared = {table: history_db.count(table) for table in SHARED}
    assert shared["shared_parts"] == len(probed[0].targets) + 1  # each target's part, and the agents'
    seen = history_db.query("SELECT id, last_seen FROM shared_parts ORDER BY id")
    for run in probed[1:]:
        ids.append(store.save_run(run))
        # Nothing the earlier run stored is stored again, nor rewritten.
        assert {table: history_db.count(table) for table in SHARED} == shared
        assert history_db.query("SELECT id, last_seen FROM shared_parts ORDER BY id") == seen
    # Per run: its row, and one row of its targets' parts and timings.
    assert history_db.count("runs") == 3 and history_db.count("run_parts") == 3
    for table in ("target_runs", "findings", "agent_snapshots", "agent_stores"):
        assert history_db.count(table) == 0, f"{table}: the layout before the split"
    probes = len(probed[0].targets) * AGENTS
    for parts, timings in history_db.query("SELECT length(parts), length(timings) FROM run_parts"):
        assert parts < 4 * len(probed[0].targets) and timings < 32 * probes, f"{parts} + {timings} bytes"
    # The last run, whose parts were all stored before it, reads back whole.
    assert_same_at_stored_precision(store.get_run(ids[-1]), dataclasses.replace(probed[-1], run_id=ids[-1]))


def test_since_when_and_changes_stay_right(store: Any, probed: list[ReportRun]) -> None:
    first, second, third = probed
    store.save_run(first)
    second_id = store.save_run(second)
    finding = next(f for t in first.targets for f in t.findings)
    target = next(t for t in first.targets if finding in t.findings)
    assert store.first_seen_finding("growth", key_of("growth", target.target, finding)) == first.started_at
    row = target.observation.rows_with_chain[0]
    seen = store.first_seen_certificate("growth", target.target, row.agent, row.address.address, row.leaf_fingerprint)
    assert seen == first.started_at
    third_id = store.save_run(third)
    previous = store.get_run(second_id)
    assert previous is not None and store.latest_run("growth", before_id=third_id) == previous
    assert changes_between(previous, store.get_run(third_id), first_seen_lookup(store)) == ()


def test_a_history_written_before_the_split_reads_on(
    history_db: HistoryDatabase, probed: list[ReportRun], tmp_path: Path
) -> None:
    """Runs kept in the layout of the previous schema read back as they were saved, beside new ones."""
    first, second, third = probed
    if history_db.backend == "sqlite":
        old_ids = old_layout.write_sqlite(history_db.location, [first, second])
    else:
        old_ids = old_layout.write_postgres(history_db.location, [first, second])
    with history_db.open() as history:
        assert history.get_run(old_ids[0]) == old_layout.as_kept(first, old_ids[0])
        new_id = history.save_run(third)
        listed = {s.run_id: s for s in history.list_runs()}
        for run_id, run in zip((*old_ids, new_id), probed, strict=True):
            severities = [str(f.severity) for t in run.targets for f in t.findings]
            summary = listed[run_id]
            counted = (summary.targets, summary.critical, summary.warning, summary.info)
            assert counted == (len(run.targets), *(severities.count(s) for s in ("critical", "warning", "info")))
        assert_same_at_stored_precision(history.get_run(new_id), dataclasses.replace(third, run_id=new_id))
        finding = next(f for t in first.targets for f in t.findings)
        target = next(t for t in first.targets if finding in t.findings)
        # The finding's stretch began in the oldest run and runs on through the new one.
        assert history.first_seen_finding("growth", key_of("growth", target.target, finding)) == first.started_at
        assert history.prune(third.started_at) == 2
        assert history.get_run(old_ids[0]) is None and history.get_run(new_id) is not None
