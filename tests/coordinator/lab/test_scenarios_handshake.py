"""Handshakes that break off, end to end: real servers (openssl s_server, the lab's bad modes, a ClientHello
gate), real agents, the real CLI; each scenario's top finding, and an exit code that is never 0."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import struct
from collections.abc import Iterator

import pytest

from tests.coordinator.lab.lab_runs import checked_run, clean_fleet, pid_alive
from tlsfleet.coordinator.diagnosis.model import Cause
from tlsfleet.coordinator.lab.fleet import LabFleet
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.scenarios import SCENARIOS, Scenario
from tlsfleet.coordinator.lab.scenarios_handshake import (
    HANDSHAKE_AGENTS,
    HANDSHAKE_SCENARIOS,
    HelloGate,
    OpenSSLServer,
    offers_tls13,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    yield from clean_fleet(
        tmp_path_factory.mktemp("handshake-fleet"), agents=HANDSHAKE_AGENTS, scenarios=HANDSHAKE_SCENARIOS
    )


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", HANDSHAKE_SCENARIOS, ids=[s.name for s in HANDSHAKE_SCENARIOS])
def test_handshake_scenario_top_finding(fleet: LabFleet, scenario: Scenario) -> None:
    run = checked_run(fleet, scenario)
    assert "Traceback" not in run.probe.stderr, run.probe.stderr
    assert run.symptom_problem is None, f"{scenario.name} ({scenario.story}): {run.symptom_problem}"
    assert run.findings_reported, "the probe report carries no findings"
    assert run.finding_problem is None, f"{scenario.name} ({scenario.story}) on {run.target}: {run.finding_problem}"
    # Never "no findings" and exit 0 when a handshake failed.
    assert run.probe.exit_code == 1, f"exit code {run.probe.exit_code}: {run.probe.stderr[-400:]}"


@pytest.mark.e2e
def test_servers_the_scenarios_started_are_gone_after_the_run(fleet: LabFleet) -> None:
    scenario = next(s for s in HANDSHAKE_SCENARIOS if s.name == "weak-dh")
    with fleet.deploy(scenario) as deployment:
        (server,) = deployment.stage.kept
        assert isinstance(server, OpenSSLServer) and pid_alive(server.pid)
        pid = server.pid
    assert not pid_alive(pid), "openssl s_server outlived its scenario"


def test_the_handshake_catalogue_covers_its_causes_and_agents() -> None:
    covered = {s.expect.cause for s in HANDSHAKE_SCENARIOS}
    assert {
        Cause.HANDSHAKE_INCOMPLETE,
        Cause.CLIENT_CERT_REQUIRED,
        Cause.CERTIFICATE_TOO_LARGE,
        Cause.WEAK_KEY_EXCHANGE,
        Cause.CLIENT_VIEWS_DIFFER,
        Cause.PROTOCOL_MISMATCH,
    } <= covered
    names = [s.name for s in (*SCENARIOS, *HANDSHAKE_SCENARIOS)]
    assert len(set(names)) == len(names), "scenario names are unique across the catalogues"
    agents = {a.name for a in HANDSHAKE_AGENTS}
    for scenario in HANDSHAKE_SCENARIOS:
        assert set(scenario.agents) <= agents, scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.expect.cause is not None and scenario.expect.severity is not None, scenario.name


def _client_hello(tls13: bool) -> bytes:
    """A ClientHello record as Python's client sends it, with or without TLS 1.3."""
    context = ssl.create_default_context()
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_hostname="api.example.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def test_offers_tls13_reads_supported_versions() -> None:
    assert offers_tls13(_client_hello(tls13=True)) is True
    assert offers_tls13(_client_hello(tls13=False)) is False
    assert offers_tls13(b"SSH-2.0-OpenSSH_9.6\r\n") is None
    assert offers_tls13(_client_hello(tls13=True)[:20]) is None


@pytest.mark.e2e
def test_hello_gate_resets_after_the_client_hello() -> None:
    with (
        HelloGate("127.0.0.1", 0, lambda _hello: "reset") as gate,
        socket.create_connection((gate.host, gate.port), timeout=5) as conn,
    ):
        conn.sendall(_client_hello(tls13=True))
        with pytest.raises(ConnectionResetError):
            conn.recv(1)


@pytest.mark.e2e
def test_openssl_server_serves_and_stops() -> None:
    pki = LabPKI("Gate")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = OpenSSLServer("127.0.0.1", port, pki.issue_leaf("localhost"), (pki.intermediate,), ("-tls1_3",))
    try:

        async def hello() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_client_hello(tls13=True))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(5), 5)
            writer.close()
            return data

        answer = asyncio.run(hello())
        assert answer[:1] == b"\x16" and struct.unpack("!H", answer[1:3])[0] == 0x0303  # a ServerHello record
    finally:
        server.stop()
    assert not pid_alive(server.pid)
