"""Lab scenarios whose handshake breaks off: servers that stall, reset, close or speak no TLS, a TLS-1.0-only
server, client certificates required (TLS 1.2 and 1.3), a certificate message over 100 KiB, a 1024-bit DH
group, a static-RSA-only server, and a front that only some vantages get through.

Each serves on its own addresses under `api.<scenario>.lab.test`, through real `openssl s_server` processes,
the lab's `TlsServer` in its bad modes, or a small socket server of its own (`HelloGate`, which reads the
ClientHello and then resets, closes or relays it), and names the top finding it must produce. Run them with
`LabFleet(workdir, agents=HANDSHAKE_AGENTS, scenarios=HANDSHAKE_SCENARIOS)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..diagnosis.model import Cause, Severity
from .background_server import BackgroundServer
from .dh_groups import oakley_group_2_pem
from .pki import Issued, LabPKI
from .scenarios import STANDARD_AGENTS, AgentSpec, Expect, Requirement, Scenario, Stage
from .symptoms import Symptom, handshake
from .tls_server import ServedIdentity, TlsServer

__all__ = [
    "HANDSHAKE_AGENTS",
    "HANDSHAKE_SCENARIOS",
    "HelloGate",
    "OpenSSLServer",
    "offers_tls13",
]

OPENSSL = shutil.which("openssl") or "openssl"
_START_TIMEOUT_S = 10.0
_READ = 64 * 1024
MANY_SANS = 5000  # about 150 KiB of certificate: over OpenSSL's 100 KiB limit for a Certificate message
_PAIR = ("trusting", "trusting-2")
# Below critical, a Java store without the lab's root would tie with the expected warning (see scenarios.py).
_QUIET: frozenset[Requirement] = frozenset({"java-view"})

HANDSHAKE_AGENTS: tuple[AgentSpec, ...] = tuple(
    a for a in STANDARD_AGENTS if a.name in ("trusting", "trusting-2", "tls12-only")
)


# ------------------------------------------------------------------------------------------- servers


class OpenSSLServer:
    """`openssl s_server` on `host`:`port` with a chain and key, plus `args`; started at once, stopped by PID."""

    def __init__(
        self,
        host: str,
        port: int,
        leaf: Issued,
        chain: Sequence[Issued],
        args: Sequence[str] = (),
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._workdir = Path(tempfile.mkdtemp(prefix="tlsfleet-s-server-"))
        try:
            (self._workdir / "leaf.pem").write_bytes(leaf.cert_pem)
            key = self._workdir / "leaf.key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(leaf.key_pem)
            (self._workdir / "chain.pem").write_bytes(b"".join(c.cert_pem for c in chain))
            for name, data in (files or {}).items():
                (self._workdir / name).write_bytes(data)
            accept = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            command = [OPENSSL, "s_server", "-accept", accept, "-cert", "leaf.pem", "-key", "leaf.key", "-no_ticket"]
            if chain:
                command += ["-cert_chain", "chain.pem"]
            command += list(args)
            # stdin stays open: s_server ends a connection when it reads end-of-file there.
            self._process = subprocess.Popen(
                command, cwd=self._workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        try:
            self._wait_accepting(" ".join(args))
        except BaseException:
            self.stop()
            raise
        # s_server reports every connection on stdout; a full pipe would stall it.
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _wait_accepting(self, what: str) -> None:
        assert self._process.stdout is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self._process.stdout.readline().decode(errors="replace")
            if not line:
                break
            seen.append(line.rstrip())
            if line.startswith("ACCEPT"):
                return
        raise RuntimeError(
            f"openssl s_server ({what}) did not start on {self.host}:{self.port}: {' | '.join(seen[-5:])}"
        )

    def _drain(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):
            while stdout.read(_READ):
                pass

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self._workdir, ignore_errors=True)


GateAction = Literal["reset", "close", "relay"]


def offers_tls13(hello: bytes) -> bool | None:
    """Whether a ClientHello (the first TLS record) offers TLS 1.3 in supported_versions; None when `hello`
    is not a whole ClientHello."""
    try:
        if len(hello) < 5 or hello[0] != 22:
            return None
        (record_length,) = struct.unpack("!H", hello[3:5])
        body = hello[5 : 5 + record_length]
        if len(body) < record_length or body[0] != 1:
            return None
        at = 4 + 2 + 32  # handshake header, legacy_version, random
        at += 1 + body[at]  # session id
        (suites,) = struct.unpack("!H", body[at : at + 2])
        at += 2 + suites
        at += 1 + body[at]  # compression methods
        (extensions,) = struct.unpack("!H", body[at : at + 2])
        at += 2
        end = at + extensions
        while at + 4 <= end:
            kind, length = struct.unpack("!HH", body[at : at + 4])
            data = body[at + 4 : at + 4 + length]
            if kind == 0x002B:  # supported_versions: a length byte, then two bytes per version
                versions = {data[i : i + 2] for i in range(1, 1 + data[0], 2)}
                return b"\x03\x04" in versions
            at += 4 + length
        return False
    except (IndexError, struct.error):
        return None


class HelloGate(BackgroundServer):
    """Reads each connection's ClientHello, then resets the connection, closes it, or relays it to
    `backend` (host, port): `decide(hello)` chooses. A middlebox, or a server's front, in a few lines."""

    kind = "hello gate"

    def __init__(
        self,
        host: str,
        port: int,
        decide: Callable[[bytes], GateAction],
        backend: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(host, port)
        self._decide = decide
        self._backend = backend
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            hello = await self._read_hello(reader)
            action: GateAction = self._decide(hello)
            if action == "relay" and self._backend is not None:
                await self._relay(hello, reader, writer)
            elif action == "reset":
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _read_hello(reader: asyncio.StreamReader) -> bytes:
        async with asyncio.timeout(5.0):
            head = await reader.readexactly(5)
            (length,) = struct.unpack("!H", head[3:5])
            return head + await reader.readexactly(length)

    async def _relay(self, hello: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._backend is not None
        up_reader, up_writer = await asyncio.open_connection(*self._backend)
        try:
            up_writer.write(hello)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(_READ):
                    dst.write(data)
                    await dst.drain()
                with contextlib.suppress(OSError):
                    dst.write_eof()

            async with asyncio.timeout(15.0):
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        finally:
            up_writer.transport.abort()


# -------------------------------------------------------------------------------------- certificates


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rsa_leaf(pki: LabPKI, *names: str, bits: int = 2048) -> Issued:
    """An RSA server certificate from `pki`'s intermediate, usable for static RSA key transport (its keyUsage
    allows keyEncipherment) as for (EC)DHE."""
    key = rsa.generate_private_key(65537, bits)
    issuer = pki.intermediate
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    certificate = builder.sign(issuer.key, hashes.SHA256())
    return Issued(certificate, cast(Any, key))  # the lab PKI's leaves are EC; this one is RSA


_CLIENT_CA: dict[str, LabPKI] = {}


def _client_ca() -> LabPKI:
    """The CA the client-certificate servers accept (no agent holds a certificate from it)."""
    if "ca" not in _CLIENT_CA:
        _CLIENT_CA["ca"] = LabPKI("Acme Client")
    return _CLIENT_CA["ca"]


# ---------------------------------------------------------------------------------------------- builds


def _good(stage: Stage) -> ServedIdentity:
    return ServedIdentity.of(stage.acme.issue_leaf(stage.host), stage.acme.intermediate)


def _mode_server(stage: Stage, mode: Literal["stall", "garbage", "close"]) -> None:
    stage.keep(TlsServer(None, host=stage.address(), port=stage.port, mode=mode).start())


def _build_stall(stage: Stage) -> None:
    _mode_server(stage, "stall")


def _build_close(stage: Stage) -> None:
    _mode_server(stage, "close")


def _build_not_tls(stage: Stage) -> None:
    _mode_server(stage, "garbage")


def _build_reset(stage: Stage) -> None:
    stage.keep(HelloGate(stage.address(), stage.port, lambda _hello: "reset").start())


def _s_server(stage: Stage, leaf: Issued, *args: str, files: Mapping[str, bytes] | None = None) -> None:
    stage.keep(OpenSSLServer(stage.address(), stage.port, leaf, (stage.acme.intermediate,), args, files))


def _build_tls10_only(stage: Stage) -> None:
    # The server must be willing to sign TLS 1.0's legacy handshake: security level 0.
    _s_server(stage, stage.acme.issue_leaf(stage.host), "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")


def _build_client_cert(stage: Stage, *tls12: str) -> None:
    files = {"client-ca.pem": _client_ca().root_pem()}
    _s_server(stage, stage.acme.issue_leaf(stage.host), "-Verify", "1", "-CAfile", "client-ca.pem", *tls12, files=files)


def _build_client_cert_tls13(stage: Stage) -> None:
    _build_client_cert(stage)


def _build_client_cert_tls12(stage: Stage) -> None:
    _build_client_cert(stage, "-no_tls1_3")


def _build_cert_too_large(stage: Stage) -> None:
    names = [f"san-{i}.many.{stage.scenario.name}.lab.test" for i in range(MANY_SANS)]
    leaf = stage.acme.issue_leaf(stage.host, *names)
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_weak_dh(stage: Stage) -> None:
    args = ("-no_tls1_3", "-cipher", "DHE-RSA-AES128-GCM-SHA256@SECLEVEL=0", "-dhparam", "dh1024.pem")
    _s_server(stage, rsa_leaf(stage.acme, stage.host), *args, files={"dh1024.pem": oakley_group_2_pem()})


def _build_static_rsa(stage: Stage) -> None:
    _s_server(stage, rsa_leaf(stage.acme, stage.host), "-no_tls1_3", "-cipher", "AES128-GCM-SHA256")


def _build_tls13_front(stage: Stage) -> None:
    """A front that relays TLS 1.3 ClientHellos to the server and closes on the others (no alert)."""
    backend = TlsServer(_good(stage), host="127.0.0.1", port=0, min_version=ssl.TLSVersion.TLSv1_3).start()
    stage.keep(backend)
    gate = HelloGate(
        stage.address(),
        stage.port,
        lambda hello: "relay" if offers_tls13(hello) else "close",
        backend=(backend.host, backend.port),
    )
    stage.keep(gate.start())


# ------------------------------------------------------------------------------------------- catalogue


def _failures(expected: Mapping[str, str | tuple[str, ...]], what: str) -> Symptom:
    """Every address each agent probed ended its handshake in this failure (or one of these)."""

    def accept(failures: tuple[str, ...]) -> Any:
        return lambda a: a["connect_failure"] == "none" and a["handshake"]["failure"] in failures

    return handshake(
        {agent: accept((f,) if isinstance(f, str) else f) for agent, f in expected.items()}, f"expected {what}"
    )


def _catalogue() -> tuple[Scenario, ...]:
    return (
        Scenario(
            "handshake-stall",
            "The server accepts TCP and never answers the ClientHello (a hung TLS listener):",
            _PAIR,
            Expect(Cause.HANDSHAKE_INCOMPLETE, _PAIR, Severity.CRITICAL, mentions="no ServerHello within"),
            _build_stall,
            _failures(dict.fromkeys(_PAIR, "handshake_timeout"), "a handshake timeout everywhere"),
        ),
        Scenario(
            "handshake-reset",
            "Something resets every connection right after the ClientHello (a firewall or IPS):",
            _PAIR,
            Expect(Cause.HANDSHAKE_INCOMPLETE, _PAIR, Severity.CRITICAL, mentions="reset right after the ClientHello"),
            _build_reset,
            _failures(dict.fromkeys(_PAIR, "reset"), "a reset everywhere"),
        ),
        Scenario(
            "handshake-close",
            "The server reads the ClientHello and closes the connection without a word:",
            _PAIR,
            Expect(Cause.HANDSHAKE_INCOMPLETE, _PAIR, Severity.CRITICAL, mentions="closed right after the ClientHello"),
            _build_close,
            _failures(dict.fromkeys(_PAIR, "closed"), "a close everywhere"),
        ),
        Scenario(
            "not-tls",
            "The port answers with something that is not TLS (an SSH banner and bytes):",
            _PAIR,
            Expect(Cause.HANDSHAKE_INCOMPLETE, _PAIR, Severity.CRITICAL, mentions="is not TLS"),
            _build_not_tls,
            _failures(dict.fromkeys(_PAIR, "not_tls"), "not TLS everywhere"),
        ),
        Scenario(
            "tls10-only",
            "A server that speaks TLS 1.0 only (openssl s_server -tls1): no current client completes.",
            (*_PAIR, "tls12-only"),
            Expect(Cause.PROTOCOL_MISMATCH, (*_PAIR, "tls12-only"), Severity.CRITICAL, mentions="TLSv1"),
            _build_tls10_only,
            _failures(
                dict.fromkeys((*_PAIR, "tls12-only"), ("protocol_error", "tls_alert", "no_common_version")),
                "a version failure everywhere",
            ),
        ),
        Scenario(
            "client-cert-tls13",
            "The server requires a client certificate from a CA no agent holds one from (TLS 1.3).",
            _PAIR,
            Expect(Cause.CLIENT_CERT_REQUIRED, _PAIR, Severity.WARNING, mentions="Acme Client Root CA"),
            _build_client_cert_tls13,
            _failures(dict.fromkeys(_PAIR, "client_cert_required"), "client_cert_required everywhere"),
            needs=_QUIET,
        ),
        Scenario(
            "client-cert-tls12",
            "The server requires a client certificate from a CA no agent holds one from (TLS 1.2).",
            _PAIR,
            Expect(Cause.CLIENT_CERT_REQUIRED, _PAIR, Severity.WARNING, mentions="Acme Client Root CA"),
            _build_client_cert_tls12,
            _failures(dict.fromkeys(_PAIR, "client_cert_required"), "client_cert_required everywhere"),
            needs=_QUIET,
        ),
        Scenario(
            "cert-over-100k",
            f"A certificate with {MANY_SANS} names: its Certificate message is over OpenSSL's 100 KiB limit.",
            _PAIR,
            Expect(Cause.CERTIFICATE_TOO_LARGE, _PAIR, Severity.CRITICAL, mentions="100 KiB"),
            _build_cert_too_large,
            _failures(dict.fromkeys(_PAIR, "cert_too_large"), "cert_too_large everywhere"),
        ),
        Scenario(
            "weak-dh",
            "DHE only, TLS 1.2, with a 1024-bit Diffie-Hellman group: clients refuse it.",
            _PAIR,
            Expect(Cause.WEAK_KEY_EXCHANGE, _PAIR, Severity.CRITICAL, mentions="Diffie-Hellman"),
            _build_weak_dh,
            _failures(dict.fromkeys(_PAIR, "weak_key_exchange"), "weak_key_exchange everywhere"),
        ),
        Scenario(
            "static-rsa-only",
            "Static RSA key exchange only: OpenSSL clients connect, Python's default context does not.",
            _PAIR,
            Expect(Cause.CLIENT_VIEWS_DIFFER, _PAIR, Severity.WARNING, mentions="static RSA"),
            _build_static_rsa,
            handshake(
                dict.fromkeys(
                    _PAIR,
                    lambda a: (
                        a["handshake"]["failure"] == "none"
                        and any(v["client"] == "python" and v["failure"] != "none" for v in a.get("views", []))
                    ),
                ),
                "expected the openssl view to complete and the python view to fail",
            ),
            needs=_QUIET,
        ),
        Scenario(
            "tls13-front-closes",
            "A front that passes TLS 1.3 ClientHellos on and closes on the others: one host's OpenSSL stops at 1.2.",
            ("trusting", "tls12-only"),
            Expect(Cause.HANDSHAKE_INCOMPLETE, ("tls12-only",), Severity.CRITICAL, mentions="closed right after the"),
            _build_tls13_front,
            handshake(
                {
                    "trusting": lambda a: a["handshake"]["tls_version"] == "TLSv1.3",
                    "tls12-only": lambda a: a["handshake"]["failure"] == "closed",
                },
                "expected TLS 1.3 on trusting and a close on tls12-only",
            ),
        ),
    )


HANDSHAKE_SCENARIOS: tuple[Scenario, ...] = _catalogue()
