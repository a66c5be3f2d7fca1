"""What a real nginx does where a misconfiguration stops clients, and what the findings say of it, proved
against `openssl s_client` and curl on this host.

Each behaviour is reproduced with the lab's own servers (`openssl s_server`, a socket that resets) so that it
runs anywhere; where only nginx itself shows it, the test needs nginx and is skipped without it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import Lab, key_pem, needs_openssl, probe, s_client
from tests.coordinator.diagnosis.real_servers import (
    CURL,
    NAME,
    ServerProcess,
    clients_see,
    curl,
    findings_for,
    free_port,
    installed,
    needs_curl,
    of,
)
from tests.coordinator.diagnosis.real_servers import lab as lab  # the fixture, by its name
from tests.outcomes import observe, outcome, request
from tlsfleet.agent.model import AddressResult, Failure, Party, Starttls
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem

pytestmark = pytest.mark.e2e  # real servers as processes of their own (openssl s_server, nginx)

NGINX = installed("nginx")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed here (Debian: nginx-light)")


# --------------------------------------------------------------------------------------------- nginx


class Nginx(ServerProcess):
    """One nginx master process serving `servers` (server blocks; {port} and {dir} filled in) from `workdir`."""

    def __init__(self, workdir: Path, servers: str) -> None:
        assert NGINX is not None
        self.dir = workdir
        port = free_port()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / sub).mkdir(exist_ok=True)
        body = servers.replace("{port}", str(port)).replace("{dir}", str(workdir))
        temp = " ".join(f"{sub}_temp_path {workdir}/{sub};" for sub in ("proxy", "fastcgi", "uwsgi", "scgi"))
        (workdir / "nginx.conf").write_text(
            f"pid {workdir}/nginx.pid; error_log {workdir}/error.log info; worker_processes 1;\n"
            "events { worker_connections 32; }\n"
            f"http {{ access_log off; client_body_temp_path {workdir}/body; {temp}\n{body}\n}}\n"
        )
        argv = [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"]
        super().__init__(argv, port, workdir / "error.log")


@pytest.fixture
def served(lab: Lab) -> Path:
    """The lab's leaf for NAME with its intermediate, and its key, as nginx reads them."""
    leaf = lab.pki.issue_leaf(NAME)
    write_pem(lab.tmp / "chain.pem", chain_pem(leaf, lab.pki.intermediate))
    write_pem(lab.tmp / "key.pem", key_pem(leaf))
    return lab.tmp


def _nginx(workdir: Path, listen: str, directives: str = "") -> Nginx:
    return Nginx(
        workdir,
        f"server {{ listen 127.0.0.1:{{port}} {listen}; server_name {NAME}; "
        "ssl_certificate {dir}/chain.pem; ssl_certificate_key {dir}/key.pem; "
        f'{directives} location / {{ return 200 "ok\\n"; }} }}',
    )


def _acceptable_ca_names(port: int, cafile: Path) -> list[str]:
    """The CA names `openssl s_client` prints from the server's CertificateRequest."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME, "-CAfile", str(cafile)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
    )
    _, found, rest = done.stdout.partition("Acceptable client certificate CA names\n")
    section = rest.split("\n---")[0].splitlines() if found else []
    return [line for line in section if "=" in line and ":" not in line]  # the names, not the types that follow


# ------------------------------------------------------------------- a client certificate asked for


@needs_openssl
def test_a_certificate_request_the_handshake_survives_without_a_certificate_is_a_note(lab: Lab) -> None:
    """`s_server -verify` asks and finishes without one, as nginx's ssl_verify_client does (on or optional)."""
    client_ca = LabPKI("Acme Client")
    cafile = write_pem(lab.tmp / "client-ca.pem", client_ca.root.cert_pem)
    asking = lab.s_server(lab.pki.issue_leaf(NAME), "-verify", "1", "-CAfile", str(cafile))
    plain = lab.s_server(lab.pki.issue_leaf(NAME))
    truth = s_client(asking.port, NAME, lab.root)
    assert truth.ok and truth.verify_code == 0, truth.output
    assert _acceptable_ca_names(asking.port, lab.root) == ["CN = Acme Client Root CA"]

    result = probe(lab, asking.port, NAME)
    assert result.handshake.failure is Failure.NONE and result.handshake.client_cert_requested
    [note] = of(findings_for(result, asking.port), Cause.CLIENT_CERT_REQUIRED)
    assert note.severity is Severity.INFO
    assert "asks for a client certificate" in note.summary and "'Acme Client Root CA'" in note.summary
    assert "ssl_verify_client on" in note.summary and any(c.startswith("curl ") for c in note.reproduce)

    assert s_client(plain.port, NAME, lab.root).ok
    quiet = probe(lab, plain.port, NAME)
    assert not of(findings_for(quiet, plain.port), Cause.CLIENT_CERT_REQUIRED)


