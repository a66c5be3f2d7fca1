"""Servers that ask for a client certificate, under TLS 1.2 and 1.3, with and without `--client-cert`; held
against `openssl s_client` on this host. And the option itself: bad input is refused at start, by name."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.agent.probe.openssl_lab import Lab, needs_openssl, probe, s_client, views, write_client_cert
from tlsfleet import __version__
from tlsfleet.agent import wire
from tlsfleet.agent.cli import AgentServeArguments, build_config
from tlsfleet.agent.errors import UsageError
from tlsfleet.agent.grpc_service import AgentService
from tlsfleet.agent.hostfacts import HostFactsCache
from tlsfleet.agent.model import AgentIdentity, Failure, Party, ProbeOptions, ProbeRequest, Target, Verdict
from tlsfleet.agent.probe.client_certs import ClientCertError, ClientCertificate, load_client_certs
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.request_limits import RequestError
from tlsfleet.agent.probe.tls_messages import certificate_authorities, distinguished_name
from tlsfleet.coordinator.lab.agent_process import agent_command
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc

VERSIONS = {"TLSv1.2": ("-no_tls1_3",), "TLSv1.3": ("-tls1_3",)}
# What a server that demands a certificate and got none says: TLS 1.2 has no certificate_required alert.
NO_CERTIFICATE_ALERT = {"TLSv1.2": "handshake_failure", "TLSv1.3": "certificate_required"}


@pytest.fixture(scope="module")
def clients() -> LabPKI:
    """The CA whose client certificates the servers accept."""
    return LabPKI("Clients")


def demanding(lab: Lab, clients: LabPKI, version: str, *extra: str, verify: str = "-Verify") -> int:
    """An s_server that asks for a client certificate from `clients` (-Verify: requires one; -verify: asks)."""
    ca = write_pem(lab.tmp / "client-ca.pem", clients.root.cert_pem + clients.intermediate.cert_pem)
    leaf = lab.pki.issue_leaf("mtls.test")
    args = (verify, "1", "-CAfile", str(ca), "-verify_return_error", *VERSIONS[version], *extra)
    return lab.s_server(leaf, *args).port


@needs_openssl
@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_required_client_certificate_without_one(lab: Lab, clients: LabPKI, version: str) -> None:
    port = demanding(lab, clients, version)
    truth = s_client(port, "mtls.test", lab.root)
    assert not truth.ok and truth.verify_code == 0, truth.output
    result = probe(lab, port, "mtls.test")
    hs = result.handshake
    assert hs.failure is Failure.CLIENT_CERT_REQUIRED, hs
    assert hs.alert == NO_CERTIFICATE_ALERT[version]
    assert hs.refused_by is Party.SERVER
    assert hs.tls_version == version
    assert hs.client_cert_requested and hs.client_cert == ""
    # The CertificateRequest's certificate_authorities, as RFC 4514 names.
    assert hs.acceptable_ca_names == ("CN=Clients Root CA", "CN=Clients Intermediate CA")
    # The served chain is captured and was accepted before the server refused: "Verify return code: 0".
    assert len(result.chain) == 2
    assert result.native.verdict is Verdict.OK and result.native.verify_code == truth.verify_code
    assert list(views(result)) == ["openssl"]  # no policy difference gets a client a certificate


@needs_openssl
@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_required_client_certificate_presented(lab: Lab, clients: LabPKI, version: str) -> None:
    port = demanding(lab, clients, version)
    billing = write_client_cert(lab.tmp, clients, "billing")
    truth = s_client(port, "mtls.test", lab.root, extra=("-cert", str(billing.cert), "-key", str(billing.key)))
    assert truth.ok, truth.output
    result = probe(lab, port, "mtls.test", client_cert=billing)
    hs = result.handshake
    assert hs.failure is Failure.NONE, hs
    assert hs.refused_by is Party.NONE
    assert hs.client_cert_requested and hs.client_cert == "billing"
    assert result.native.verdict is Verdict.OK


@needs_openssl
@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_client_certificate_the_server_does_not_trust(lab: Lab, clients: LabPKI, version: str) -> None:
    port = demanding(lab, clients, version)
    stranger = write_client_cert(lab.tmp, LabPKI("Strangers"), "stranger")
    truth = s_client(port, "mtls.test", lab.root, extra=("-cert", str(stranger.cert), "-key", str(stranger.key)))
    assert not truth.ok and truth.verify_code == 0, truth.output
    result = probe(lab, port, "mtls.test", client_cert=stranger)
    hs = result.handshake
    # Under TLS 1.3 the server says so only after the client finished: the read after the handshake sees it.
    assert (hs.failure, hs.alert, hs.refused_by) == (Failure.TLS_ALERT, "unknown_ca", Party.SERVER), hs
    assert hs.client_cert_requested and hs.client_cert == "stranger"
    assert result.native.verdict is Verdict.OK


@needs_openssl
def test_an_optional_client_certificate_request(lab: Lab, clients: LabPKI) -> None:
    port = demanding(lab, clients, "TLSv1.3", verify="-verify")
    assert s_client(port, "mtls.test", lab.root).ok
    result = probe(lab, port, "mtls.test")
    assert result.handshake.failure is Failure.NONE, result.handshake
    assert result.handshake.client_cert_requested
    assert result.handshake.acceptable_ca_names == ("CN=Clients Root CA", "CN=Clients Intermediate CA")


@needs_openssl
def test_a_certificate_is_presented_only_when_asked_for(lab: Lab, clients: LabPKI) -> None:
    port = lab.s_server(lab.pki.issue_leaf("plain.test")).port
    result = probe(lab, port, "plain.test", client_cert=write_client_cert(lab.tmp, clients, "billing"))
    assert result.handshake.failure is Failure.NONE
    assert not result.handshake.client_cert_requested and result.handshake.client_cert == ""


@needs_openssl
def test_a_request_without_ca_names(lab: Lab, clients: LabPKI) -> None:
    port = demanding(lab, clients, "TLSv1.2", "-no_ca_names")
    result = probe(lab, port, "mtls.test")
    assert result.handshake.failure is Failure.CLIENT_CERT_REQUIRED
    assert result.handshake.acceptable_ca_names == ()


# ------------------------------------------------------------------------------ by name, through the engine


@needs_openssl
def test_the_engine_presents_the_certificate_a_request_names(lab: Lab, clients: LabPKI) -> None:
    port = demanding(lab, clients, "TLSv1.3")
    billing = write_client_cert(lab.tmp, clients, "billing")
    engine = ProbeEngine(native_cafile=str(lab.root), client_certs={"billing": billing})
    assert engine.client_cert_names() == ("billing",)

    def run(name: str | None):
        options = ProbeOptions(sni="mtls.test", pin_address="127.0.0.1", client_cert=name)
        return asyncio.run(engine.probe(ProbeRequest(Target("mtls.test", port), options)))

    [presented] = run("billing").addresses
    assert presented.handshake.failure is Failure.NONE and presented.handshake.client_cert == "billing"
    [without] = run(None).addresses
    assert without.handshake.failure is Failure.CLIENT_CERT_REQUIRED
    with pytest.raises(RequestError, match=r"client certificate 'payroll' is not configured.*configured: billing"):
        run("payroll")


def test_an_agent_without_client_certificates_refuses_any_name() -> None:
    engine = ProbeEngine()
    request = ProbeRequest(Target("127.0.0.1", 443), ProbeOptions(client_cert="billing"))
    with pytest.raises(RequestError, match=r"'billing' is not configured on this agent; configured: none"):
        asyncio.run(engine.probe(request))


def test_the_grpc_service_refuses_an_unknown_name_and_lists_the_known_ones(tmp_path: Path, clients: LabPKI) -> None:
    billing = write_client_cert(tmp_path, clients, "billing")
    engine = ProbeEngine(client_certs={"billing": billing})
    service = AgentService(
        engine=engine,
        identity=AgentIdentity(name="svc-1", version=__version__),
        facts=HostFactsCache(__version__, os.environ, client_certs=engine.client_cert_names()),
        max_concurrent_probes=2,
        max_waiting_probes=2,
    )

    async def scenario() -> tuple[grpc.aio.AioRpcError, agent_pb2.AgentDescription]:
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                message = wire.request_to_wire(
                    ProbeRequest(Target("127.0.0.1", 443), ProbeOptions(client_cert="payroll"))
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Probe(message, timeout=5)
                described = await stub.Describe(agent_pb2.DescribeRequest(), timeout=5)
                return caught.value, described
        finally:
            await server.stop(None)

    error, described = asyncio.run(scenario())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'payroll'" in error.details() and "billing" in error.details()
    facts = wire.description_from_wire(described).facts
    assert facts.client_certs == ("billing",)
    assert dict(facts.openssl_policy)["source"] == "libssl"


# ---------------------------------------------------------------------------------------- bad input at start


@pytest.fixture
def files(tmp_path: Path, clients: LabPKI) -> dict[str, Path]:
    good = write_client_cert(tmp_path, clients, "good")
    other = write_client_cert(tmp_path, clients, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    key = serialization.load_pem_private_key(other.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return {"cert": good.cert, "key": good.key, "other_key": other.key, "junk": junk, "encrypted": encrypted}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("good={cert},{key}", None),
        ("good={cert}", "is not accepted; use NAME=CERT,KEY"),
        ("Bad_Name={cert},{key}", "name 'Bad_Name' is not accepted"),
        ("good={missing},{key}", "the certificate file {missing} does not exist"),
        ("good={cert},{missing}", "the key file {missing} does not exist"),
        ("good={dir},{key}", "the certificate file {dir} is not a regular file"),
        ("good={junk},{key}", "the certificate file {junk} holds no PEM certificate"),
        ("good={cert},{junk}", "the key file {junk} holds no PEM private key"),
        ("good={cert},{encrypted}", "the key file {encrypted} is encrypted"),
        ("good={cert},{other_key}", "the key {other_key} does not match the certificate {cert}"),
    ],
)
def test_client_cert_options_are_checked_at_start(
    value: str, fragment: str | None, files: dict[str, Path], tmp_path: Path
) -> None:
    paths = {**{k: str(v) for k, v in files.items()}, "missing": str(tmp_path / "missing.pem"), "dir": str(tmp_path)}
    if fragment is None:
        loaded = load_client_certs([value.format(**paths)])
        assert loaded == {"good": ClientCertificate("good", files["cert"], files["key"])}
        return
    with pytest.raises(ClientCertError) as caught:
        load_client_certs([value.format(**paths)])
    assert isinstance(caught.value, UsageError)
    message = str(caught.value)
    assert fragment.format(**paths) in message and "\n" not in message


def test_a_name_given_twice_is_refused(files: dict[str, Path]) -> None:
    value = f"good={files['cert']},{files['key']}"
    with pytest.raises(ClientCertError, match="'good' is given twice"):
        load_client_certs([value, value])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; unreadable files cannot be made")
def test_an_unreadable_key_is_refused(files: dict[str, Path]) -> None:
    files["key"].chmod(0)
    with pytest.raises(ClientCertError, match="cannot read the key file"):
        load_client_certs([f"good={files['cert']},{files['key']}"])


def test_the_agent_configuration_carries_the_checked_certificates(files: dict[str, Path]) -> None:
    args = AgentServeArguments(
        name="edge-1", listen="127.0.0.1:0", insecure=True, client_certs=(f"good={files['cert']},{files['key']}",)
    )
    config = build_config(args)
    assert config.client_certs == {"good": ClientCertificate("good", files["cert"], files["key"])}
    bad = AgentServeArguments(
        name="edge-1", listen="127.0.0.1:0", insecure=True, client_certs=(f"good={files['cert']},{files['junk']}",)
    )
    with pytest.raises(UsageError, match="holds no PEM private key"):
        build_config(bad)


@pytest.mark.e2e
def test_the_agent_command_refuses_a_bad_client_cert_with_one_line(files: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "gone.pem"
    done = subprocess.run(
        [
            *agent_command(),
            "serve",
            "--name",
            "edge-1",
            "--listen",
            "127.0.0.1:0",
            "--insecure",
            "--client-cert",
            f"billing={missing},{files['key']}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: --client-cert billing: the certificate file {missing} does not exist"


# ------------------------------------------------------------------------------ the CertificateRequest's names


@pytest.mark.parametrize(
    "name",
    [
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Clients Root CA")]),
        x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Müller, Schmidt & Co"),
                x509.NameAttribute(NameOID.COMMON_NAME, "#1 +CA="),
            ]
        ),
        x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "multi"),
                    ]
                ),
                x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "pki@example.test")]),
            ]
        ),
    ],
)
def test_distinguished_names_read_as_cryptography_writes_them(name: x509.Name) -> None:
    assert distinguished_name(name.public_bytes()) == name.rfc4514_string()


def test_malformed_names_and_requests_yield_nothing() -> None:
    good = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]).public_bytes()
    for broken in (b"", b"\x30", good[:-1], b"\x31\x00", good[:2] + b"\xff" * 8):
        assert distinguished_name(broken) == ""
    for body in (b"", b"\x01", b"\x00\x00\x05\x00\x2f\x00\x10"):
        assert certificate_authorities(body, tls13=True) == ()
        assert certificate_authorities(body, tls13=False) == ()
