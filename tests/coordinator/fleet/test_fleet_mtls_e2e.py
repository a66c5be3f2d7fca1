"""Mutual TLS between the CLI and real agent processes, with the fleet PKI made by `tlsfleet pki`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, check=False)


def make_pki(directory: Path, *agents: str) -> Path:
    for command in (
        ["pki", "init", "--dir", str(directory)],
        ["pki", "issue", "coordinator", "coordinator", "--dir", str(directory)],
        *(["pki", "issue", "agent", name, "--dir", str(directory)] for name in agents),
    ):
        done = cli(*command)
        assert done.returncode == 0, done.stderr
    return directory


@dataclass
class SecureFleet:
    workdir: Path
    pki_dir: Path
    agent: AgentProcess
    server: TlsServer


@pytest.fixture(scope="module")
def secure_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureFleet]:
    workdir = tmp_path_factory.mktemp("mtls")
    pki_dir = make_pki(workdir / "pki", "edge-1")
    lab = LabPKI("Lab")
    leaf = lab.issue_leaf("localhost")
    server = TlsServer(ServedIdentity.of(leaf, lab.intermediate)).start()
    agent = None
    try:
        agent = start_agent("edge-1", workdir, insecure=False, extra_args=["--pki-dir", str(pki_dir)])
        yield SecureFleet(workdir, pki_dir, agent, server)
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def inventory(path: Path, *, pki_dir: Path, name: str, address: str, coordinator: str | None = None) -> Path:
    """An inventory of one agent; `coordinator` names the certificate this side presents (default: its own)."""
    named = f'name = "{coordinator}"\n' if coordinator else ""
    path.write_text(
        f'[coordinator]\n{named}pki_dir = "{pki_dir}"\n\n[[agent]]\nname = "{name}"\naddress = "{address}"\n'
    )
    return path


def probe(fleet: SecureFleet, inventory_path: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = cli(
        "probe",
        f"localhost:{fleet.server.port}",
        "--inventory",
        str(inventory_path),
        "--no-local",
        "--json",
        "--timeout",
        "5",
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout) if done.stdout else {}


def test_probe_over_mutual_tls(secure_fleet: SecureFleet, tmp_path: Path) -> None:
    inv = inventory(
        tmp_path / "inv.toml", pki_dir=secure_fleet.pki_dir, name="edge-1", address=secure_fleet.agent.address
    )
    _done, report = probe(secure_fleet, inv)
    [vantage] = report["vantages"]
    assert vantage["state"] == "ok", vantage["error"]
    assert vantage["result"]["addresses"][0]["handshake"]["failure"] in ("none", "cert_verify")
    assert secure_fleet.agent.events[0]["mtls"] is True


def test_coordinator_from_another_ca_is_refused(secure_fleet: SecureFleet, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other-pki")
    inv = inventory(tmp_path / "inv.toml", pki_dir=other, name="edge-1", address=secure_fleet.agent.address)
    _done, report = probe(secure_fleet, inv)
    [vantage] = report["vantages"]
    assert vantage["state"] == "offline"
    assert vantage["result"] is None


def test_agent_answering_under_another_name_is_refused(secure_fleet: SecureFleet, tmp_path: Path) -> None:
    # The inventory says edge-2 lives at this address, but the certificate there is edge-1's.
    make_more = cli("pki", "issue", "agent", "edge-2", "--dir", str(secure_fleet.pki_dir))
    assert make_more.returncode == 0, make_more.stderr
    inv = inventory(
        tmp_path / "inv.toml", pki_dir=secure_fleet.pki_dir, name="edge-2", address=secure_fleet.agent.address
    )
    _done, report = probe(secure_fleet, inv)
    [vantage] = report["vantages"]
    assert vantage["state"] == "offline"
    assert vantage["result"] is None


def test_coordinator_name_not_allowed_is_refused(secure_fleet: SecureFleet, tmp_path: Path) -> None:
    issued = cli("pki", "issue", "coordinator", "intruder", "--dir", str(secure_fleet.pki_dir))
    assert issued.returncode == 0, issued.stderr
    path = inventory(
        tmp_path / "inv.toml",
        pki_dir=secure_fleet.pki_dir,
        name="edge-1",
        address=secure_fleet.agent.address,
        coordinator="intruder",
    )
    _done, report = probe(secure_fleet, path)
    [vantage] = report["vantages"]
    assert vantage["state"] == "refused"
    assert "intruder" in vantage["error"]


def test_agent_refuses_plaintext_off_loopback(tmp_path: Path) -> None:
    done = cli("agent", "serve", "--name", "edge-9", "--listen", "0.0.0.0:0", "--insecure")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --insecure is refused on 0.0.0.0:0")
    assert "Traceback" not in done.stderr


def test_agent_without_certificates_says_how_to_make_them(tmp_path: Path) -> None:
    done = cli("agent", "serve", "--name", "edge-9", "--listen", "127.0.0.1:0", "--pki-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert "ca.pem" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def streamed_outcomes(inventory_path: Path, port: int, count: int) -> list:
    """`count` probes through one ProbeStream call, as a report run sends them."""
    import asyncio

    from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target
    from tlsfleet.coordinator.fleet.choose import select_vantages

    async def go() -> list:
        [vantage] = select_vantages(
            inventory_path=inventory_path, selector_text=None, include_local=False, streamed=True
        ).vantages
        request = ProbeRequest(Target("localhost", port), ProbeOptions(pin_address="127.0.0.1"))
        try:
            return list(await asyncio.gather(*(vantage.probe(request, 10.0) for _ in range(count))))
        finally:
            await vantage.close()

    return asyncio.run(go())


def test_streamed_probes_over_mutual_tls_and_an_unlisted_coordinator_refused(
    secure_fleet: SecureFleet, tmp_path: Path
) -> None:
    allowed = inventory(
        tmp_path / "inv.toml", pki_dir=secure_fleet.pki_dir, name="edge-1", address=secure_fleet.agent.address
    )
    outcomes = streamed_outcomes(allowed, secure_fleet.server.port, 12)
    assert [o.state.value for o in outcomes] == ["ok"] * 12, [o.error for o in outcomes]
    assert all(o.result is not None and o.result.addresses[0].chain for o in outcomes)

    issued = cli("pki", "issue", "coordinator", "stranger", "--dir", str(secure_fleet.pki_dir))
    assert issued.returncode == 0, issued.stderr
    stranger = inventory(
        tmp_path / "stranger.toml",
        pki_dir=secure_fleet.pki_dir,
        name="edge-1",
        address=secure_fleet.agent.address,
        coordinator="stranger",
    )
    refused = streamed_outcomes(stranger, secure_fleet.server.port, 3)
    assert [o.state.value for o in refused] == ["refused"] * 3, [o.error for o in refused]
    assert all("stranger" in o.error for o in refused)
