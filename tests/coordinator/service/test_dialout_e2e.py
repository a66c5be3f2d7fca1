"""Agents that dial out, end to end with real processes on loopback: a coordinator service holding their
streams, `tlsfleet agents` and `tlsfleet probe` through it, a scheduled report over dial-in and dialled
agents together, identities refused, a stalled stream shown stale, and reconnection after a restart."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tlsfleet import __version__
from tlsfleet.agent.pki.credentials import channel_credentials, channel_options_for_peer, load_credentials
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.v1 import link_pb2, link_pb2_grpc

from .dialout_fleet import LoggedProcess, cli, listening_ports, make_pki, start_coordinator, start_dialout_agent

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEARTBEAT_S = 0.5
STALE_AFTER = 2


@dataclass
class DialoutFleet:
    workdir: Path
    pki_dir: Path
    config: Path
    inventory: Path
    link: str  # HOST:PORT of the coordinator's agent link
    coordinator: LoggedProcess
    agents: dict[str, LoggedProcess]
    dialled: AgentProcess
    server: TlsServer

    def env(self) -> dict[str, str]:
        return {**os.environ, "TLSFLEET_COORDINATOR": self.link}


def write_config(path: Path, listen: str, target_port: int) -> None:
    path.write_text(
        f"""
[coordinator]
inventory = "inventory.toml"
reports_dir = "reports"

[storage]
path = "history.sqlite"

[agent_link]
listen = "{listen}"
allow = ["edge-*"]
min_agent_version = "{__version__}"
heartbeat_interval = "{HEARTBEAT_S}s"
stale_after = {STALE_AFTER}

