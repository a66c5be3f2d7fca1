"""The coordinator as a service, end to end: two scheduled runs over real agents, a certificate rotated in
between (the new deployment drops the intermediate), history, reports, one webhook notification, /metrics,
a restart that loses nothing, and clear errors for a bad config and a bad database."""

from __future__ import annotations

import http.server
import json
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.browser import chromium, needs_chromium
from tests.coordinator.service.history.backends import BACKENDS, HistoryDatabase, history_database
from tests.coordinator.service.webhook_receiver import JsonReceiver
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e  # the coordinator service, agents and CLI as real processes

RUN_WAIT_S = 60


@dataclass
class Service:
    workdir: Path
    config: Path
    server_port: int
    pki: LabPKI
    agents: list[AgentProcess]
    hook_bodies: list[dict] = field(default_factory=list)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=timeout)


def runs(config: Path) -> list[dict]:
    done = cli("report", "list", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["runs"]


def wait_for_runs(config: Path, count: int) -> list[dict]:
    deadline = time.monotonic() + RUN_WAIT_S
    while time.monotonic() < deadline:
        found = runs(config)
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} runs after {RUN_WAIT_S} s: {runs(config)}")


def wait_for_notification(bodies: list[dict]) -> None:
    deadline = time.monotonic() + RUN_WAIT_S
    while time.monotonic() < deadline:
        if any(b.get("alert") == "finding" for b in bodies):
            return
        time.sleep(0.2)


@pytest.fixture(scope="module", params=BACKENDS)
def service_history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HistoryDatabase]:
    """The service's history: the module's tests run once on SQLite and once on PostgreSQL."""
    with history_database(request.param, tmp_path_factory.mktemp("history"), request.getfixturevalue) as database:
        yield database


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, service_history: HistoryDatabase) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("service")
    pki = LabPKI("Acme Internal")
    bundle = write_pem(workdir / "bundle.pem", pki.root_pem())
    receiver_handler = type("Receiver", (JsonReceiver,), {"bodies": []})
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), receiver_handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    agents: list[AgentProcess] = []
    try:
        for name in ("edge-1", "edge-2"):
            agents.append(start_agent(name, workdir, env=trust_env(workdir, bundle), labels=[("env", "prod")]))
        (workdir / "inventory.toml").write_text("".join(a.inventory_entry() for a in agents))
        # The first deployment serves the full chain.
        leaf = pki.issue_leaf("localhost")
        with TlsServer(ServedIdentity.of(leaf, pki.intermediate), host="127.0.0.1") as first:
            port = first.port
        config = workdir / "coordinator.toml"
        config.write_text(
            f"""
[coordinator]
inventory = "inventory.toml"
reports_dir = "reports"
metrics_listen = "127.0.0.1:0"

{service_history.storage_toml()}
[[report]]
name = "edge"
targets = ["localhost:{port}"]
interval = "3s"
probe_timeout = "5s"
notify_min_severity = "critical"
webhooks = ["oncall"]

[[webhook]]
name = "oncall"
url = "http://127.0.0.1:{receiver.server_port}/hook"
format = "json"
"""
        )
        yield Service(workdir, config, port, pki, agents, receiver_handler.bodies)
    finally:
        for agent in agents:
            agent.stop()
        receiver.shutdown()
        receiver.server_close()


