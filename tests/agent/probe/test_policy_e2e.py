"""Real agent processes under a probe policy: a denied address is never connected to, the reply and the CLI
say "denied by policy" with the rule, the agent's own gRPC port is refused by the built-in rule, Describe
shows the policy in force, and a wrong rule stops the agent at start with one line."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tlsfleet.agent import wire
from tlsfleet.agent.model import AddressResult, Failure, ProbeOptions, ProbeRequest, Target
from tlsfleet.coordinator.lab.agent_process import (
    AgentProcess,
    agent_command,
    start_agent,
    tlsfleet_command,
    trust_env,
)
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc

pytestmark = pytest.mark.e2e

NAME = "api.policy.test"
DENIED_HOST = "127.0.0.2"


@dataclass
class Lab:
    server: TlsServer  # on 127.0.0.2
    denying: AgentProcess  # --deny 127.0.0.2/32
    allowing_other: AgentProcess  # --allow 127.0.0.3/32 only
    open: AgentProcess  # no rules
    inventory: Path
    env: dict[str, str]


@pytest.fixture
def lab(pki: LabPKI, tmp_path: Path) -> Iterator[Lab]:
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    env = trust_env(tmp_path, root)
    server = TlsServer(ServedIdentity.of(pki.issue_leaf(NAME), pki.intermediate), host=DENIED_HOST)
    agents: list[AgentProcess] = []
    try:
        server.start()
        agents.append(start_agent("denying", tmp_path / "denying", env=env, extra_args=["--deny", "127.0.0.2/32"]))
        agents.append(start_agent("allowing", tmp_path / "allowing", env=env, extra_args=["--allow", "127.0.0.3"]))
        agents.append(start_agent("open", tmp_path / "open", env=env))
        inventory = tmp_path / "inventory.toml"
        inventory.write_text("\n".join(a.inventory_entry() for a in agents))
        yield Lab(server, agents[0], agents[1], agents[2], inventory, env)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def probe(agent: AgentProcess, host: str, port: int) -> AddressResult:
    async def call() -> AddressResult:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            request = ProbeRequest(Target(host, port), ProbeOptions(sni=NAME, connect_timeout=2, handshake_timeout=3))
            reply = await agent_pb2_grpc.AgentStub(channel).Probe(wire.request_to_wire(request), timeout=15)
        [address] = wire.result_from_wire(reply)[0].addresses
        return address

    return asyncio.run(call())


def tlsfleet(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*tlsfleet_command(), *args, "--inventory", str(lab.inventory), "--no-local"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**lab.env, "COLUMNS": "400"},
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_denied_address_is_never_connected_to_and_says_which_rule(lab: Lab) -> None:
    accepted_before = lab.server.accepted
    denied = probe(lab.denying, DENIED_HOST, lab.server.port)
    assert denied.connect_failure is Failure.DENIED_BY_POLICY
    assert denied.connect_error == "denied by policy: deny 127.0.0.2/32"
    assert denied.chain == () and denied.connect_ms is None
    outside = probe(lab.allowing_other, DENIED_HOST, lab.server.port)
    assert outside.connect_failure is Failure.DENIED_BY_POLICY
    assert outside.connect_error == "denied by policy: no allow rule matches (allow: 127.0.0.3/32)"
    assert lab.server.accepted == accepted_before, "no connection was attempted"
    allowed = probe(lab.open, DENIED_HOST, lab.server.port)
    assert allowed.connect_failure is Failure.NONE and allowed.chain
    assert lab.server.accepted == accepted_before + 1


def test_the_agents_own_grpc_port_is_refused_by_the_built_in_rule(lab: Lab) -> None:
    agent = lab.open
    own = probe(agent, "127.0.0.1", agent.port)
    assert own.connect_failure is Failure.DENIED_BY_POLICY
    assert own.connect_error == f"denied by policy: built-in deny own gRPC listener 127.0.0.1:{agent.port}"
    denied_log = [e for e in agent.log_lines() if e.get("event") == "probe_denied"]
    assert denied_log and denied_log[-1]["port"] == agent.port


def test_the_cli_and_json_show_the_denial_and_the_diagnosis_never_passes_quietly(lab: Lab) -> None:
    target = f"{DENIED_HOST}:{lab.server.port}"
    done = tlsfleet(lab, "probe", target, "--sni", NAME, "--agents", "denying,allowing", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    vantages = {v["agent"]: v for v in report["vantages"]}
    [address] = vantages["denying"]["result"]["addresses"]
    assert (address["connect_failure"], address["connect_error"]) == (
        "denied_by_policy",
        "denied by policy: deny 127.0.0.2/32",
    )
    [top, *rest] = report["findings"]
    assert (top["cause"], top["severity"]) == ("policy_denied", "warning")
    assert top["summary"].startswith("Nothing was probed")
    assert "deny 127.0.0.2/32" in top["summary"] and sorted(top["agents"]) == ["allowing", "denying"]
    assert not [f for f in rest if f["cause"] in ("unreachable", "handshake_incomplete")]

    table = tlsfleet(lab, "probe", target, "--sni", NAME, "--agents", "denying")
    assert "denied by policy: deny 127.0.0.2/32" in table.stdout
    assert "policy_denied" in table.stdout


def test_one_denying_vantage_beside_a_healthy_one_is_told_but_not_a_failure(lab: Lab) -> None:
    done = tlsfleet(
        lab, "probe", f"{DENIED_HOST}:{lab.server.port}", "--sni", NAME, "--agents", "denying,open", "--json"
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["findings"]
    [finding] = [f for f in report["findings"] if f["cause"] == "policy_denied"]
    assert finding["severity"] == "info" and finding["agents"] == ["denying"]
    assert "deny 127.0.0.2/32" in finding["summary"]


def test_describe_shows_the_policy_in_force(lab: Lab) -> None:
    done = tlsfleet(lab, "agents", "--json")
    policies = {a["agent"]: a["description"]["probe_policy"] for a in json.loads(done.stdout)["agents"]}
    assert policies["denying"][0] == "deny 127.0.0.2/32"
    assert "built-in deny 169.254.0.0/16 (link-local)" in policies["denying"]
    assert f"built-in deny own gRPC listener 127.0.0.1:{lab.denying.port}" in policies["denying"]
    assert policies["allowing"][-2:] == ["allow 127.0.0.3/32", "deny everything else"]
    assert policies["open"][-1] == "allow everything else"
    table = tlsfleet(lab, "agents")
    assert "deny 127.0.0.2/32" in table.stdout


def test_describe_over_grpc_carries_the_policy(lab: Lab) -> None:
    async def call() -> tuple[str, ...]:
        async with grpc.aio.insecure_channel(lab.denying.address) as channel:
            reply = await agent_pb2_grpc.AgentStub(channel).Describe(agent_pb2.DescribeRequest(), timeout=15)
        return wire.description_from_wire(reply).probe_policy

    assert asyncio.run(call())[0] == "deny 127.0.0.2/32"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--deny", "10.0.0.1/8"], "--deny '10.0.0.1/8' is not accepted: '10.0.0.1/8' has host bits set"),
        (["--allow", "port:http"], "--allow 'port:http' is not accepted: port 'http' is not a number"),
        (["--policy", "/nonexistent/policy.toml"], "--policy /nonexistent/policy.toml: cannot read it"),
    ],
)
def test_a_wrong_rule_stops_the_agent_at_start_with_one_line(args: list[str], says: str) -> None:
    done = subprocess.run(
        [*agent_command(), "serve", "--name", "bad", "--listen", "127.0.0.1:0", "--insecure", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "accepted" in lines[0]
