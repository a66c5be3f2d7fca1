"""A real agent that runs this machine's node: `tlsfleet agents` lists the node runtime and its store (bundled
roots plus NODE_EXTRA_CA_CERTS, declared by the variable), and `tlsfleet probe` through that agent judges a lab
server's chain against it as node itself does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

NODE = shutil.which("node", path="/usr/local/bin:/usr/bin:/bin")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(NODE is None, reason="no node executable in /usr/local/bin, /usr/bin or /bin"),
]
NAME = "node.test"


@dataclass
class Lab:
    agent: AgentProcess
    inventory: Path
    server: TlsServer
    extra: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("node-agent")
    pki = LabPKI("Nodeagent")
    extra = write_pem(work / "private-root.pem", pki.root_pem())
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_")} | {"NODE_EXTRA_CA_CERTS": str(extra)}
    server = TlsServer(ServedIdentity.of(pki.issue_leaf(NAME), pki.intermediate)).start()
    try:
        agent = start_agent("node-host", work, env=env, extra_args=["--no-runtime-search", "--runtime", f"node={NODE}"])
        try:
            inventory = work / "inventory.toml"
            inventory.write_text(f'[[agent]]\nname = "node-host"\naddress = "{agent.address}"\ninsecure = true\n')
            yield Lab(agent, inventory, server, extra)
        finally:
            agent.stop()
    finally:
        server.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"}
    )


def test_agents_lists_the_node_runtime_and_its_store(lab: Lab) -> None:
    done = cli("agents", "--inventory", str(lab.inventory), "--no-local", "--json")
    assert done.returncode == 0, done.stderr
    (agent,) = json.loads(done.stdout)["agents"]
    description: dict[str, Any] = agent["description"]
    runtimes = [text for kind, text in description["facts"]["runtimes"] if kind == "node"]
    assert len(runtimes) == 1 and f"+ NODE_EXTRA_CA_CERTS={lab.extra}" in runtimes[0], runtimes
    (store,) = [s for s in description["trust_stores"] if s["name"] == "node"]
    assert (store["runtime"], store["kind"], store["path"], store["declared"]) == ("node", "node", NODE, True)
    assert store["found_by"].startswith("node v") and f"NODE_EXTRA_CA_CERTS={lab.extra} (1)" in store["found_by"]
    if "bundled roots (" in store["found_by"]:  # not for a build made to use OpenSSL's store (Debian's)
        bundled = int(store["found_by"].split("bundled roots (", 1)[1].split(")", 1)[0])
        assert "; trusts bundled roots (" in runtimes[0]
        assert store["root_count"] == bundled + 1

    table = cli("agents", "--inventory", str(lab.inventory), "--no-local")
    assert f"node ({store['root_count']} roots, {store['fingerprint'][:8]})" in table.stdout, table.stdout


def test_probe_judges_the_chain_with_node_s_store(lab: Lab) -> None:
    target = f"127.0.0.1:{lab.server.port}"
    done = cli("probe", target, "--sni", NAME, "--inventory", str(lab.inventory), "--no-local", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    verdicts = list(store_verdicts(json.loads(done.stdout), "node"))
    assert verdicts, "the node store was judged"
    assert all(v["at_agent_time"] == "ok" and v["verify_code"] == 0 for v in verdicts), verdicts


def store_verdicts(value: Any, store: str) -> Iterator[dict[str, Any]]:
    """Every store verdict named `store` anywhere in the probe's JSON."""
    if isinstance(value, dict):
        if value.get("store") == store and "at_agent_time" in value:
            yield value
        for item in value.values():
            yield from store_verdicts(item, store)
    elif isinstance(value, list):
        for item in value:
            yield from store_verdicts(item, store)