@needs_nginx
@needs_curl
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_nginx_ssl_verify_client_on_finishes_tls_and_refuses_the_request(lab: Lab, served: Path, version: str) -> None:
    """nginx does not end the handshake over a missing client certificate: s_client completes, curl gets 400."""
    client_ca = write_pem(lab.tmp / "client-ca.pem", LabPKI("Acme Client").root.cert_pem)
    server = _nginx(
        served,
        "ssl",
        f"ssl_protocols {version}; ssl_verify_client on; ssl_client_certificate {client_ca};",
    )
    try:
        truth = s_client(server.port, NAME, lab.root)
        assert truth.ok and truth.verify_code == 0, truth.output  # the handshake completes...
        fetched = curl(server.port, lab.root)
        assert (fetched.returncode, fetched.stdout) == (0, "400"), fetched  # ...and the request is refused
        named = _acceptable_ca_names(server.port, lab.root)
        result = probe(lab, server.port, NAME)
    finally:
        server.stop()
    assert (result.handshake.failure, result.handshake.tls_version) == (Failure.NONE, version)
    assert result.handshake.client_cert_requested
    assert result.handshake.acceptable_ca_names == ("CN=Acme Client Root CA",)
    assert named == ["CN = Acme Client Root CA"]
    [note] = of(findings_for(result, server.port), Cause.CLIENT_CERT_REQUIRED)
    assert note.severity is Severity.INFO and "HTTP 400" in note.summary


# --------------------------------------------------------------- a server left with old versions only


