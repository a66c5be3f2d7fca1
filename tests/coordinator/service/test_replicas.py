"""Coordinator replicas on one PostgreSQL history, as real processes: three `tlsfleet coordinator serve`
share one interval report, two dial-out agents hold a stream to each; every slot is run once, by one of
them, with both agents answering; a replica killed (SIGKILL) mid-run loses that run, which is recorded
as interrupted, and another replica runs the next slot; each alert reaches the webhook once. And a bad
lease expiry is refused in one line."""

from __future__ import annotations

import asyncio
import html
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing

from tests.coordinator.service.dialout_fleet import LoggedProcess, cli, make_pki, start_logged
from tests.coordinator.service.history.backends import HistoryDatabase
from tests.coordinator.service.history.test_sqlite_store import make_run
from tests.coordinator.service.webhook_receiver import JsonReceiver
from tests.postgres import PostgresServer
from tlsfleet.coordinator.lab.agent_process import agent_command, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.service.config import ConfigError, ReportConfig, ServiceConfig, load_config, parse_config
from tlsfleet.coordinator.service.history import HistoryError
from tlsfleet.coordinator.service.history.sqlite_store import SqliteHistory
from tlsfleet.coordinator.service.http_routes import FleetPages
from tlsfleet.coordinator.service.pipeline import CompletedRun, Pipeline
from tlsfleet.coordinator.service.report_model import ChangeKind
from tlsfleet.coordinator.service.scheduler import CoordinatorService

INTERVAL_S = 5
# Each run waits this long on a target that never answers: long enough to kill its holder mid-run.
PROBE_TIMEOUT_S = 4
LEASE_EXPIRY_S = 2
REPLICAS = 3
AGENTS = ("edge-1", "edge-2")
WAIT_S = 40


@dataclass
class Replicas:
    workdir: Path
    history: HistoryDatabase
    configs: list[Path]
    coordinators: list[LoggedProcess]
    agents: list[LoggedProcess]
    hook_bodies: list[dict]
    ready_at: datetime  # every agent holds a stream to every replica


def write_config(path: Path, index: int, history: HistoryDatabase, targets: list[str], hook_port: int) -> None:
    path.write_text(
        f"""
[coordinator]
inventory = "inventory.toml"
reports_dir = "reports-{index}"

[storage]
url = "{history.location}"
lease_expiry = "{LEASE_EXPIRY_S}s"

[agent_link]
listen = "127.0.0.1:0"
allow = ["edge-*"]
heartbeat_interval = "0.5s"

[[report]]
name = "edge"
targets = {json.dumps(targets)}
interval = "{INTERVAL_S}s"
jitter = "0s"
probe_timeout = "{PROBE_TIMEOUT_S}s"
notify_min_severity = "warning"
webhooks = ["oncall"]

[[webhook]]
name = "oncall"
url = "http://127.0.0.1:{hook_port}/hook"
"""
    )


@pytest.fixture
def replicas(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Replicas]:
    lab = LabPKI("Replica")
    bundle = write_pem(tmp_path / "lab-root.pem", lab.root_pem())
    make_pki(tmp_path / "pki", *AGENTS)
    (tmp_path / "inventory.toml").write_text('[coordinator]\npki_dir = "pki"\n')
    url = postgres_server.create_database()
    history = HistoryDatabase("postgresql", url)
    receiver_handler = type("Receiver", (JsonReceiver,), {"bodies": []})
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), receiver_handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    server = TlsServer(ServedIdentity.of(lab.issue_leaf("localhost"), lab.intermediate), host="127.0.0.1").start()
    stall = TlsServer(None, mode="stall", host="127.0.0.1").start()
    started: list[LoggedProcess] = []
    try:
        targets = [f"localhost:{server.port}", f"localhost:{stall.port}"]
        configs, coordinators = [], []
        for index in range(REPLICAS):
            config = tmp_path / f"coordinator-{index}.toml"
            write_config(config, index, history, targets, receiver.server_port)
            configs.append(config)
            # Debug, for each replica's run_skipped_held_elsewhere lines.
            command = [*tlsfleet_command(), "coordinator", "serve", "--config", str(config), "--log-level", "debug"]
            process = start_logged(f"replica-{index}", command, tmp_path / f"replica-{index}.log")
            started.append(process)
            coordinators.append(process)
        links = [f"127.0.0.1:{c.wait_for('agent_link_listening')['port']}" for c in coordinators]
        agents = []
        for name in AGENTS:
            command = [*agent_command(), "serve", "--name", name, "--connect", ",".join(links)]
            command += ["--pki-dir", str(tmp_path / "pki")]
            agent = start_logged(name, command, tmp_path / f"{name}.log", trust_env(tmp_path, bundle))
            started.append(agent)
            agents.append(agent)
        for agent in agents:
            for link in links:
                agent.wait_for("agent_link_connected", address=link)
        yield Replicas(tmp_path, history, configs, coordinators, agents, receiver_handler.bodies, datetime.now(UTC))
    finally:
        for process in reversed(started):
            process.stop()
        server.stop()
        stall.stop()
        receiver.shutdown()
        receiver.server_close()
        postgres_server.drop_database(url)


