"""Ground truth on this host: real `openssl s_server` processes, `openssl s_client` as the OpenSSL client
with the host's defaults, and the agent's handshake run in a child process under a chosen OpenSSL
configuration (OpenSSL reads OPENSSL_CONF once, at process start, so a policy needs its own process).

`s_client` is read by its exit status and OpenSSL's numeric verify code, never by message wording.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsfleet.agent.model import AddressResult
from tlsfleet.agent.probe.client_certs import ClientCertificate
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command line is not installed here")
START_TIMEOUT_S = 10.0
HTTP_GET = b"GET / HTTP/1.0\r\n\r\n"


# ----------------------------------------------------------------------------------------- certificates


def rsa_leaf(pki: LabPKI, name: str, bits: int = 2048) -> Issued:
    """A server certificate with an RSA key (the lab's own leaves are P-256), from the lab intermediate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return Issued(cert, key)  # type: ignore[arg-type]  # Issued holds any private key


def client_leaf(pki: LabPKI, name: str) -> Issued:
    """A client certificate (clientAuth) for `name`, from the lab intermediate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return Issued(cert, key)


def key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_client_cert(tmp: Path, pki: LabPKI, name: str) -> ClientCertificate:
    """The client certificate (with the intermediate) and key as files, as --client-cert names them."""
    leaf = client_leaf(pki, name)
    cert = write_pem(tmp / f"{name}-client.pem", leaf.cert_pem + pki.intermediate.cert_pem)
    key = write_pem(tmp / f"{name}-client.key", key_pem(leaf))
    return ClientCertificate(name=name, cert=cert, key=key)


def policy_file(tmp: Path, name: str, *directives: str) -> Path:
    """An OpenSSL configuration whose system_default section holds `directives` ("MinProtocol = TLSv1.3")."""
    path = tmp / f"{name}.cnf"
    path.write_text(
        "openssl_conf = tlsfleet_test\n\n[tlsfleet_test]\nssl_conf = tlsfleet_ssl\n\n"
        "[tlsfleet_ssl]\nsystem_default = tlsfleet_system_default\n\n[tlsfleet_system_default]\n"
        + "".join(f"{d}\n" for d in directives)
    )
    return path


def env_with(config: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    if config is not None:
        env["OPENSSL_CONF"] = str(config)
    return env


# ------------------------------------------------------------------------------------------------ servers


@dataclass
class SServer:
    """One `openssl s_server` process on 127.0.0.1 (a free port)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Lab:
    """Files and server processes of one test; everything started is stopped at the end."""

    tmp: Path
    pki: LabPKI
    servers: list[SServer] = field(default_factory=list)
    sockets: list[RawServer] = field(default_factory=list)

    @property
    def root(self) -> Path:
        path = self.tmp / "root.pem"
        if not path.exists():
            write_pem(path, self.pki.root.cert_pem)
        return path

    def s_server(self, leaf: Issued, *args: str, www: bool = True, chain: Sequence[Issued] | None = None) -> SServer:
        """`openssl s_server` serving `leaf` (and the intermediate) with `args`, under the default configuration."""
        assert OPENSSL is not None
        index = len(self.servers)
        cert = write_pem(self.tmp / f"server{index}.pem", leaf.cert_pem)
        key = write_pem(self.tmp / f"server{index}.key", key_pem(leaf))
        issuers = (self.pki.intermediate,) if chain is None else tuple(chain)
        command = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", str(cert), "-key", str(key)]
        if issuers:
            bundle = write_pem(self.tmp / f"server{index}-chain.pem", b"".join(i.cert_pem for i in issuers))
            command += ["-cert_chain", str(bundle)]
        if www:
            command.append("-www")
        command += list(args)
        log = self.tmp / f"server{index}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env_with(None)
            )
        server = SServer(process, 0, log)
        self.servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = re.search(rb"^ACCEPT .*:(\d+)$", log.read_bytes(), re.M)
            if found:
                server.port = int(found.group(1))
                return server
            if process.poll() is not None:
                raise AssertionError(f"s_server {args} exited: {log.read_text(errors='replace')}")
            time.sleep(0.02)
        raise AssertionError(f"s_server {args} did not start: {log.read_text(errors='replace')}")

    def raw(self, behaviour: str) -> RawServer:
        server = RawServer(behaviour).start()
        self.sockets.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        for raw in self.sockets:
            raw.stop()


class RawServer:
    """A TCP server that reads the ClientHello, then misbehaves: `reset` (RST), `close` (FIN), `garbage` (an SSH
    banner and bytes), `http` (a plain HTTP answer, as from a port that speaks HTTP) or `no_renegotiation_info`
    (a TLS 1.2 ServerHello without the RFC 5746 extension, as from a TLS stack older than 2010, then silence)."""

    def __init__(self, behaviour: str) -> None:
        if behaviour not in ("reset", "close", "garbage", "http", "no_renegotiation_info"):
            raise ValueError(behaviour)
        self.behaviour = behaviour
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RawServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    conn.recv(16384)
                    if self.behaviour == "garbage":
                        conn.sendall(b"SSH-2.0-OpenSSH_9.6 this is not TLS\r\n" + bytes(range(256)))
                        time.sleep(0.2)
                    elif self.behaviour == "http":
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        time.sleep(0.2)
                    elif self.behaviour == "no_renegotiation_info":
                        conn.sendall(_legacy_server_hello())
                        time.sleep(0.1)
                    elif self.behaviour == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


