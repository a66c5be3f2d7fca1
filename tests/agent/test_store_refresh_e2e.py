"""A real agent re-reads its trust stores when they change: a fix shows on the next probe with no restart,
and SIGHUP forces a re-read the stat check cannot see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e

CHECK_INTERVAL_S = 1.0


@dataclass
class Refreshing:
    workdir: Path
    bundle: Path
    other_root: bytes  # what the bundle holds at first: a root that does not sign the server's chain
    lab_root: bytes
    server: TlsServer
    agent: AgentProcess
    inventory: Path


@pytest.fixture
def refreshing(tmp_path: Path) -> Iterator[Refreshing]:
    lab, other = LabPKI("Refresh Lab"), LabPKI("Unrelated")
    server = TlsServer(ServedIdentity.of(lab.issue_leaf("localhost"), lab.intermediate)).start()
    bundle = write_pem(tmp_path / "bundle.pem", other.root_pem())
    agent = None
    try:
        agent = start_agent("refresh", tmp_path, env=trust_env(tmp_path, bundle))
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(agent.inventory_entry())
        yield Refreshing(tmp_path, bundle, other.root_pem(), lab.root_pem(), server, agent, inventory)
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def probe(fleet: Refreshing) -> dict:
    done = subprocess.run(
        [
            *tlsfleet_command(),
            "probe",
            f"localhost:{fleet.server.port}",
            "--inventory",
            str(fleet.inventory),
            "--no-local",
            "--json",
            "--timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    [vantage] = json.loads(done.stdout)["vantages"]
    assert vantage["state"] == "ok", vantage["error"]
    return vantage["result"]


def verdicts(result: dict) -> tuple[str, str, int]:
    """(native verdict, the ssl_cert_file store's verdict, that store's root count)."""
    [address] = result["addresses"]
    stores = {s["store"]: s for s in address["stores"]}
    for s in address["stores"]:  # a verdict judged once for stores with identical roots
        for name in s.get("same_as", ()):
            stores.setdefault(name, s)
    counts = {s["name"]: s["root_count"] for s in result["trust_stores"]}
    return address["native"]["verdict"], stores["ssl_cert_file"]["at_agent_time"], counts["ssl_cert_file"]


def events(agent: AgentProcess, name: str) -> list[dict]:
    return [e for e in agent.log_lines() if e.get("event") == name]


def wait_for_event(agent: AgentProcess, name: str, count: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = events(agent, name)
        if len(seen) >= count:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the agent did not log {name} {count} time(s): {agent.log_lines()[-5:]}")


def test_a_fixed_bundle_shows_on_the_next_probe_and_sighup_forces_a_reread(refreshing: Refreshing) -> None:
    fleet = refreshing
    assert verdicts(probe(fleet)) == ("unknown_issuer", "unknown_issuer", 1)

    # The fix: the private root goes into the bundle the agent's OpenSSL reads, while it runs.
    fleet.bundle.write_bytes(fleet.other_root + fleet.lab_root)
    time.sleep(CHECK_INTERVAL_S + 0.2)  # the stat check runs at most once a second
    assert verdicts(probe(fleet)) == ("ok", "ok", 2)
    [changed] = events(fleet.agent, "trust_stores_changed")
    assert changed["reason"] == "changed on disk"
    entry = next(c for c in changed["changed"] if c["store"] == "ssl_cert_file")
    assert (entry["path"], entry["roots_before"], entry["roots_after"]) == (str(fleet.bundle), 1, 2)

    # An edit the stat check cannot see: same inode, size and mtime, the private root blanked out.
    stat = fleet.bundle.stat()
    blanked = fleet.other_root + b"#" * (len(fleet.lab_root) - 1) + b"\n"
    with fleet.bundle.open("r+b") as f:
        f.write(blanked)
    os.utime(fleet.bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fleet.bundle.stat().st_size == stat.st_size and fleet.bundle.stat().st_ino == stat.st_ino
    time.sleep(CHECK_INTERVAL_S + 0.2)
    assert verdicts(probe(fleet)) == ("ok", "ok", 2), "nothing the stat check looks at changed"

    fleet.agent.process.send_signal(signal.SIGHUP)
    second = wait_for_event(fleet.agent, "trust_stores_changed", 2)[-1]
    assert second["reason"] == "SIGHUP"
    entry = next(c for c in second["changed"] if c["store"] == "ssl_cert_file")
    assert (entry["roots_before"], entry["roots_after"]) == (2, 1)
    assert verdicts(probe(fleet)) == ("unknown_issuer", "unknown_issuer", 1)

    # A SIGHUP with nothing changed says so, and the agent keeps serving.
    fleet.agent.process.send_signal(signal.SIGHUP)
    [unchanged] = wait_for_event(fleet.agent, "trust_stores_unchanged", 1)
    assert unchanged["reason"] == "SIGHUP"
    assert fleet.agent.process.poll() is None
    assert verdicts(probe(fleet)) == ("unknown_issuer", "unknown_issuer", 1)