def leases(history: HistoryDatabase) -> list[dict]:
    rows = history.query(
        "SELECT slot, owner, claimed_at, done_at, run_id, interrupted FROM report_leases WHERE report = 'edge' "
        "ORDER BY slot"
    )
    names = ("slot", "owner", "claimed_at", "done_at", "run_id", "interrupted")
    return [dict(zip(names, row, strict=True)) for row in rows]


def wait_until(what: str, check, timeout: float = WAIT_S):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def pid_of(owner: str) -> int:
    """Leases name their holder host:pid:suffix."""
    return int(owner.split(":")[-2])


def agents_answering(history: HistoryDatabase, run_id: int) -> set[str]:
    with history.open() as store:  # type: ignore[attr-defined]
        run = store.get_run(run_id)
    assert run is not None
    return {a.name for a in run.agents if a.state is VantageState.OK}


@pytest.mark.e2e
@pytest.mark.slow
def test_each_slot_runs_once_and_a_killed_replica_loses_only_its_run(replicas: Replicas) -> None:
    history = replicas.history
    first = replicas.ready_at + timedelta(seconds=1)  # slots from here on find every stream open

    def steady() -> list[dict]:
        return [lease for lease in leases(history) if lease["slot"] >= first]

    # Several slots, each run once, by whichever replica claimed it, with both dial-out agents answering.
    done = wait_until("three slots run", lambda: (d := [x for x in steady() if x["run_id"]]) and len(d) >= 3 and d)
    for lease in done[:3]:
        assert not lease["interrupted"]
        [(abandoned, started)] = history.query("SELECT abandoned, started_at FROM runs WHERE id = ?", lease["run_id"])
        assert not abandoned
        assert lease["slot"] <= started < lease["slot"] + timedelta(seconds=INTERVAL_S)
        assert agents_answering(history, lease["run_id"]) == set(AGENTS), "every replica reaches every agent"

    # The next run in progress: kill its holder without a word.
    held = wait_until(
        "a run in progress",
        lambda: next(
            (
                x
                for x in steady()
                if x["done_at"] is None and datetime.now(UTC) - x["claimed_at"] > timedelta(seconds=0.5)
            ),
            None,
        ),
    )
    victim = next(c for c in replicas.coordinators if c.pid == pid_of(held["owner"]))
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(10)
    killed_at = datetime.now(UTC)

    def interrupted() -> dict | None:
        lease = next(x for x in leases(history) if x["slot"] == held["slot"])
        return lease if lease["interrupted"] and lease["run_id"] else None

    lost = wait_until("the killed run recorded as interrupted", interrupted, timeout=INTERVAL_S * 3)
    [(abandoned, note)] = history.query("SELECT abandoned, note FROM runs WHERE id = ?", lost["run_id"])
    assert abandoned and note.startswith(f"interrupted: coordinator {held['owner']} held this run")
    assert lost["done_at"] - killed_at < timedelta(seconds=LEASE_EXPIRY_S + 3), "noticed within the lease's expiry"

    following = wait_until(
        "the next slot run",
        lambda: next((x for x in leases(history) if x["slot"] > held["slot"] and x["run_id"]), None),
        timeout=INTERVAL_S * 4,
    )
    assert following["slot"] == held["slot"] + timedelta(seconds=INTERVAL_S), "no slot lost beyond the killed run"
    assert following["owner"] != held["owner"] and not following["interrupted"]
    assert agents_answering(history, following["run_id"]) == set(AGENTS)

    # Across the whole test: one claim per slot in the three logs, the others told it was held elsewhere.
    claimed: dict[str, list[str]] = {}
    skipped: dict[str, int] = {}
    for coordinator in replicas.coordinators:
        for event in coordinator.events():
            if event.get("event") == "run_claimed":
                claimed.setdefault(event["slot"], []).append(event["replica"])
            elif event.get("event") == "run_skipped_held_elsewhere":
                skipped[event["slot"]] = skipped.get(event["slot"], 0) + 1
    assert claimed and all(len(owners) == 1 for owners in claimed.values()), claimed
    slot_text = following["slot"].astimezone(UTC).isoformat()
    assert claimed[slot_text] == [following["owner"]]
    assert skipped.get(slot_text) == REPLICAS - 2, "the other live replica found the slot held"
    run_rows = history.query("SELECT COUNT(*) FROM runs WHERE NOT abandoned OR note LIKE ?", "interrupted:%")[0][0]
    lease_runs = history.query("SELECT COUNT(*) FROM report_leases WHERE run_id IS NOT NULL")[0][0]
    assert run_rows == lease_runs, "every run came from a lease"

    # The history's readers show the interrupted run as abandoned.
    listed = cli("report", "list", "--config", str(replicas.configs[0]), "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [r for r in json.loads(listed.stdout)["runs"] if r["run_id"] == lost["run_id"]]
    assert entry["abandoned"] is True and entry["note"].startswith(f"interrupted: coordinator {held['owner']}")
    listed_text = cli("report", "list", "--config", str(replicas.configs[0])).stdout
    assert f"(abandoned: interrupted: coordinator {held['owner']}" in listed_text, listed_text
    shown = cli("report", "show", str(lost["run_id"]), "--config", str(replicas.configs[1]))
    assert shown.returncode == 0, shown.stderr
    assert "abandoned" in shown.stdout.lower() and f"interrupted: coordinator {held['owner']}" in shown.stdout

    # Alerts: each announced once, delivered once, whichever replica's delivery loop took it.
    wait_until("an alert delivered", lambda: replicas.hook_bodies)
    time.sleep(1)
    keys = [(b.get("key"), b.get("kind")) for b in replicas.hook_bodies]
    assert len(keys) == len(set(keys)), keys


def test_a_bad_lease_expiry_is_refused_in_one_line(tmp_path: Path) -> None:
    for value, expected in (
        ('"0.2s"', "lease_expiry 0.2 s is out of range; accepted: 1 s to 60 m"),
        ('"2h"', "lease_expiry 7200 s is out of range; accepted: 1 s to 60 m"),
        ('"soon"', "lease_expiry: 'soon' is not a duration"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config({"storage": {"lease_expiry": json.loads(value)}}, tmp_path / "coordinator.toml")
        message = str(raised.value)
        assert "\n" not in message and "[storage]" in message and expected in message, message
    assert parse_config({"storage": {"lease_expiry": "45s"}}, tmp_path / "c.toml").storage.lease_expiry_s == 45


@pytest.mark.e2e
def test_serve_with_a_bad_lease_expiry_says_so_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text('[storage]\nlease_expiry = "0s"\n')
    done = cli("coordinator", "serve", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith("error: config ") and "lease_expiry 0 s is out of range" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def one_report_config(tmp_path: Path, history: HistoryDatabase) -> ServiceConfig:
    """A service with one report of one target on `history`, no agents: for pipelines fed made-up runs."""
    (tmp_path / "inventory.toml").write_text("")
    config_path = tmp_path / "coordinator.toml"
    config_path.write_text(
        f'[coordinator]\ninventory = "inventory.toml"\n\n{history.storage_toml()}\n'
        '[[report]]\nname = "prod-edge"\ntargets = ["svc0.example.test:443"]\ninterval = "1m"\nformats = ["json"]\n'
    )
    return load_config(config_path)


def test_the_run_after_an_interrupted_one_is_compared_with_the_last_run_that_probed(
    tmp_path: Path, history_db: HistoryDatabase, pki: LabPKI
) -> None:
    """An interrupted run holds no targets: compared with it, a rotated certificate would go unnoticed."""
    config = one_report_config(tmp_path, history_db)
    report = config.reports[0]
    started = datetime.now(UTC) - timedelta(minutes=10)

    async def go() -> CompletedRun:
        with history_db.open() as history:  # type: ignore[attr-defined]
            pipeline = Pipeline(config, history)
            try:
                await pipeline.complete(report, make_run(pki, started, hosts=1))
                slot = started + timedelta(minutes=1)
                history.claim_slot(report.name, slot, "gone:1:aaaaaa", slot, slot + timedelta(seconds=30))
                [_interrupted] = history.interrupt_expired(slot + timedelta(minutes=1))
                return await pipeline.complete(report, make_run(pki, started + timedelta(minutes=2), hosts=1))
            finally:
                await pipeline.close()

    done = asyncio.run(go())
    assert [c.kind for c in done.changes if c.kind is ChangeKind.CERTIFICATE], done.changes

    # The fleet page lists the interrupted run like any abandoned one, with its note.
    with history_db.open() as history:  # type: ignore[attr-defined]
        status, body = asyncio.run(FleetPages(config.reports, history).answer("/reports/prod-edge"))
    page = html.unescape(body.decode())
    assert status == 200
    assert "abandoned" in page and "interrupted: coordinator gone:1:aaaaaa held this run" in page


class _Runs:
    """A pipeline that only records which coordinator ran which report when: the schedule's side alone."""

    def __init__(self, name: str, log: list[tuple[str, datetime]]) -> None:
        self._name = name
        self._log = log

    async def run(self, _report: object) -> SimpleNamespace:
        self._log.append((self._name, datetime.now(UTC)))
        return SimpleNamespace(run=SimpleNamespace(run_id=None))


def _schedule_for(tmp_path: Path, seconds: float, *names: str) -> list[tuple[str, datetime]]:
    """Coordinators `names` on one SQLite history, an interval report of 2 s, started half a second into a
    slot and stopped `seconds` later; the runs they made."""
    config_path = tmp_path / "coordinator.toml"
    config_path.write_text(
        '[storage]\npath = "history.sqlite"\nlease_expiry = "1s"\n\n'
        '[[report]]\nname = "edge"\ntargets = ["svc0.example.test:443"]\ninterval = "2s"\njitter = "0s"\n'
    )
    config = load_config(config_path)
    made: list[tuple[str, datetime]] = []

    async def go() -> None:
        stop = asyncio.Event()
        histories = [SqliteHistory(tmp_path / "history.sqlite") for _ in names]
        services = [CoordinatorService(config, owner=name) for name in names]
        await asyncio.sleep(2.5 - time.time() % 2)  # half a second into a slot
        loops = [
            asyncio.create_task(service._schedule(config.reports[0], _Runs(name, made), history, stop))  # type: ignore[arg-type]
            for service, name, history in zip(services, names, histories, strict=True)
        ]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*loops)
        for history in histories:
            history.close()

    asyncio.run(go())
    return made


@pytest.mark.slow
def test_a_lone_coordinator_runs_at_start_then_an_interval_on_at_least(tmp_path: Path) -> None:
    made = _schedule_for(tmp_path, 4.2, "lone")
    assert len(made) == 2, made
    (_, first), (_, second) = made
    assert first.timestamp() % 2 < 1, "the current slot, at start"
    assert second - first >= timedelta(seconds=2), "not moments after the late first run"


@pytest.mark.slow
def test_coordinators_in_one_process_take_turns_on_one_sqlite_file(tmp_path: Path) -> None:
    made = _schedule_for(tmp_path, 5.2, "a", "b", "c")
    slots = [int(at.timestamp() // 2) for _name, at in made]
    assert len(made) == 3 and len(set(slots)) == 3, made
    assert slots == list(range(slots[0], slots[0] + 3)), "every slot run, each once"


def _one_hourly_report(tmp_path: Path) -> tuple[ServiceConfig, ReportConfig, datetime]:
    """A config whose one report runs hourly on leases of a second, and its current slot."""
    config_path = tmp_path / "coordinator.toml"
    config_path.write_text(
        '[storage]\npath = "history.sqlite"\nlease_expiry = "1s"\n\n'
        '[[report]]\nname = "edge"\ntargets = ["svc0.example.test:443"]\ninterval = "1h"\njitter = "0s"\n'
    )
    config = load_config(config_path)
    return config, config.reports[0], datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


class _Unrenewable(SqliteHistory):
    """A coordinator cut off from the history while its run goes: its renewals fail."""

    def renew_slot(self, *_args: object) -> bool:
        raise HistoryError("the database is unreachable")


@pytest.mark.slow
def test_a_holder_cut_off_past_its_lease_finds_its_run_recorded_interrupted(tmp_path: Path) -> None:
    config, report, slot = _one_hourly_report(tmp_path)

    class SlowRun:
        async def run(self, _report: object) -> SimpleNamespace:
            await asyncio.sleep(2.5)  # past the lease's expiry
            return SimpleNamespace(run=SimpleNamespace(run_id=None))

    async def go() -> list[dict]:
        with _Unrenewable(tmp_path / "history.sqlite") as cut_off, SqliteHistory(tmp_path / "history.sqlite") as other:
            holder, sweeper = CoordinatorService(config, owner="cut-off"), CoordinatorService(config, owner="other")
            with structlog.testing.capture_logs() as logs:
                assert await holder._start(report, slot, SlowRun(), cut_off)  # type: ignore[arg-type]
                await asyncio.sleep(1.5)
                await sweeper._sweep(other)
                await holder._running[report.name]
            [summary] = other.list_runs()
            assert summary.abandoned and summary.note.startswith("interrupted: coordinator cut-off held this run")
        return logs

    events = {e["event"]: e for e in asyncio.run(go())}
    assert events["run_lease_not_renewed"]["reason"] == "the database is unreachable"
    assert events["run_interrupted"]["holder"] == "cut-off" and events["run_interrupted"]["replica"] == "other"
    assert events["run_lease_lost"]["report"] == "edge"


class _CutOffForAWhile(SqliteHistory):
    """A coordinator whose history is out of reach for its first renewals, then back."""

    unreachable_renewals = 4

    def renew_slot(self, *args: Any) -> bool:
        if self.unreachable_renewals:
            self.unreachable_renewals -= 1
            raise HistoryError("the database is unreachable")
        return super().renew_slot(*args)


@pytest.mark.slow
def test_a_holder_back_after_its_slot_was_recorded_interrupted_drops_its_run_unsaved(tmp_path: Path) -> None:
    config, report, slot = _one_hourly_report(tmp_path)
    finished: list[str] = []

    class SlowRun:
        async def run(self, _report: object) -> SimpleNamespace:
            await asyncio.sleep(4)  # past the lease's expiry and the history's return
            finished.append(report.name)
            return SimpleNamespace(run=SimpleNamespace(run_id=None))

    async def go() -> list[dict]:
        with (
            _CutOffForAWhile(tmp_path / "history.sqlite") as cut_off,
            SqliteHistory(tmp_path / "history.sqlite") as other,
        ):
            holder, sweeper = CoordinatorService(config, owner="cut-off"), CoordinatorService(config, owner="other")
            with structlog.testing.capture_logs() as logs:
                assert await holder._start(report, slot, SlowRun(), cut_off)  # type: ignore[arg-type]
                await asyncio.sleep(1.2)
                await sweeper._sweep(other)
                await asyncio.wait_for(holder._running[report.name], 3)
            [summary] = other.list_runs()
            assert summary.abandoned and summary.note.startswith("interrupted: coordinator cut-off held this run")
        return logs

    events = {e["event"]: e for e in asyncio.run(go())}
    assert not finished, "the run went on after its lease was found gone"
    assert events["run_lease_lost"]["reason"].endswith("the run is dropped unsaved")


def test_the_previous_run_read_early_is_used_only_while_it_is_still_the_previous_one(
    tmp_path: Path, history_db: HistoryDatabase, pki: LabPKI
) -> None:
    """`run` reads the run to compare with while the agents probe; another coordinator may save a run of the same
    report meanwhile, and then the early read is stale and read again."""
    config = one_report_config(tmp_path, history_db)
    report = config.reports[0]
    started = datetime.now(UTC) - timedelta(minutes=10)

    def ready(run: object) -> asyncio.Future[object]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(run)
        return future

    async def go() -> tuple[CompletedRun, CompletedRun, int]:
        with history_db.open() as history:  # type: ignore[attr-defined]
            pipeline = Pipeline(config, history)
            try:
                first = (await pipeline.complete(report, make_run(pki, started, hosts=1))).run
                # Saved by another coordinator after `first` was read early: same certificates as the next run.
                second = (await pipeline.complete(report, make_run(pki, started + timedelta(minutes=1), hosts=1))).run
                again = replace(second, run_id=None, started_at=started + timedelta(minutes=2))
                stale = await pipeline.complete(report, again, read_early=ready(first))  # type: ignore[arg-type]
                reads = 0

                def counting(read: Callable[..., object]) -> Callable[..., object]:
                    def counted(*args: object, **kwargs: object) -> object:
                        nonlocal reads
                        reads += 1
                        return read(*args, **kwargs)

                    return counted

                history.latest_run = counting(history.latest_run)
                history.run_to_compare = counting(history.run_to_compare)
                fresh = replace(second, run_id=None, started_at=started + timedelta(minutes=3))
                current = await pipeline.complete(report, fresh, read_early=ready(stale.run))  # type: ignore[arg-type]
                return stale, current, reads
            finally:
                await pipeline.close()

    stale, current, reads = asyncio.run(go())
    assert not [c for c in stale.changes if c.kind is ChangeKind.CERTIFICATE], "compared with the stale early read"
    assert not [c for c in current.changes if c.kind is ChangeKind.CERTIFICATE]
    assert reads == 0, "the early read was still the previous run: nothing to read again"


def test_every_coordinator_shows_the_latest_run_in_its_metrics_whoever_made_it(
    tmp_path: Path, history_db: HistoryDatabase, pki: LabPKI
) -> None:
    """Prometheus scrapes every replica: each one's series follow the shared history, not only its own runs."""
    config = one_report_config(tmp_path, history_db)
    report = config.reports[0]
    started = datetime.now(UTC) - timedelta(minutes=10)

    def shown(pipeline: Pipeline) -> float | None:
        return pipeline.metrics.registry.get_sample_value(
            "tlsfleet_report_run_timestamp_seconds", {"report": "prod-edge"}
        )

    async def go() -> list[object]:
        seen: list[object] = []
        with history_db.open() as history:  # type: ignore[attr-defined]
            here, there = Pipeline(config, history), Pipeline(config, history)
            try:
                first = (await there.complete(report, make_run(pki, started, hosts=1))).run
                seen += [shown(here), await here.follow(), shown(here) == first.finished_at.timestamp()]
                seen.append(await here.follow())  # nothing newer: nothing read again
                mine = (await here.complete(report, make_run(pki, started + timedelta(minutes=1), hosts=1))).run
                seen += [await here.follow(), shown(here) == mine.finished_at.timestamp()]
                later = (await there.complete(report, make_run(pki, started + timedelta(minutes=2), hosts=1))).run
                seen += [await here.follow(), shown(here) == later.finished_at.timestamp()]
            finally:
                await here.close()
                await there.close()
        return seen

    assert asyncio.run(go()) == [None, ["prod-edge"], True, [], [], True, ["prod-edge"], True]


def test_a_pipeline_without_metrics_to_serve_skips_the_runs_series(
    tmp_path: Path, history_db: HistoryDatabase, pki: LabPKI
) -> None:
    """`report run` serves no /metrics: its pipeline saves and reports the run but makes no series of it."""
    config = one_report_config(tmp_path, history_db)
    report = config.reports[0]

    async def go() -> list[object]:
        with history_db.open() as history:  # type: ignore[attr-defined]
            quiet, serving = Pipeline(config, history, runs_in_metrics=False), Pipeline(config, history)
            try:
                saved = await quiet.complete(report, make_run(pki, datetime.now(UTC), hosts=1))
                await serving.complete(report, make_run(pki, datetime.now(UTC), hosts=1))
                return [
                    saved.run.run_id is not None and bool(saved.written),
                    *(
                        p.metrics.registry.get_sample_value(
                            "tlsfleet_report_run_timestamp_seconds", {"report": "prod-edge"}
                        )
                        is not None
                        for p in (quiet, serving)
                    ),
                ]
            finally:
                await quiet.close()
                await serving.close()

    assert asyncio.run(go()) == [True, False, True]
