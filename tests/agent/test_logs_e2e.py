"""Nothing but tlsfleet's own lines on stderr when a handshake between fleet parts fails (gRPC's C core
would print lines of its own): a real mutual-TLS agent refusing a certificate from another fleet and a
coordinator it does not allow (logged with the caller's identity and address), and the CLI asking an agent
of another fleet."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from tlsfleet.agent.pki.credentials import channel_credentials, channel_options_for_peer, load_credentials
from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue
from tlsfleet.coordinator.lab.agent_process import start_agent, tlsfleet_command
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc

pytestmark = pytest.mark.e2e


def _describe(pki: Path, coordinator: str, port: int, *, ca: Path | None = None) -> grpc.StatusCode:
    creds = load_credentials(
        pki / "ca.pem",
        pki / "coordinators" / f"{coordinator}.pem",
        pki / "coordinators" / f"{coordinator}.key",
        expect_role="coordinator",
    )
    if ca is not None:
        creds = replace(creds, ca_pem=ca.read_bytes())

    async def call() -> grpc.StatusCode:
        options = channel_options_for_peer("agent", "web-1")
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(creds), options) as channel:
            try:
                await agent_pb2_grpc.AgentStub(channel).Describe(agent_pb2.DescribeRequest(), timeout=3.0)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    return asyncio.run(call())


def test_agent_stderr_is_json_lines_and_a_refusal_names_the_caller(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "pki", tmp_path / "other-pki"
    init_fleet_ca(ours)
    init_fleet_ca(theirs)
    issue(ours, "agent", "web-1")
    issue(ours, "coordinator", "intruder")
    issue(theirs, "coordinator", "coordinator")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    agent = start_agent("web-1", tmp_path, env=env, insecure=False, extra_args=("--pki-dir", str(ours)))
    try:
        # Trusting our CA, presenting their certificate: the agent's side of the handshake fails.
        assert _describe(theirs, "coordinator", agent.port, ca=ours / "ca.pem") is grpc.StatusCode.UNAVAILABLE
        assert _describe(ours, "intruder", agent.port) is grpc.StatusCode.PERMISSION_DENIED
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(f'[[agent]]\nname = "web-1"\naddress = "127.0.0.1:{agent.port}"\n')
        cli = subprocess.run(
            [*tlsfleet_command(), "agents", "--inventory", str(inventory), "--agents", "web-1"],
            env={**env, "TLSFLEET_PKI_DIR": str(theirs)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        agent.stop()
    assert "offline" in cli.stdout, cli.stdout + cli.stderr
    assert "ssl_transport_security" not in cli.stderr and "Handshake failed" not in cli.stderr, cli.stderr
    raw = agent.log_path.read_text().splitlines()
    assert raw, "the agent wrote nothing after it started listening"
    not_json = [line for line in raw if not line.startswith("{")]
    assert not_json == [], f"lines that are not JSON: {not_json[:3]}"
    events = [json.loads(line) for line in raw]
    [refused] = [e for e in events if e["event"] == "call_refused"]
    assert refused["peer_identity"] == "coordinator/intruder"
    assert refused["peer_address"].startswith("ipv4:127.0.0.1:")
    assert "not allowed" in refused["reason"] and refused["level"] == "warning"
