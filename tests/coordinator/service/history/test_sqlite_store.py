"""The SQLite history on real files: round trips, migrations, damage, locks, retention, dedup, "since when".
Tests that take `store` or `history_db` run on PostgreSQL too."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.coordinator.service.history import old_layout
from tests.coordinator.service.history.backends import HistoryDatabase
from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import AiaFetch, RootCertificate, TrustStore, Verdict
from tlsfleet.agent.trust.certinfo import fingerprint, summarize
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Evidence, Finding, Severity
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.observation import Variant
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.service.changes import changes_between
from tlsfleet.coordinator.service.history import HistoryError, first_seen_lookup, key_of
from tlsfleet.coordinator.service.history.migrations import LATEST_VERSION, MIGRATIONS, statements
from tlsfleet.coordinator.service.history.sqlite_store import SqliteHistory
from tlsfleet.coordinator.service.history.store import finding_key
from tlsfleet.coordinator.service.report_model import AgentSnapshot, ChangeKind, ReportRun, TargetRun

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(history_db: HistoryDatabase):  # type: ignore[no-untyped-def]
    """The store on an empty database, SQLite and PostgreSQL in turn (tests/conftest.py)."""
    history = history_db.open()
    yield history
    history.close()


def root_of(issued: Issued) -> RootCertificate:
    return RootCertificate(fingerprint(issued.der), summarize(issued.der).subject)


def snapshot(name: str, roots: tuple[RootCertificate, ...], **kwargs: object) -> AgentSnapshot:
    stores = (
        TrustStore("system", "file", "/etc/ssl/certs/ca-certificates.crt", len(roots), "ab" * 32, roots=roots),
        TrustStore("certifi", "file", "/venv/certifi/cacert.pem", 140, "cd" * 32),  # roots not listed
    )
    defaults: dict[str, object] = {
        "address": f"{name}.test:7443",
        "labels": (("env", "prod"), ("region", "eu")),
        "state": VantageState.OK,
        "version": "0.1.0",
        "clock_offset_ms": 1.5,
        "clock_error_ms": 0.5,
        "stores": stores,
    }
    defaults.update(kwargs)
    return AgentSnapshot(name=name, **defaults)  # type: ignore[arg-type]


def target_run(host: str, chain: tuple[bytes, ...], *, agents: int = 2, ip: str = "127.0.0.2") -> TargetRun:
    req = request(host)
    observation = observe(*(outcome(f"web-{i}", [address(ip, chain)], req=req) for i in range(1, agents + 1)), req=req)
    return TargetRun(target=f"{host}:443", observation=observation, findings=diagnose(observation), duration_ms=12.5)


def make_run(
    pki: LabPKI, started: datetime, *, report: str = "prod-edge", leaf: Issued | None = None, hosts: int = 2
) -> ReportRun:
    leaf = leaf or pki.issue_leaf(*(f"svc{i}.example.test" for i in range(hosts)))
    chain = (leaf.der, pki.intermediate.der)
    roots = (root_of(pki.root),)
    return ReportRun(
        report=report,
        started_at=started,
        finished_at=started + timedelta(seconds=20),
        targets=tuple(target_run(f"svc{i}.example.test", chain) for i in range(hosts)),
        agents=(snapshot("web-1", roots), snapshot("web-2", roots)),
    )


def rich_run(pki: LabPKI) -> ReportRun:
    """Every field the store keeps, at least once."""
    leaf = pki.issue_leaf("api.example.test")
    chain = (leaf.der, pki.intermediate.der)
    aia = AiaFetch(url="http://ca.test/i.der", fetched=True, certificate=pki.intermediate.der, completes_chain=True)
    observation = observe(
        outcome(
            "web-1", [address("127.0.0.2", chain, stores={"system": Verdict.OK, "certifi": Verdict.UNKNOWN_ISSUER})]
        ),
        outcome(
            "web-2",
            [replace(address("127.0.0.3", (leaf.der,), native=Verdict.UNKNOWN_ISSUER), aia=aia)],
            offset_ms=-250.0,
            labels=[("env", "prod")],
        ),
        silent("web-3", VantageState.OFFLINE),
        variants=[
            Variant(
                "no SNI",
                request(send_sni=False),
                (outcome("web-1", [address("127.0.0.2", chain)], req=request(send_sni=False)),),
            )
        ],
    )
    handmade = Finding(
        cause=Cause.INCOMPLETE_CHAIN,
        severity=Severity.CRITICAL,
        summary="web-2 is served the leaf alone; the intermediate 'History Intermediate CA' is missing.",
        agents=("web-2",),
        addresses=("127.0.0.3",),
        evidence=(Evidence("chain length", (("web-1@127.0.0.2", "2"), ("web-2@127.0.0.3", "1"))),),
        fix="Configure the server to send the intermediate.",
        reproduce=("openssl s_client -connect 127.0.0.3:443 -servername api.example.test",),
    )
    predicted = Finding(
        cause=Cause.CLOCK_SKEW,
        severity=Severity.WARNING,
        summary="web-2's clock is 250 ms behind; no verdict has flipped on it yet.",
        agents=("web-2",),
        prediction=True,
    )
    roots = (root_of(pki.root), root_of(LabPKI("Other").root))
    return ReportRun(
        report="prod-edge",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=42),
        targets=(
            TargetRun("api.example.test:443", observation, (handmade, predicted, *diagnose(observation)), 812.25),
            target_run("svc0.example.test", chain),
        ),
        agents=(
            snapshot("web-1", roots),
            snapshot("web-2", roots[:1], clock_offset_ms=-250.0, labels=()),
            snapshot(
                "web-3", (), state=VantageState.OFFLINE, error="connection refused", stores=(), clock_offset_ms=None
            ),
        ),
        abandoned=True,
        note="deadline of 60 s: 2 of 3 targets probed",
    )


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*"))


# --- round trips, restart ---------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(store: SqliteHistory, pki: LabPKI) -> None:
    run = rich_run(pki)
    assert any(t.findings for t in run.targets)
    run_id = store.save_run(run)
    assert store.get_run(run_id) == replace(run, run_id=run_id)
    assert store.latest_run("prod-edge") == replace(run, run_id=run_id)
    assert store.get_run(run_id + 1) is None
    assert store.latest_run("another-report") is None


def test_close_and_reopen_loses_nothing(history_db: HistoryDatabase, pki: LabPKI) -> None:
    runs = [make_run(pki, T0), rich_run(pki), make_run(pki, T0 + timedelta(minutes=15), report="internal")]
    with history_db.open() as first:
        ids = [first.save_run(r) for r in runs]
        first.mark_announced("k1", T0)
        listed = first.list_runs()
    with history_db.open() as second:
        assert [second.get_run(i) for i in ids] == [replace(r, run_id=i) for r, i in zip(runs, ids, strict=True)]
        assert second.list_runs() == listed
        assert second.announced("k1")


def test_a_run_is_saved_once_and_times_must_be_aware(store: SqliteHistory, pki: LabPKI) -> None:
    run = make_run(pki, T0)
    run_id = store.save_run(run)
    with pytest.raises(HistoryError, match=f"run {run_id} of report 'prod-edge' is already saved"):
        store.save_run(replace(run, run_id=run_id))
    with pytest.raises(HistoryError, match="has no time zone"):
        store.save_run(replace(run, started_at=datetime(2026, 3, 1, 12, 0)))
    with pytest.raises(HistoryError, match="has no time zone"):
        store.prune(datetime(2026, 3, 1))
    assert len(store.list_runs()) == 1


def test_threads_share_the_store_through_asyncio(store: SqliteHistory, pki: LabPKI) -> None:
    runs = [make_run(pki, T0 + timedelta(minutes=i), report=f"r{i % 3}") for i in range(12)]

    async def main() -> tuple[list[int], list[object]]:
        saved = await asyncio.gather(*(asyncio.to_thread(store.save_run, r) for r in runs))
        read = await asyncio.gather(
            *(asyncio.to_thread(store.get_run, i) for i in saved),
            *(asyncio.to_thread(store.list_runs, f"r{i}") for i in range(3)),
        )
        return list(saved), list(read)

    saved, read = asyncio.run(main())
    assert len(set(saved)) == len(runs)
    assert read[: len(runs)] == [replace(r, run_id=i) for r, i in zip(runs, saved, strict=True)]
    assert sorted(len(listing) for listing in read[len(runs) :]) == [4, 4, 4]  # type: ignore[arg-type]


def test_closed_store_says_so(history_db: HistoryDatabase) -> None:
    history = history_db.open()
    history.close()
    history.close()  # twice is harmless
    with pytest.raises(HistoryError, match="is closed"):
        history.list_runs()


# --- listing, latest, first seen ------------------------------------------------------------------------


def test_list_runs_counts_findings_by_severity_newest_first(store: SqliteHistory, pki: LabPKI) -> None:
    rich = rich_run(pki)
    first = store.save_run(make_run(pki, T0 - timedelta(hours=1)))
    second = store.save_run(rich)
    store.save_run(make_run(pki, T0 + timedelta(hours=1), report="internal"))
    runs = store.list_runs("prod-edge")
    assert [r.run_id for r in runs] == [second, first]
    top = runs[0]
    findings = [f for t in rich.targets for f in t.findings]
    for severity in Severity:
        assert top.count(severity) == sum(1 for f in findings if f.severity is severity)
    assert top.critical >= 1
    assert (top.targets, top.abandoned, top.note) == (2, True, rich.note)
    assert top.started_at == rich.started_at and top.finished_at == rich.finished_at
    assert len(store.list_runs()) == 3
    assert len(store.list_runs(limit=1)) == 1
    with pytest.raises(HistoryError, match="limit 0 is out of range"):
        store.list_runs(limit=0)


def test_latest_run_before_a_run_and_without_abandoned_ones(store: SqliteHistory, pki: LabPKI) -> None:
    one = store.save_run(make_run(pki, T0))
    two = store.save_run(replace(make_run(pki, T0 + timedelta(minutes=15)), abandoned=True))
    three = store.save_run(make_run(pki, T0 + timedelta(minutes=30)))
    assert store.latest_run("prod-edge").run_id == three  # type: ignore[union-attr]
    assert store.latest_run("prod-edge", before_id=three).run_id == two  # type: ignore[union-attr]
    assert store.latest_run("prod-edge", before_id=three, include_abandoned=False).run_id == one  # type: ignore[union-attr]
    assert store.latest_run("prod-edge", before_id=one) is None


def test_the_run_to_compare_leaves_out_the_targets_that_came_out_the_same(store: SqliteHistory, pki: LabPKI) -> None:
    base = make_run(pki, T0, hosts=3)
    timed = tuple(replace(t, duration_ms=100.0 * (i + 1)) for i, t in enumerate(base.targets))
    first = store.save_run(replace(base, targets=timed))
    store.save_run(replace(base, started_at=T0 + timedelta(minutes=15), targets=(), abandoned=True))
    store.save_run(replace(make_run(pki, T0, report="other-report", hosts=3), started_at=T0 + timedelta(minutes=20)))
    skew = Finding(Cause.CLOCK_SKEW, Severity.CRITICAL, "web-2's clock is 2 days ahead.", ("web-2",))
    rotated = make_run(pki, T0, leaf=pki.issue_leaf("svc0.example.test", "svc1.example.test"), hosts=2).targets[1]
    current = replace(
        base,
        started_at=T0 + timedelta(minutes=30),
        # svc0 the same but for its timing, svc1 served another leaf, svc2 with a finding more
        targets=(
            replace(base.targets[0], duration_ms=7.0),
            rotated,
            replace(base.targets[2], findings=(*base.targets[2].findings, skew)),
        ),
    )
    current_id = store.save_run(current)
    whole = store.get_run(first)
    assert whole is not None
    compared = store.run_to_compare("prod-edge", current_id)
    assert compared is not None and compared.run_id == first  # past the run that probed nothing, and the other report's
    assert compared.targets == whole.targets[1:]  # each with its own timings: svc0's were read past, not lost
    assert [t.duration_ms for t in compared.targets] == [200.0, 300.0]
    assert compared.agents == whole.agents
    changes = changes_between(compared, current)
    assert changes == changes_between(whole, current)
    assert {c.kind for c in changes} == {ChangeKind.CERTIFICATE, ChangeKind.FINDING_NEW}
    assert store.run_to_compare("prod-edge", first) is None


def test_the_run_to_compare_steps_over_the_same_targets_unparsed_where_it_saved_them(
    store: SqliteHistory, history_db: HistoryDatabase, pki: LabPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlsfleet.coordinator.service.history import rows

    parsed: list[str] = []
    parse = rows._parse
    monkeypatch.setattr(
        rows, "_parse", lambda data, where, run_id, what: parsed.append(what) or parse(data, where, run_id, what)
    )
    base = make_run(pki, T0, hosts=3)
    first = store.save_run(
        replace(base, targets=tuple(replace(t, duration_ms=100.0 * (i + 1)) for i, t in enumerate(base.targets)))
    )
    skew = Finding(Cause.CLOCK_SKEW, Severity.CRITICAL, "web-2's clock is 2 days ahead.", ("web-2",))
    later = tuple(replace(t, duration_ms=7.0) for t in base.targets[:2])  # the same but for their timings
    current = replace(
        base, started_at=T0 + timedelta(minutes=30), targets=(*later, replace(base.targets[2], findings=(skew,)))
    )
    current_id = store.save_run(current)
    whole = store.get_run(first)
    assert whole is not None
    parsed.clear()
    compared = store.run_to_compare("prod-edge", current_id)
    assert compared is not None and compared.targets == whole.targets[2:]
    assert compared.targets[0].duration_ms == 300.0  # two targets' timings stepped over, none lost
    assert parsed == ["the agents' part", "target 3"]
    # Another store on the same database has not seen these parts: it parses them, to the same result.
    other = history_db.open()
    try:
        parsed.clear()
        assert other.run_to_compare("prod-edge", current_id) == compared
        assert parsed == ["the agents' part", "target 1", "target 2", "target 3"]
    finally:
        other.close()


def _with_findings(run: ReportRun, *findings: Finding) -> ReportRun:
    first = replace(run.targets[0], findings=findings)
    return replace(run, targets=(first, *run.targets[1:]))


def test_first_seen_finding_is_the_start_of_its_latest_stretch(store: SqliteHistory, pki: LabPKI) -> None:
    skew = Finding(Cause.CLOCK_SKEW, Severity.CRITICAL, "web-2's clock is 2 days ahead.", ("web-2",))
    base = make_run(pki, T0)
    target = base.targets[0].target
    key = key_of("prod-edge", target, skew)
    assert store.first_seen_finding("prod-edge", key) is None
    starts = [T0 + timedelta(minutes=15 * i) for i in range(6)]
    store.save_run(_with_findings(replace(base, started_at=starts[0]), skew))
    store.save_run(_with_findings(replace(base, started_at=starts[1]), skew))
    assert store.first_seen_finding("prod-edge", key) == starts[0]
    store.save_run(_with_findings(replace(base, started_at=starts[2])))  # probed, not seen: the stretch ends
    store.save_run(_with_findings(replace(base, started_at=starts[3]), skew))
    assert store.first_seen_finding("prod-edge", key) == starts[3]
    # A run that did not probe the target (abandoned early) does not interrupt the stretch.
    store.save_run(replace(base, started_at=starts[4], targets=base.targets[1:], abandoned=True))
    store.save_run(_with_findings(replace(base, started_at=starts[5]), skew))
    assert store.first_seen_finding("prod-edge", key) == starts[3]
    assert store.first_seen_finding("other-report", key) is None


def test_first_seen_certificate_follows_rotations(store: SqliteHistory, pki: LabPKI) -> None:
    a, b = pki.issue_leaf("svc0.example.test", "svc1.example.test"), pki.issue_leaf("svc0.example.test")
    starts = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    for start, leaf in zip(starts, (a, a, b, a), strict=True):
        store.save_run(make_run(pki, start, leaf=leaf))
    where = ("prod-edge", "svc0.example.test:443", "web-1", "127.0.0.2")
    assert store.first_seen_certificate(*where, fingerprint(a.der)) == starts[3]
    assert store.first_seen_certificate(*where, fingerprint(b.der)) == starts[2]
    assert store.first_seen_certificate(*where, fingerprint(pki.intermediate.der)) is None
    assert store.first_seen_certificate("prod-edge", "svc0.example.test:443", "web-9", "127.0.0.2", "00" * 32) is None


def test_since_comes_from_the_store_when_a_run_between_saw_it_first(store: SqliteHistory, pki: LabPKI) -> None:
    old, new = pki.issue_leaf("svc0.example.test"), pki.issue_leaf("svc0.example.test")
    previous = make_run(pki, T0, leaf=old, hosts=1)
    between = replace(make_run(pki, T0 + timedelta(minutes=15), leaf=new, hosts=1), abandoned=True)
    current = make_run(pki, T0 + timedelta(minutes=30), leaf=new, hosts=1)
    for run in (previous, between, current):
        store.save_run(run)
    current_id = store.list_runs(limit=1)[0].run_id
    baseline = store.latest_run("prod-edge", before_id=current_id, include_abandoned=False)
    changes = changes_between(baseline, current, first_seen_lookup(store))
    certificate = [c for c in changes if c.kind is ChangeKind.CERTIFICATE]
    assert len(certificate) == 1
    assert certificate[0].since == between.started_at
    assert changes_between(baseline, current)[0].since == current.started_at  # without the store: this run


# --- alerts bookkeeping -----------------------------------------------------------------------------------


def test_each_finding_is_announced_once_and_again_when_resolved(history_db: HistoryDatabase) -> None:
    key = finding_key("prod-edge", "api:443", "expired", ["web-2", "web-1"], ["127.0.0.2"])
    assert key == finding_key("prod-edge", "api:443", "expired", ["web-1", "web-2"], ["127.0.0.2"])
    assert key != finding_key("prod-edge", "api:443", "expired", ["web-1"], ["127.0.0.2"])
    with history_db.open() as history:
        assert not history.announced(key)
        history.mark_announced(key, T0)
        assert history.announced(key)
    with history_db.open() as history:
        assert history.announced(key)  # survives a restart
        history.mark_announced(key, T0 + timedelta(hours=1), resolved=True)
        assert not history.announced(key)
        history.mark_announced(key, T0 + timedelta(hours=2))  # it came back: announce it again
        assert history.announced(key)
        history.mark_announced("never-announced", T0, resolved=True)
        assert not history.announced("never-announced")


# --- retention and growth -------------------------------------------------------------------------------


def _count(path: Path, table: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        connection.close()


def test_prune_forgets_old_runs_and_what_only_they_referenced(history_db: HistoryDatabase, pki: LabPKI) -> None:
    now = datetime.now(UTC)
    other = LabPKI("Retired")
    old_run = replace(
        make_run(pki, now - timedelta(days=40), hosts=200), agents=(snapshot("web-1", (root_of(other.root),)),)
    )
    with history_db.open() as history:
        old = history.save_run(old_run)
        middle = history.save_run(make_run(pki, now - timedelta(days=20)))
        recent = history.save_run(make_run(pki, now - timedelta(hours=1)))
        history.mark_announced("resolved-long-ago", now - timedelta(days=35))
        history.mark_announced("resolved-long-ago", now - timedelta(days=34), resolved=True)
        history.mark_announced("still-open", now - timedelta(days=1))
        certificates_before = history_db.count("certificates")
        # 200 targets and the agents of the old run; 2 targets each and the agents they share of the others.
        assert history_db.count("shared_parts") == 200 + 1 + 2 * 2 + 1
        assert history.prune(now - timedelta(days=30)) == 1
        assert history.get_run(old) is None
        assert [r.run_id for r in history.list_runs()] == [recent, middle]
        assert history.get_run(middle) is not None and history.get_run(recent) is not None
        assert history.announced("still-open")
        assert history.prune(now - timedelta(days=30)) == 0
    # The old run's own leaf went; the intermediate every run served stayed.
    assert history_db.count("certificates") == certificates_before - 1
    assert history_db.count("root_sets") == 1
    assert history_db.count("announcements") == 1
    assert history_db.count("run_parts") == 2 and history_db.count("target_sightings") == 4
    assert history_db.count("shared_parts") == 2 * 2 + 1
    unreferenced = (
        "SELECT COUNT(*) FROM shared_parts WHERE id NOT IN (SELECT part FROM target_sightings) "
        "AND id NOT IN (SELECT agents_part FROM runs)"
    )
    assert history_db.query(unreferenced)[0][0] == 0
    orphans = "SELECT COUNT(*) FROM part_findings WHERE part NOT IN (SELECT id FROM shared_parts)"
    assert history_db.query(orphans)[0][0] == 0
    if history_db.backend == "sqlite":
        assert history_db.query("PRAGMA freelist_count")[0][0] == 0  # freed pages went back


def test_an_unchanged_fleet_adds_little_per_run(tmp_path: Path, pki: LabPKI) -> None:
    path = tmp_path / "h.sqlite"
    SqliteHistory(path).close()
    empty = file_bytes(path)
    leaves = [pki.issue_leaf(f"svc{i}.example.test") for i in range(60)]
    roots = tuple(root_of(LabPKI(f"Vendor {i}").root) for i in range(20))

    def run(started: datetime) -> ReportRun:
        targets = tuple(
            target_run(f"svc{i}.example.test", (leaf.der, pki.intermediate.der), agents=6)
            for i, leaf in enumerate(leaves)
        )
        agents = tuple(snapshot(f"web-{i}", roots) for i in range(1, 7))
        return ReportRun("prod-edge", started, started + timedelta(seconds=30), targets, agents)

    sizes = [empty]
    for n in range(2):
        with SqliteHistory(path) as history:
            history.save_run(run(T0 + timedelta(minutes=15 * n)))
        sizes.append(file_bytes(path))
    first, second = sizes[1] - sizes[0], sizes[2] - sizes[1]
    assert second * 3 < first, f"first run added {first} bytes, the second {second}"
    assert _count(path, "certificates") == len(leaves) + 1


# --- schema, damage, locks ------------------------------------------------------------------------------


def test_migrations_apply_to_an_empty_file_once(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    path.touch()  # an empty file is an empty database
    SqliteHistory(path).close()
    SqliteHistory(path).close()
    connection = sqlite3.connect(path)
    try:
        versions = [v for (v,) in connection.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [v for v, _sql in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        connection.close()


def test_a_version_1_database_migrates_and_keeps_its_findings(tmp_path: Path, pki: LabPKI) -> None:
    """A history written before findings kept `prediction`: its findings read back as failures now, but
    expiring_soon, which predicts by its nature."""
    path = tmp_path / "h.sqlite"
    soon = pki.issue_leaf("svc0.example.test", not_after=datetime.now(UTC) + timedelta(days=10))
    run = make_run(pki, T0, leaf=soon, hosts=1)
    assert [f.cause for t in run.targets for f in t.findings] == [Cause.EXPIRING_SOON]
    clock = Finding(Cause.CLOCK_SKEW, Severity.WARNING, "web-1's clock is off.", ("web-1",), prediction=True)
    run = replace(run, targets=(replace(run.targets[0], findings=(*run.targets[0].findings, clock)),))
    (run_id,) = old_layout.write_sqlite(str(path), [run], version=1)  # the findings table as it was then
    with SqliteHistory(path) as history:
        back = history.get_run(run_id)
        assert back is not None
        read = [(f.cause, f.prediction) for t in back.targets for f in t.findings]
        assert read == [(Cause.EXPIRING_SOON, True), (Cause.CLOCK_SKEW, False)], "an old row cannot say it predicted"
        again = history.save_run(replace(run, started_at=T0 + timedelta(hours=1)))
        assert history.get_run(again) == replace(run, run_id=again, started_at=T0 + timedelta(hours=1))
    connection = sqlite3.connect(path)
    try:
        versions = [v for (v,) in connection.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, LATEST_VERSION + 1))
    finally:
        connection.close()


def test_migration_scripts_split_at_statement_ends_only() -> None:
    script = "CREATE TABLE a (x TEXT DEFAULT ';'); -- a comment; with a semicolon\nCREATE TABLE b (y);\n"
    assert list(statements(script)) == [
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "-- a comment; with a semicolon\nCREATE TABLE b (y);",
    ]
    with pytest.raises(ValueError, match="incomplete SQL statement"):
        list(statements("CREATE TABLE c (z"))


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    SqliteHistory(path).close()
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "INSERT INTO schema_version VALUES (?, '2030-01-01T00:00:00.000000Z')", (LATEST_VERSION + 1,)
        )
    connection.close()
    with pytest.raises(HistoryError, match=f"schema version {LATEST_VERSION + 1}, newer than this tlsfleet knows"):
        SqliteHistory(path)


def test_a_corrupt_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"this is not a database, only some text that happens to be here\n" * 100)
    with pytest.raises(HistoryError, match=r"h\.sqlite is damaged or not an SQLite database .*move it aside"):
        SqliteHistory(path)


def test_another_applications_database_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    connection.close()
    with pytest.raises(HistoryError, match=r"not a tlsfleet history .*customers"):
        SqliteHistory(path)
    assert _count(path, "customers") == 0


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="does not exist; create it first"):
        SqliteHistory(tmp_path / "absent" / "h.sqlite")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "UPDATE shared_parts SET data = x'00ff00' "
            "WHERE id = (SELECT part FROM target_sightings WHERE target LIKE 'svc1.%')",
            "run {id}, target 2 is damaged",
        ),
        (
            "UPDATE shared_parts SET data = x'00ff00' WHERE id = (SELECT agents_part FROM runs)",
            "run {id}, the agents' part is damaged",
        ),
        ("UPDATE run_parts SET timings = x'78da030000000001'", "run {id} cannot be read back: .*timings end early"),
        ("DELETE FROM run_parts", "run {id} has lost its targets and timings"),
        ("DELETE FROM certificates WHERE sha256 = '{leaf}'", "run {id}, target svc0.*certificate {leaf} is missing"),
    ],
)
def test_a_damaged_row_names_the_run_and_what_is_wrong(tmp_path: Path, pki: LabPKI, damage: str, message: str) -> None:
    path = tmp_path / "h.sqlite"
    leaf = pki.issue_leaf("svc0.example.test", "svc1.example.test")
    with SqliteHistory(path) as history:
        run_id = history.save_run(make_run(pki, T0, leaf=leaf))
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(damage.format(leaf=fingerprint(leaf.der)))
    connection.close()
    with (
        SqliteHistory(path) as history,
        pytest.raises(HistoryError, match=message.format(id=run_id, leaf=fingerprint(leaf.der))),
    ):
        history.get_run(run_id)


_HOLD_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


@pytest.fixture
def lock_holder(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Another process that holds the history's write lock until told to let go."""
    path = tmp_path / "h.sqlite"
    SqliteHistory(path).close()
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        yield path, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_a_locked_database_fails_within_the_busy_timeout(lock_holder) -> None:  # type: ignore[no-untyped-def]
    path, _process = lock_holder
    started = time.monotonic()
    with pytest.raises(HistoryError, match=r"is locked by another process \(waited 0.3 s to open it\)"):
        SqliteHistory(path, busy_timeout_s=0.3)
    assert 0.25 <= time.monotonic() - started < 3


def test_a_write_while_locked_fails_clearly_and_loses_nothing_after(lock_holder, pki: LabPKI) -> None:  # type: ignore[no-untyped-def]
    path, process = lock_holder
    process.stdin.close()  # let go, then take the lock again once the store is open
    process.wait(timeout=10)
    history = SqliteHistory(path, busy_timeout_s=0.3)
    try:
        again = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert again.stdout is not None and again.stdout.readline().strip() == "locked"
            started = time.monotonic()
            with pytest.raises(HistoryError, match=r"locked by another process .* to save a run"):
                history.save_run(make_run(pki, T0))
            assert time.monotonic() - started < 3
            assert history.list_runs() == []  # readers are not blocked by a writer in WAL mode
        finally:
            again.kill()
            again.wait(timeout=10)
        run_id = history.save_run(make_run(pki, T0))
        assert [r.run_id for r in history.list_runs()] == [run_id]
    finally:
        history.close()