@needs_openssl
def test_an_openssl_3_server_limited_to_tls_1_0_answers_internal_error_and_the_fix_says_why(lab: Lab) -> None:
    """OpenSSL 3 at its default security level cannot sign a TLS 1.0 handshake: the server (s_server -tls1 here,
    nginx `ssl_protocols TLSv1` likewise) refuses every ClientHello with internal_error."""
    server = lab.s_server(lab.pki.issue_leaf(NAME), "-tls1")
    truth = s_client(server.port, NAME, lab.root)
    assert not truth.ok and "alert internal error" in truth.output, truth.output

    result = probe(lab, server.port, NAME)
    hs = result.handshake
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "internal_error", Party.SERVER), hs
    [finding] = of(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "TLS 1.0 or 1.1" in finding.summary and "ssl_protocols TLSv1.2 TLSv1.3" in finding.fix
    assert "no suitable signature algorithm" in finding.fix


@needs_nginx
def test_nginx_ssl_protocols_tlsv1_only_is_internal_error_with_no_suitable_signature_algorithm(
    lab: Lab, served: Path
) -> None:
    server = _nginx(served, "ssl", "ssl_protocols TLSv1;")
    try:
        truth = s_client(server.port, NAME, lab.root)
        result = probe(lab, server.port, NAME)
    finally:
        server.stop()
    assert not truth.ok and "alert internal error" in truth.output, truth.output
    assert "no suitable signature algorithm" in server.log()
    assert (result.handshake.failure, result.handshake.alert) == (Failure.TLS_ALERT, "internal_error")
    [finding] = of(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "ssl_protocols TLSv1 TLSv1.1" in finding.summary


# ------------------------------------------------------------------ a port that wants PROXY protocol


@needs_openssl
def test_a_reset_on_the_client_hello_names_a_proxy_protocol_listener(lab: Lab) -> None:
    """A listener that reads the ClientHello as a PROXY header and hangs up with it unread sends a reset."""
    server = lab.raw("reset")
    truth = s_client(server.port, NAME, lab.root)
    assert not truth.ok and "errno=104" in truth.output, truth.output  # ECONNRESET
    result = probe(lab, server.port, NAME)
    assert (result.handshake.failure, result.handshake.refused_by) == (Failure.RESET, Party.SERVER)
    [finding] = of(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "PROXY protocol" in finding.summary and "proxy_protocol" in finding.fix


@needs_nginx
@needs_curl
def test_nginx_proxy_protocol_reached_directly_resets_the_client_hello(lab: Lab, served: Path) -> None:
    server = _nginx(served, "ssl proxy_protocol")
    truth, fetched, result = clients_see(lab, server)
    assert not truth.ok, truth.output
    assert fetched.returncode == 35 and "reset" in fetched.stderr.lower(), fetched
    assert "broken header" in server.log() and "PROXY protocol" in server.log()
    assert (result.handshake.failure, result.handshake.refused_by) == (Failure.RESET, Party.SERVER)
    [finding] = of(findings_for(result, server.port), Cause.HANDSHAKE_INCOMPLETE)
    assert "PROXY protocol" in finding.summary


# ------------------------------------------------------------- an SNI name no virtual host claims


def _default_vhost_finding(result: AddressResult, port: int, name: str) -> Finding:
    req = request(name, port)
    found = diagnose(observe(outcome("local", [result], req=req), req=req))
    [finding] = [f for f in found if f.cause is Cause.HOSTNAME_MISMATCH]
    return finding


@needs_openssl
def test_an_sni_name_no_virtual_host_claims_gets_the_default_certificate_and_the_fix_says_so(lab: Lab) -> None:
    """s_server serves its second certificate to one SNI name and its first to any other, as nginx's
    default_server does: the fix names the virtual host as well as the certificate."""
    other = lab.pki.issue_leaf(NAME)
    cert2 = write_pem(lab.tmp / "named.pem", other.cert_pem)
    key2 = write_pem(lab.tmp / "named.key", key_pem(other))
    server = lab.s_server(
        lab.pki.issue_leaf("default.example.test"), "-servername", NAME, "-cert2", str(cert2), "-key2", str(key2)
    )
    assert "0 s:CN = api.example.test" in s_client(server.port, NAME, lab.root).output  # its own name: cert2
    unknown = "unknown.example.test"
    truth = s_client(server.port, unknown, lab.root, extra=("-verify_hostname", unknown))
    assert not truth.ok and truth.verify_code == 62, truth.output
    assert "0 s:CN = default.example.test" in truth.output

    result = probe(lab, server.port, unknown)
    assert result.native.verify_code == truth.verify_code
    finding = _default_vhost_finding(result, server.port, unknown)
    assert "default one answered" in finding.fix and "server_name" in finding.fix
    assert any("-noservername" in command for command in finding.reproduce)


@needs_nginx
@needs_curl
def test_nginx_default_server_answers_an_sni_name_no_server_block_claims(lab: Lab, served: Path) -> None:
    fallback = lab.pki.issue_leaf("default.example.test")
    write_pem(lab.tmp / "default.pem", chain_pem(fallback, lab.pki.intermediate))
    write_pem(lab.tmp / "default.key", key_pem(fallback))
    unknown = "unknown.example.test"
    server = Nginx(
        served,
        "server { listen 127.0.0.1:{port} ssl default_server; server_name default.example.test; "
        "ssl_certificate {dir}/default.pem; ssl_certificate_key {dir}/default.key; return 200; }\n"
        f"server {{ listen 127.0.0.1:{{port}} ssl; server_name {NAME}; "
        "ssl_certificate {dir}/chain.pem; ssl_certificate_key {dir}/key.pem; return 200; }",
    )
    try:
        assert s_client(server.port, NAME, lab.root, extra=("-verify_hostname", NAME)).ok
        truth = s_client(server.port, unknown, lab.root, extra=("-verify_hostname", unknown))
        assert CURL is not None
        fetched = subprocess.run(
            [
                *(CURL, "-sS", "--noproxy", "*", "-o", "/dev/null", "--cacert", str(lab.root)),
                *("--resolve", f"{unknown}:{server.port}:127.0.0.1", f"https://{unknown}:{server.port}/"),
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        result = probe(lab, server.port, unknown)
    finally:
        server.stop()
    assert not truth.ok and truth.verify_code == 62, truth.output
    assert fetched.returncode == 60, fetched  # curl: the peer's certificate does not match the name
    assert result.native.verify_code == 62
    finding = _default_vhost_finding(result, server.port, unknown)
    assert "'CN=default.example.test'" in finding.summary and "default one answered" in finding.fix


@needs_openssl
@pytest.mark.parametrize(
    ("starttls", "server", "scheme"),
    [(Starttls.SMTP, "smtpd_tls_req_ccert", "smtp"), (Starttls.IMAP, "auth_ssl_require_client_cert", "imap")],
)
def test_the_note_on_a_certificate_asked_for_speaks_the_protocol_of_the_port(
    lab: Lab, starttls: Starttls, server: str, scheme: str
) -> None:
    """Above STARTTLS the refusal is the mail server's (Postfix's 421 to EHLO, Dovecot's login), and curl checks it
    in that protocol: the note says so, not nginx's HTTP 400."""
    client_ca = LabPKI("Acme Client")
    cafile = write_pem(lab.tmp / "client-ca.pem", client_ca.root.cert_pem)
    asking = lab.s_server(lab.pki.issue_leaf(NAME), "-verify", "1", "-CAfile", str(cafile))
    result = probe(lab, asking.port, NAME)
    assert result.handshake.failure is Failure.NONE and result.handshake.client_cert_requested
    base = request(NAME, asking.port)
    req = replace(base, options=replace(base.options, starttls=starttls))
    found = list(diagnose(observe(outcome("local", [result], req=req), req=req)))
    [note] = of(found, Cause.CLIENT_CERT_REQUIRED)
    assert server in note.summary and "HTTP 400" not in note.summary
    [curl] = [c for c in note.reproduce if c.startswith("curl ")]
    assert "--ssl-reqd" in curl and f"{scheme}://{NAME}:{asking.port}/" in curl