[[report]]
name = "edge"
targets = ["localhost:{target_port}"]
interval = "2s"
probe_timeout = "5s"
"""
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialoutFleet]:
    workdir = tmp_path_factory.mktemp("dialout")
    pki_dir = make_pki(workdir / "pki", "edge-1", "edge-2", "edge-3", "edge-4", "edge-5", "intruder")
    lab = LabPKI("Dial")
    bundle = write_pem(workdir / "lab-root.pem", lab.root_pem())
    server = TlsServer(ServedIdentity.of(lab.issue_leaf("localhost"), lab.intermediate)).start()
    started: list[LoggedProcess] = []
    dialled = None
    try:
        dialled = start_agent("hub-1", workdir, env=trust_env(workdir, bundle), labels=[("kind", "dialled")])
        inventory = workdir / "inventory.toml"
        inventory.write_text(f'[coordinator]\npki_dir = "pki"\n\n{dialled.inventory_entry()}')
        config = workdir / "coordinator.toml"
        write_config(config, "127.0.0.1:0", server.port)
        coordinator = start_coordinator(config, workdir / "coordinator.log")
        started.append(coordinator)
        port = coordinator.wait_for("agent_link_listening")["port"]
        link = f"127.0.0.1:{port}"
        write_config(config, link, server.port)  # a restart listens where the agents dial
        agents = {}
        for name, env in (("edge-1", "prod"), ("edge-2", "staging")):
            agent = start_dialout_agent(
                name, link, pki_dir, workdir, labels=[("env", env)], env=trust_env(workdir, bundle)
            )
            started.append(agent)
            agents[name] = agent
        for agent in agents.values():
            agent.wait_for("agent_link_connected")
        yield DialoutFleet(workdir, pki_dir, config, inventory, link, coordinator, agents, dialled, server)
    finally:
        for process in reversed(started):
            process.stop()
        if dialled is not None:
            dialled.stop()
        server.stop()


def agents_json(fleet: DialoutFleet, *extra: str) -> dict:
    done = cli("agents", "--inventory", str(fleet.inventory), "--no-local", "--json", *extra, env=fleet.env())
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_dialout_agents_hold_no_listening_port(fleet: DialoutFleet) -> None:
    for agent in fleet.agents.values():
        events = [e["event"] for e in agent.events()]
        assert "agent_listening" not in events
        assert "agent_dialling" in events
        assert listening_ports(agent.pid) == set()
    assert fleet.dialled.port in listening_ports(fleet.dialled.pid)  # the check sees a listener when there is one


def test_agents_lists_dialout_and_dialled_agents_alike(fleet: DialoutFleet) -> None:
    report = agents_json(fleet)
    assert report["exit_code"] == 0, report
    by_name = {a["agent"]: a for a in report["agents"]}
    assert set(by_name) == {"hub-1", "edge-1", "edge-2"}
    assert by_name["hub-1"]["kind"] == "grpc"
    for name, env in (("edge-1", "prod"), ("edge-2", "staging")):
        agent = by_name[name]
        assert (agent["kind"], agent["state"], agent["labels"]) == ("dial-in", "ok", {"env": env})
        assert agent["description"]["identity"]["name"] == name
        assert agent["clock"] is not None
        # The same shape whichever way the agent is reached.
        assert set(agent) == set(by_name["hub-1"])
        assert set(agent["description"]) == set(by_name["hub-1"]["description"])


def test_probe_through_the_coordinator(fleet: DialoutFleet) -> None:
    done = cli(
        "probe",
        f"localhost:{fleet.server.port}",
        "--inventory",
        str(fleet.inventory),
        "--no-local",
        "--json",
        "--timeout",
        "8",
        env=fleet.env(),
    )
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    by_name = {v["vantage"]["name"] if "vantage" in v else v["agent"]: v for v in report["vantages"]}
    assert set(by_name) == {"hub-1", "edge-1", "edge-2"}, by_name.keys()
    for name in ("edge-1", "edge-2"):
        vantage = by_name[name]
        assert vantage["state"] == "ok", vantage["error"]
        [address] = vantage["result"]["addresses"]
        assert address["handshake"]["failure"] == "none"
        assert address["native"]["verdict"] == "ok"
    assert done.returncode == 0, done.stdout[-2000:]


def test_scheduled_reports_select_from_both_kinds(fleet: DialoutFleet) -> None:
    latest = fleet.workdir / "reports" / "edge" / "latest.json"
    deadline = time.monotonic() + 30
    names: set[str] = set()
    while time.monotonic() < deadline:
        if latest.exists():
            run = json.loads(latest.read_text())
            names = {a["agent"] for a in run["agents"] if a["state"] == "ok"}
            if names == {"hub-1", "edge-1", "edge-2"}:
                break
        time.sleep(0.5)
    assert names == {"hub-1", "edge-1", "edge-2"}


def register_by_hand(fleet: DialoutFleet, certificate_name: str, registered_name: str, version: str) -> tuple:
    """A real stream from a hand-written client: its own valid certificate, the registration it chooses."""
    creds = load_credentials(
        fleet.pki_dir / "ca.pem",
        fleet.pki_dir / "agents" / f"{certificate_name}.pem",
        fleet.pki_dir / "agents" / f"{certificate_name}.key",
        expect_role="agent",
    )
    options = channel_options_for_peer("coordinator", "coordinator")
    with grpc.secure_channel(fleet.link, channel_credentials(creds), options) as channel:
        registration = link_pb2.AgentMessage(registration=link_pb2.Registration(name=registered_name, version=version))
        replies = link_pb2_grpc.AgentLinkStub(channel).Connect(iter([registration]), timeout=10)
        first = next(replies)
        with pytest.raises(grpc.RpcError) as ended:
            next(replies)
    return first, ended.value


def test_an_agent_registering_under_another_agents_name_is_refused(fleet: DialoutFleet) -> None:
    since = len(fleet.coordinator.events())
    first, ended = register_by_hand(fleet, "edge-3", "edge-1", __version__)
    assert first.WhichOneof("body") == "refusal"
    assert "the certificate names agent 'edge-3', but the stream registered as 'edge-1'" in first.refusal.reason
    assert ended.code() == grpc.StatusCode.PERMISSION_DENIED
    fleet.coordinator.wait_for("agent_link_refused", since=since, agent="edge-1")
    # The real edge-1 keeps its stream.
    assert not [e for e in fleet.coordinator.events()[since:] if e.get("event") == "agent_link_replaced"]
    by_name = {a["agent"]: a for a in agents_json(fleet, "--agents", "edge-1")["agents"]}
    assert by_name["edge-1"]["state"] == "ok"


def test_an_agent_below_the_minimum_version_is_refused_with_the_reason(fleet: DialoutFleet) -> None:
    first, ended = register_by_hand(fleet, "edge-4", "edge-4", "0.0.1")
    assert first.WhichOneof("body") == "refusal" and not first.refusal.retry
    assert f"runs tlsfleet 0.0.1; this coordinator accepts {__version__} or newer" in first.refusal.reason
    assert ended.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_agent_not_allowed_logs_why(fleet: DialoutFleet) -> None:
    intruder = start_dialout_agent("intruder", fleet.link, fleet.pki_dir, fleet.workdir)
    try:
        refused = intruder.wait_for("agent_link_refused")
        assert "agent 'intruder' is not allowed to dial in" in refused["reason"]
        retry = intruder.wait_for("agent_link_retry")
        assert retry["retry_in_s"] >= 15  # a refusal that retrying will not change waits near the cap
    finally:
        intruder.stop()


def test_a_stalled_stream_is_shown_stale(fleet: DialoutFleet) -> None:
    stalled = fleet.agents["edge-2"]
    since = len(fleet.coordinator.events())
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        fleet.coordinator.wait_for("agent_link_stale", since=since, agent="edge-2", timeout=10)
        by_name = {a["agent"]: a for a in agents_json(fleet, "--timeout", "1")["agents"]}
        assert by_name["edge-1"]["state"] == "ok"
        assert by_name["edge-2"]["state"] == "timeout"
        assert "its stream is stale" in by_name["edge-2"]["error"]
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    fleet.coordinator.wait_for("agent_link_recovered", since=since, agent="edge-2", timeout=10)


def test_agents_reconnect_within_5_s_after_the_coordinator_restarts(fleet: DialoutFleet) -> None:
    marks = {name: len(agent.events()) for name, agent in fleet.agents.items()}
    fleet.coordinator.stop()
    assert fleet.coordinator.process.returncode == 0
    for name, agent in fleet.agents.items():
        agent.wait_for("agent_link_retry", since=marks[name])
    restarted = start_coordinator(fleet.config, fleet.workdir / "coordinator-2.log")
    fleet.coordinator.process = restarted.process  # the fixture stops whichever runs
    fleet.coordinator.log_path = restarted.log_path
    restarted.wait_for("agent_link_listening")
    listening = time.monotonic()
    for name, agent in fleet.agents.items():
        agent.wait_for("agent_link_connected", since=marks[name], timeout=10)
    assert time.monotonic() - listening < 5.0
    report = agents_json(fleet)
    assert {a["agent"]: a["state"] for a in report["agents"]} == {"hub-1": "ok", "edge-1": "ok", "edge-2": "ok"}


def test_an_agent_may_listen_and_dial_out_at_once(fleet: DialoutFleet) -> None:
    # Last: once stopped, edge-5 stays known to the coordinator as an offline dial-in agent.
    both = start_agent(
        "edge-5", fleet.workdir, insecure=False, extra_args=["--pki-dir", str(fleet.pki_dir), "--connect", fleet.link]
    )
    try:
        deadline = time.monotonic() + 20
        while not any(e.get("event") == "agent_link_connected" for e in both.log_lines()):
            assert time.monotonic() < deadline, both.log_lines()
            time.sleep(0.1)
        assert both.port in listening_ports(both.pid)
        [agent] = agents_json(fleet, "--agents", "edge-5")["agents"]
        assert (agent["kind"], agent["state"]) == ("dial-in", "ok")
    finally:
        both.stop()
