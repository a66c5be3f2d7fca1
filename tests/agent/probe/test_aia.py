"""Fetching a missing intermediate from the AIA URL: only when allowed, bounded, and judged for real."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target, Verdict
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-cert")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[tuple[http.server.ThreadingHTTPServer, type[_Files]]]:
    handler = type("Files", (_Files,), {"files": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for the loop to notice, 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def probe(engine: ProbeEngine, port: int) -> object:
    request = ProbeRequest(Target("localhost", port), ProbeOptions(handshake_timeout=3, connect_timeout=2))
    [address] = asyncio.run(engine.probe(request)).addresses
    return address


def leaf_only_server(pki: LabPKI, url: str) -> TlsServer:
    leaf = pki.issue_leaf("localhost", aia_ca_issuers_url=url)
    return TlsServer(ServedIdentity.of(leaf), host="127.0.0.1")


def test_fetched_intermediate_completes_the_chain(http_server, tmp_path: Path) -> None:
    server, handler = http_server
    pki = LabPKI("Aia")
    handler.files["/int.der"] = pki.intermediate.der
    url = f"http://127.0.0.1:{server.server_port}/int.der"
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    engine = ProbeEngine(fetch_aia=True, native_cafile=str(root), environ={"SSL_CERT_FILE": str(root)})
    with leaf_only_server(pki, url) as tls:
        address = probe(engine, tls.port)
    assert address.native.verdict is Verdict.UNKNOWN_ISSUER
    assert address.aia is not None
    assert address.aia.url == url
    assert address.aia.fetched and address.aia.completes_chain
    assert address.aia.verdict is Verdict.OK
    assert address.aia.certificate == pki.intermediate.der


def test_a_failing_url_is_reported_not_raised(http_server, tmp_path: Path) -> None:
    server, _handler = http_server
    pki = LabPKI("Aia")
    url = f"http://127.0.0.1:{server.server_port}/missing.der"
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    engine = ProbeEngine(fetch_aia=True, native_cafile=str(root), environ={"SSL_CERT_FILE": str(root)})
    with leaf_only_server(pki, url) as tls:
        address = probe(engine, tls.port)
    assert address.aia is not None
    assert not address.aia.fetched and not address.aia.completes_chain
    assert "HTTP 404" in address.aia.error


def test_the_wrong_certificate_does_not_complete_the_chain(http_server, tmp_path: Path) -> None:
    server, handler = http_server
    pki = LabPKI("Aia")
    handler.files["/int.der"] = LabPKI("Other").intermediate.der
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    engine = ProbeEngine(fetch_aia=True, native_cafile=str(root), environ={"SSL_CERT_FILE": str(root)})
    with leaf_only_server(pki, f"http://127.0.0.1:{server.server_port}/int.der") as tls:
        address = probe(engine, tls.port)
    assert address.aia is not None and address.aia.fetched
    assert not address.aia.completes_chain
    assert "not the issuer" in address.aia.error


def test_no_fetch_unless_the_agent_allows_it(http_server, tmp_path: Path) -> None:
    server, handler = http_server
    pki = LabPKI("Aia")
    handler.files["/int.der"] = pki.intermediate.der
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    engine = ProbeEngine(native_cafile=str(root), environ={"SSL_CERT_FILE": str(root)})
    with leaf_only_server(pki, f"http://127.0.0.1:{server.server_port}/int.der") as tls:
        address = probe(engine, tls.port)
    assert address.native.verdict is Verdict.UNKNOWN_ISSUER
    assert address.aia is None