def _legacy_server_hello() -> bytes:
    """A TLS 1.2 ServerHello choosing ECDHE-RSA-AES128-GCM-SHA256, with no extensions at all."""
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    message = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message


# ----------------------------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class Truth:
    """One `openssl s_client -verify_return_error` connection: what an OpenSSL client on this host gets."""

    returncode: int
    verify_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def s_client(
    port: int,
    servername: str,
    cafile: Path,
    *,
    config: Path | None = None,
    extra: Sequence[str] = (),
) -> Truth:
    """`openssl s_client -connect ... -servername ... -verify_return_error -CAfile ...` sending a GET and
    reading until the server closes (`-ign_eof`), so a TLS 1.3 alert after the handshake is seen too."""
    assert OPENSSL is not None
    command = [
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        servername,
        "-verify_return_error",
        "-CAfile",
        str(cafile),
        "-ign_eof",
        *extra,
    ]
    done = subprocess.run(command, input=HTTP_GET, capture_output=True, timeout=20, env=env_with(config))
    text = (done.stdout + done.stderr).decode(errors="replace")
    failed = re.search(r"verify error:num=(\d+)", text)
    returned = re.findall(r"Verify return code: (\d+)", text)
    code = int(failed.group(1)) if failed else int(returned[-1]) if returned else 0
    return Truth(done.returncode, code, text[-3000:])


def probe(
    lab: Lab,
    port: int,
    name: str,
    *,
    client_cert: ClientCertificate | None = None,
    cache: ContextCache | None = None,
    **options: object,
) -> AddressResult:
    """The agent's handshake in this process (the default OpenSSL configuration)."""
    timeouts: dict[str, object] = {"connect_timeout": 3.0, "handshake_timeout": 5.0, **options}
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=name,
            expected_name=name,
            context_cache=cache if cache is not None else ContextCache(cafile=str(lab.root)),
            client_cert=client_cert,
            **timeouts,  # type: ignore[arg-type]
        )
    )


_CHILD = r"""
import asyncio, json, socket, ssl, sys
from dataclasses import asdict
from tlsfleet.agent.probe.client_certs import ClientCertificate
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.openssl_policy import host_policy

def plain_python(spec):
    # What a plain Python client (ssl.create_default_context) gets: the python view's yardstick.
    context = ssl.create_default_context(cafile=spec["cafile"])
    if spec.get("max_version"):
        context.maximum_version = getattr(ssl.TLSVersion, spec["max_version"].replace(".", "_"))
    try:
        with socket.create_connection(("127.0.0.1", spec["port"]), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=spec["name"]) as tls:
                return {"ok": True, "version": tls.version(), "cipher": tls.cipher()[0], "verify_code": 0}
    except ssl.SSLCertVerificationError as error:
        return {"ok": False, "verify_code": error.verify_code, "reason": "CERTIFICATE_VERIFY_FAILED"}
    except ssl.SSLError as error:
        return {"ok": False, "verify_code": 0, "reason": error.reason}
    except OSError as error:
        return {"ok": False, "verify_code": 0, "reason": type(error).__name__}

async def main(specs):
    out = []
    for spec in specs:
        cert = spec.get("client_cert")
        result = await handshake(
            "127.0.0.1", spec["port"], server_hostname_for_sni=spec["name"], expected_name=spec["name"],
            connect_timeout=3.0, handshake_timeout=5.0, context_cache=ContextCache(cafile=spec["cafile"]),
            max_version=spec.get("max_version"), min_version=spec.get("min_version"),
            client_cert=ClientCertificate(**cert) if cert else None,
        )
        item = asdict(result)
        item.pop("chain")
        item["chain_length"] = len(result.chain)
        item["plain_python"] = plain_python(spec)
        out.append(item)
    return out

specs = json.loads(sys.argv[1])
print(json.dumps({"policy": list(host_policy().facts()), "results": asyncio.run(main(specs))}, default=str))
"""


def probe_in_child(config: Path | None, specs: Sequence[Mapping[str, object]]) -> tuple[dict[str, str], list[dict]]:
    """The agent's handshakes in a child process started with OPENSSL_CONF=`config`: (policy facts, results
    as plain data, each with `plain_python`: what `ssl.create_default_context()` got there)."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(list(specs))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_with(config),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    return dict(data["policy"]), data["results"]


def views(result: dict | AddressResult) -> dict[str, dict]:
    """The client views of a result by client name (plain data)."""
    if isinstance(result, AddressResult):
        return {str(v.client): {**v.__dict__, "client": str(v.client)} for v in result.views}
    return {v["client"]: v for v in result["views"]}


@pytest.fixture
def lab(pki: LabPKI, tmp_path: Path) -> Iterator[Lab]:
    """Files and `openssl s_server` processes for one test; every process is stopped at the end."""
    started = Lab(tmp_path, pki)
    try:
        yield started
    finally:
        started.stop()
