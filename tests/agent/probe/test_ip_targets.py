"""IP targets as people type them, against a real server on ::1: the name checked is the address alone (an IPv6
zone says which link to connect on, and no certificate names it), and no SNI is sent for an address."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.agent.model import ProbeOptions, ProbeRequest, ProbeResult, Verdict
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.targets import parse_target
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")


@pytest.fixture
def server(pki: LabPKI) -> Iterator[TlsServer]:
    running = TlsServer(ServedIdentity.of(pki.issue_leaf("::1", common_name="v6"), pki.intermediate), host="::1")
    running.start()
    yield running
    running.stop()


def _probe(pki: LabPKI, tmp_path: Path, text: str) -> ProbeResult:
    root = write_pem(tmp_path / "root.pem", pki.root.cert_pem)
    engine = ProbeEngine(extra_stores={}, environ={}, native_cafile=str(root))
    return asyncio.run(engine.probe(ProbeRequest(parse_target(text), ProbeOptions(), request_id="v6")))


@pytest.mark.parametrize("spelled", ["[::1]:{port}", "[0:0:0:0:0:0:0:1]:{port}", "https://[::1]:{port}/path"])
def test_an_ipv6_target_is_checked_against_its_ip_san(
    pki: LabPKI, tmp_path: Path, server: TlsServer, spelled: str
) -> None:
    result = _probe(pki, tmp_path, spelled.format(port=server.port))
    assert (result.sni, result.expected_name) == (None, "::1")
    [address] = result.addresses
    assert address.native.verdict is Verdict.OK, address


def test_a_zone_is_for_connecting_and_the_address_alone_is_checked(
    pki: LabPKI, tmp_path: Path, server: TlsServer
) -> None:
    # A numeric zone: the resolver takes a zone by name on link-local addresses only.
    result = _probe(pki, tmp_path, f"[::1%{socket.if_nametoindex('lo')}]:{server.port}")
    assert (result.sni, result.expected_name) == (None, "::1")
    [address] = result.addresses
    assert address.native.verdict is Verdict.OK, address
    assert address.handshake.error == ""
