"""The first errors people meet, through real agents, real gRPC and the real CLI: an agent of another
fleet, the wrong agent at an address, nothing listening, a PKI directory from $TLSFLEET_PKI_DIR, and the
agents/ sub-folder given as --pki-dir. Each is one line that says what to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue
from tlsfleet.coordinator.lab.agent_process import agent_command, start_agent, tlsfleet_command

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fleet_mistakes_are_explained(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "pki", tmp_path / "other-pki"
    for pki in (ours, theirs):
        init_fleet_ca(pki)
        issue(pki, "coordinator", "coordinator")
    issue(ours, "agent", "web-1")
    issue(theirs, "agent", "web-2")
    web1 = start_agent("web-1", tmp_path / "a1", insecure=False, extra_args=("--pki-dir", str(ours)))
    web2 = start_agent("web-2", tmp_path / "a2", insecure=False, extra_args=("--pki-dir", str(theirs)))
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        f'[[agent]]\nname = "web-2"\naddress = "{web2.address}"\n'  # another fleet's agent
        f'[[agent]]\nname = "db-1"\naddress = "{web1.address}"\n'  # web-1 answers there
        f'[[agent]]\nname = "db-2"\naddress = "127.0.0.1:{_free_port()}"\n'  # nothing listens
    )
    try:
        done = subprocess.run(
            [*tlsfleet_command(), "agents", "--inventory", str(inventory), "--no-local", "--json"],
            env={**os.environ, "TLSFLEET_PKI_DIR": str(ours)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        web1.stop()
        web2.stop()
    errors = {a["agent"]: a["error"] for a in json.loads(done.stdout)["agents"]}
    assert errors["web-2"] == (
        f"the agent at {web2.address} presented a certificate that this fleet CA ({ours / 'ca.pem'}, PKI directory "
        "from $TLSFLEET_PKI_DIR) did not sign: it belongs to another fleet, or this is the wrong PKI directory"
    )
    assert errors["db-1"].startswith(f"the agent at {web1.address} is not 'db-1': its certificate names another")
    assert errors["db-2"].startswith("nothing listens at 127.0.0.1:")
    assert errors["db-2"].endswith("is agent 'db-2' running there?")


def test_pki_directory_mistakes_are_one_line(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_fleet_ca(pki)
    issue(pki, "agent", "web-1")
    serve = [*agent_command(), "serve", "--name", "web-1", "--listen", "127.0.0.1:0"]
    sub = subprocess.run([*serve, "--pki-dir", str(pki / "agents")], capture_output=True, text=True, timeout=60)
    assert sub.returncode == 2
    assert sub.stderr.strip() == (
        f"error: PKI directory {pki / 'agents'} is the agents/ sub-folder; give the PKI directory itself, {pki} "
        "(the one that holds ca.pem)"
    )
    env = {**os.environ, "TLSFLEET_PKI_DIR": str(tmp_path / "forgotten")}
    stale = subprocess.run(serve, capture_output=True, text=True, timeout=60, env=env)
    assert stale.returncode == 2
    assert "(from $TLSFLEET_PKI_DIR) holds no fleet CA (ca.pem); create one with `tlsfleet pki init" in stale.stderr
    assert stale.stderr.count("\n") == 1
