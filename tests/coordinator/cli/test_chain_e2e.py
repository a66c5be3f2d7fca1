"""`tlsfleet chain` through a real agent and the local vantage against a real lab server: one chain, seen by
both, as PEM that `openssl verify` accepts, and as text; nothing listening is said per vantage, exit code 1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e


def _chain(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tlsfleet_command(), "chain", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_chain_as_each_vantage_saw_it(tmp_path: Path) -> None:
    pki = LabPKI("Chain")
    root = tmp_path / "root.pem"
    write_pem(root, pki.root.cert_pem)
    env = trust_env(tmp_path, root)
    agent = start_agent("edge-1", tmp_path / "agent", env=env)
    (tmp_path / "inventory.toml").write_text(agent.inventory_entry())
    try:
        with TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate)) as server:
            target = f"localhost:{server.port}"
            summary = _chain(target, "--inventory", "inventory.toml", env=env, cwd=tmp_path)
            pem = _chain(target, "--inventory", "inventory.toml", "--pem", env=env, cwd=tmp_path)
            text = _chain(
                target, "--agents", "edge-1", "--inventory", "inventory.toml", "--text", env=env, cwd=tmp_path
            )
        gone = _chain(target, "--inventory", "inventory.toml", env=env, cwd=tmp_path)
    finally:
        agent.stop()
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert lines[0] == "# chain 1 of 1: 2 certificate(s), TLSv1.3"
    assert lines[1] == "# seen by local@127.0.0.1 (ok), edge-1@127.0.0.1 (ok)"
    assert "#  0: CN=localhost" in lines and "#  1: CN=Chain Intermediate CA" in lines

    assert pem.returncode == 0 and pem.stdout.count("-----BEGIN CERTIFICATE-----") == 2
    served = tmp_path / "served.pem"
    served.write_text(pem.stdout)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(served), str(served)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr

    assert text.returncode == 0 and "# seen by edge-1@127.0.0.1 (ok)" in text.stdout
    assert "key EC secp256r1" in text.stdout and "SAN localhost" in text.stdout

    assert gone.returncode == 1
    assert (
        "# local@127.0.0.1: no chain (refused:" in gone.stdout
        and "# edge-1@127.0.0.1: no chain (refused:" in gone.stdout
    )


def test_pem_and_text_together_are_refused() -> None:
    done = subprocess.run(
        [*tlsfleet_command(), "chain", "localhost:1", "--pem", "--text"], capture_output=True, text=True, timeout=60
    )
    assert (
        done.returncode == 2
        and done.stderr.strip() == "error: --pem and --text contradict each other; give one of them"
    )
