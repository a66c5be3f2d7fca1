"""A server sending its root cross-signed by an older root that has since expired, probed by real agents over
gRPC through the real CLI: the host whose store has only the old root fails, as `openssl s_client` on the same
host does, and is told so; the host with the current root verifies, as `openssl s_client` does, and is quiet."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, cross_signed, expired_root, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e

NAME = "localhost"


def _s_client_code(port: int, cafile: Path) -> int:
    """The verify code `openssl s_client` reports with `cafile` as its store: the ground truth on this host."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME, "-CAfile", str(cafile)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    line = next(line for line in done.stdout.splitlines() if "Verify return code:" in line)
    return int(line.split(":")[1].split()[0])


def test_the_host_with_only_the_expired_root_fails_and_is_named(tmp_path: Path) -> None:
    new = LabPKI("New")
    old = expired_root("Old Root CA")
    served = ServedIdentity.of(new.issue_leaf(NAME, "127.0.0.1"), new.intermediate, cross_signed(new.root, by=old))
    old_only = write_pem(tmp_path / "old-root.pem", old.cert_pem)
    current = write_pem(tmp_path / "new-root.pem", new.root_pem())
    agents = [
        start_agent("legacy-1", tmp_path / "legacy", env=trust_env(tmp_path / "legacy", old_only)),
        start_agent("current-1", tmp_path / "current", env=trust_env(tmp_path / "current", current)),
    ]
    try:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text("".join(a.inventory_entry() for a in agents))
        with TlsServer(served, host="127.0.0.1") as server:
            truth = {
                "legacy-1": _s_client_code(server.port, old_only),
                "current-1": _s_client_code(server.port, current),
            }
            probe = ["probe", f"{NAME}:{server.port}", "--address", "127.0.0.1", "--inventory", str(inventory)]
            done = subprocess.run(
                [*tlsfleet_command(), *probe, "--no-local", "--json"],
                capture_output=True,
                text=True,
                timeout=90,
            )
    finally:
        for agent in agents:
            agent.stop()
    assert truth == {"legacy-1": 10, "current-1": 0}, "openssl s_client: expired on one host, ok on the other"
    report = json.loads(done.stdout)
    native = {
        v["agent"]: v["result"]["addresses"][0]["native"]["verify_code"] for v in report["vantages"] if v["result"]
    }
    assert native == truth, "each agent's native verdict is what openssl gets on its host"
    loud = [f for f in report["findings"] if f["severity"] in ("critical", "warning")]
    assert [(f["cause"], f["agents"]) for f in loud] == [("expired", ["legacy-1"])], loud
    assert "'CN=Old Root CA', which has expired" in loud[0]["summary"]
    assert "Install the current root 'CN=New Root CA'" in loud[0]["fix"]
    assert done.returncode == 1