def start_service(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*tlsfleet_command(), "coordinator", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def stop_service(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def log_events(log: Path) -> list[dict]:
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_two_runs_a_rotation_one_alert_and_the_change(service: Service) -> None:
    log = service.workdir / "service.log"
    leaf = service.pki.issue_leaf("localhost")
    first = TlsServer(ServedIdentity.of(leaf, service.pki.intermediate), host="127.0.0.1", port=service.server_port)
    process = start_service(service.config, log)
    try:
        with first:
            wait_for_runs(service.config, 1)
        # The new deployment rotates the certificate and forgets the intermediate.
        rotated = service.pki.issue_leaf("localhost")
        with TlsServer(ServedIdentity.of(rotated), host="127.0.0.1", port=service.server_port):
            found = wait_for_runs(service.config, 2)
            # The announcement leaves from its own worker after the run is saved: on a busy machine, later.
            wait_for_notification(service.hook_bodies)
            metrics_port = next(e["metrics"] for e in log_events(log) if e.get("event") == "coordinator_started")
            scraped = urllib.request.urlopen(f"http://{metrics_port}/metrics", timeout=5).read().decode()
            code = stop_service(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    events = [e.get("event") for e in log_events(log)]
    assert "coordinator_stopping" in events and "coordinator_stopped" in events

    second = min(found, key=lambda r: r["run_id"])["run_id"] + 1
    shown = cli("report", "show", str(second), "--config", str(service.config), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    changes = report["changes"]
    chain_changes = [c for c in changes if c["kind"] == "certificate"]
    assert chain_changes, changes
    assert any("2" in c["before"] and "1" in c["after"] for c in chain_changes), chain_changes
    assert all(c["since"] for c in chain_changes)
    new = [c for c in changes if c["kind"] == "finding_new"]
    assert [(c["cause"], c["severity"]) for c in new if c["severity"] == "critical"] == [
        ("incomplete_chain", "critical")
    ]

    # Exactly one notification: the new critical finding, announced once.
    notifications = [b for b in service.hook_bodies if b.get("alert") == "finding"]
    assert len(notifications) == 1, service.hook_bodies
    assert "incomplete_chain" in json.dumps(notifications[0])

    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    up = [s for s in families["tlsfleet_agent_up"].samples if s.labels.get("report") == "edge"]
    assert {s.labels["agent"] for s in up} == {"edge-1", "edge-2"} and all(s.value == 1 for s in up)
    assert any(name.startswith("tlsfleet_certificate_expiry") for name in families)

    reports_dir = service.workdir / "reports" / "edge"
    assert (reports_dir / "latest.html").exists() and (reports_dir / "latest.md").exists()


def test_restart_keeps_the_history(service: Service) -> None:
    before = runs(service.config)
    assert before, "the first test left runs behind"
    leaf = service.pki.issue_leaf("localhost")
    with TlsServer(ServedIdentity.of(leaf, service.pki.intermediate), host="127.0.0.1", port=service.server_port):
        done = cli("report", "run", "edge", "--config", str(service.config))
    assert done.returncode in (0, 1), done.stderr
    assert done.stdout.startswith("run ")
    assert " of edge: 1 target in " in done.stdout.splitlines()[0], done.stdout  # counted in the singular
    after = runs(service.config)
    assert len(after) == len(before) + 1
    assert {r["run_id"] for r in before} <= {r["run_id"] for r in after}


@needs_chromium
@pytest.mark.browser
def test_html_report_renders_target_finding_and_change(service: Service) -> None:
    pages = sorted((service.workdir / "reports" / "edge").glob("*.html"))
    with_change = [p for p in pages if "incomplete_chain" in p.read_text()]
    assert with_change, [p.name for p in pages]
    dom = chromium(with_change[0], "--dump-dom").decode()
    assert f"localhost:{service.server_port}" in dom
    assert "incomplete_chain" in dom
    assert "certificate" in dom and "since" in dom.lower()


def test_bad_config_is_named(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text('[[report]]\nname = "x"\ntargets = ["a.example"]\nschedule = "every hour"\n')
    done = cli("coordinator", "serve", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "is not a cron expression" in done.stderr
    assert "Traceback" not in done.stderr


def test_corrupt_database_is_named(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").write_bytes(b"this is not a database, just text" * 100)
    config = tmp_path / "coordinator.toml"
    config.write_text('[storage]\npath = "history.sqlite"\n')
    done = cli("report", "list", "--config", str(config))
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: ") and "history.sqlite" in done.stderr
    assert "Traceback" not in done.stderr


def test_locked_database_is_named(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text(
        '[storage]\npath = "history.sqlite"\n\n[[report]]\nname = "x"\ntargets = ["localhost:1"]\ninterval = "1h"\n'
    )
    assert cli("report", "list", "--config", str(config)).returncode == 0  # creates the database
    holder = sqlite3.connect(tmp_path / "history.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = cli("report", "run", "x", "--config", str(config), timeout=120)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and "lock" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_overlapping_runs_are_skipped_and_sigterm_abandons_cleanly(tmp_path: Path) -> None:
    """A target that never answers keeps each run going longer than the interval: the next starts are
    skipped and logged; SIGTERM gives the run its grace period, then abandons it, keeping what it has."""
    agent = start_agent("slow-1", tmp_path)
    try:
        (tmp_path / "inventory.toml").write_text(agent.inventory_entry())
        with TlsServer(None, mode="stall", host="127.0.0.1") as stall:
            config = tmp_path / "coordinator.toml"
            config.write_text(
                f"""
[coordinator]
inventory = "inventory.toml"
reports_dir = "reports"
shutdown_grace = "1s"

[storage]
path = "history.sqlite"

[[report]]
name = "slow"
targets = ["localhost:{stall.port}", "127.0.0.1:{stall.port}"]
interval = "1s"
probe_timeout = "30s"
deadline = "60s"
"""
            )
            log = tmp_path / "service.log"
            process = start_service(config, log)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if any(e.get("event") == "run_skipped_overlap" for e in log_events(log)):
                        break
                    time.sleep(0.2)
                started = time.monotonic()
                code = stop_service(process)
                stopping_took = time.monotonic() - started
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    finally:
        agent.stop()
    assert code == 0
    events = log_events(log)
    names = [e.get("event") for e in events]
    assert "run_skipped_overlap" in names
    assert "report_run_abandoned" in names
    assert stopping_took < 20, "the grace period bounds the stop"
    [saved] = runs(config)
    assert saved["abandoned"] is True


def test_missing_inventory_fails_at_start_not_at_the_first_run(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text(
        '[coordinator]\ninventory = "absent.toml"\n[[report]]\nname = "x"\ntargets = ["a.example"]\ninterval = "1h"\n'
    )
    done = cli("coordinator", "serve", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith("error: inventory ") and "absent.toml does not exist" in done.stderr
