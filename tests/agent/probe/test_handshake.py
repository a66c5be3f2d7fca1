"""One address, one real handshake: native verdicts from OpenSSL, the served chain, failures by kind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsfleet.agent.model import AddressResult, Failure, TlsVersion, Verdict
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

REPO = Path(__file__).resolve().parents[3]  # tests/agent/probe/ -> the repository root


@pytest.fixture(scope="module")
def root_file(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_pem(tmp_path_factory.mktemp("roots") / "root.pem", pki.root.cert_pem))


@pytest.fixture(scope="module")
def cache(root_file: str) -> ContextCache:
    """Native contexts that trust the lab root only, in place of the system store."""
    return ContextCache(cafile=root_file)


def run_handshake(
    server: TlsServer,
    cache: ContextCache,
    name: str | None,
    *,
    expected: str | None = None,
    address: str | None = None,
    **kwargs: object,
) -> AddressResult:
    options: dict[str, object] = {"connect_timeout": 2.0, "handshake_timeout": 3.0}
    options.update(kwargs)
    return asyncio.run(
        handshake(
            address or server.host,
            server.port,
            server_hostname_for_sni=name,
            expected_name=expected or name or server.host,
            context_cache=cache,
            **options,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
def serve() -> Iterator[list[TlsServer]]:
    """Start servers through `serve.append(...)`-like use; every one is stopped at the end."""
    started: list[TlsServer] = []
    yield started
    for server in started:
        server.stop()


def start(started: list[TlsServer], server: TlsServer) -> TlsServer:
    started.append(server)
    return server.start()


def _ders(pem: bytes) -> tuple[bytes, ...]:
    end = b"-----END CERTIFICATE-----"
    blocks = [block.strip() + end for block in pem.split(end) if block.strip()]
    return tuple(ssl.PEM_cert_to_DER_cert(block.decode()) for block in blocks)


def _days(n: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=n)


def test_full_chain_is_ok_and_chain_is_captured_as_der(
    pki: LabPKI, cache: ContextCache, serve: list[TlsServer]
) -> None:
    leaf = pki.issue_leaf("good.test")
    server = start(serve, TlsServer(ServedIdentity.of(leaf, pki.intermediate)))
    result = run_handshake(server, cache, "good.test")
    assert result.connect_failure is Failure.NONE and result.connect_ms is not None
    assert result.handshake.failure is Failure.NONE, result.handshake.error
    assert result.native.verdict is Verdict.OK and result.native.verify_code == 0
    assert result.native.hostname_checked
    assert result.handshake.tls_version == "TLSv1.3"
    assert result.handshake.cipher.startswith("TLS_")
    assert result.handshake.duration_ms > 0
    assert result.chain == (leaf.der, pki.intermediate.der)


def _bad_chain_cases(pki: LabPKI) -> dict[str, tuple[bytes, bytes, str, int, Verdict]]:
    """name -> (served chain PEM, key PEM, expected name, OpenSSL code, verdict)."""
    other = LabPKI("Other Lab")
    expired = pki.issue_leaf("expired.test", not_before=_days(-30), not_after=_days(-1))
    future = pki.issue_leaf("future.test", not_before=_days(1), not_after=_days(30))
    self_signed = pki.self_signed_leaf("self.test")
    foreign = other.issue_leaf("foreign.test")
    leaf = pki.issue_leaf("leafonly.test", "127.0.0.1")
    ip_leaf = pki.issue_leaf("127.0.0.2")
    return {
        "expired": (chain_pem(expired, pki.intermediate), expired.key_pem, "expired.test", 10, Verdict.EXPIRED),
        "not_yet_valid": (
            chain_pem(future, pki.intermediate),
            future.key_pem,
            "future.test",
            9,
            Verdict.NOT_YET_VALID,
        ),
        "self_signed": (chain_pem(self_signed), self_signed.key_pem, "self.test", 18, Verdict.SELF_SIGNED),
        "untrusted_root": (
            chain_pem(foreign, other.intermediate, other.root),
            foreign.key_pem,
            "foreign.test",
            19,
            Verdict.UNTRUSTED_ROOT,
        ),
        "unknown_issuer": (
            chain_pem(foreign, other.intermediate),
            foreign.key_pem,
            "foreign.test",
            20,
            Verdict.UNKNOWN_ISSUER,
        ),
        # OpenSSL stops at its first error, 20; `openssl s_client` prints 21 ("unable to verify the first
        # certificate") only because its callback carries on. The offline judge names the leaf-only case.
        "leaf_only": (chain_pem(leaf), leaf.key_pem, "leafonly.test", 20, Verdict.UNKNOWN_ISSUER),
        "hostname_mismatch": (
            chain_pem(leaf, pki.intermediate),
            leaf.key_pem,
            "other.test",
            62,
            Verdict.HOSTNAME_MISMATCH,
        ),
        "ip_mismatch": (chain_pem(ip_leaf, pki.intermediate), ip_leaf.key_pem, "127.0.0.1", 64, Verdict.IP_MISMATCH),
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not_yet_valid",
        "self_signed",
        "untrusted_root",
        "unknown_issuer",
        "leaf_only",
        "hostname_mismatch",
        "ip_mismatch",
    ],
)
def test_native_verdicts_from_real_handshakes(
    case: str, pki: LabPKI, cache: ContextCache, serve: list[TlsServer]
) -> None:
    served, key, expected, code, verdict = _bad_chain_cases(pki)[case]
    server = start(serve, TlsServer(ServedIdentity(served, key)))
    # IP literals are checked without SNI (Python sends none for them); names go in SNI.
    sni = None if expected[0].isdigit() else expected
    result = run_handshake(server, cache, sni, expected=expected)
    assert result.handshake.failure is Failure.CERT_VERIFY, result.handshake
    assert result.native.verify_code == code, result.native
    assert result.native.verdict is verdict
    assert result.native.verify_message
    assert result.native.hostname_checked
    # The chain is there even though verification failed, exactly as served.
    assert result.chain == _ders(served)
    # Version and cipher survive the verdict (read from the ServerHello).
    assert result.handshake.tls_version == "TLSv1.3"
    assert result.handshake.cipher


def test_ipv6_literal_is_checked_against_ip_sans(pki: LabPKI, cache: ContextCache, serve: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("::1")
    try:
        server = start(serve, TlsServer(ServedIdentity.of(leaf, pki.intermediate), host="::1"))
    except OSError as error:
        pytest.skip(f"cannot listen on ::1 here: {error}")
    result = run_handshake(server, cache, None, expected="::1")
    assert result.native.verdict is Verdict.OK and result.native.hostname_checked
    mismatch = run_handshake(server, cache, None, expected="::2", address="::1")
    assert mismatch.native.verify_code == 64


def test_tls12_verify_failure_still_reports_version_and_cipher(
    pki: LabPKI, cache: ContextCache, serve: list[TlsServer]
) -> None:
    leaf = pki.issue_leaf("tls12.test")
    server = start(serve, TlsServer(ServedIdentity.of(leaf, pki.intermediate), max_version=ssl.TLSVersion.TLSv1_2))
    result = run_handshake(server, cache, "wrong.test")
    assert result.native.verdict is Verdict.HOSTNAME_MISMATCH
    assert result.handshake.tls_version == "TLSv1.2"
    assert result.handshake.cipher
    assert result.chain == (leaf.der, pki.intermediate.der)


def test_without_sni_the_default_certificate_is_served_and_no_name_is_checked(
    pki: LabPKI, cache: ContextCache, serve: list[TlsServer]
) -> None:
    default, named = pki.issue_leaf("default.test"), pki.issue_leaf("named.test")
    server = start(
        serve,
        TlsServer(
            ServedIdentity.of(default, pki.intermediate),
            by_sni={"Named.Test": ServedIdentity.of(named, pki.intermediate)},
        ),
    )
    without = run_handshake(server, cache, None, expected="named.test")
    assert without.chain[0] == default.der
    assert without.native.verdict is Verdict.OK
    assert without.native.hostname_checked is False
    with_sni = run_handshake(server, cache, "named.test")
    assert with_sni.chain[0] == named.der  # by_sni names match case-insensitively
    assert with_sni.native.verdict is Verdict.OK and with_sni.native.hostname_checked


def test_unknown_sni_without_default_is_a_tls_alert(pki: LabPKI, cache: ContextCache, serve: list[TlsServer]) -> None:
    named = pki.issue_leaf("named.test")
    server = start(serve, TlsServer(None, by_sni={"named.test": ServedIdentity.of(named, pki.intermediate)}))
    result = run_handshake(server, cache, "stranger.test")
    assert result.handshake.failure is Failure.TLS_ALERT
    assert result.handshake.alert == "unrecognized_name"
    assert result.chain == ()
    assert result.native.verdict is Verdict.NO_CHAIN


def test_alpn_is_negotiated(pki: LabPKI, cache: ContextCache, serve: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("alpn.test")
    server = start(serve, TlsServer(ServedIdentity.of(leaf, pki.intermediate), alpn=("h2", "http/1.1")))
    assert run_handshake(server, cache, "alpn.test", alpn=("h2", "http/1.1")).handshake.alpn == "h2"
    assert run_handshake(server, cache, "alpn.test", alpn=("http/1.1",)).handshake.alpn == "http/1.1"
    assert run_handshake(server, cache, "alpn.test").handshake.alpn == ""


def test_tls13_only_server_against_tls12_client(pki: LabPKI, cache: ContextCache, serve: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("modern.test")
    server = start(serve, TlsServer(ServedIdentity.of(leaf, pki.intermediate), min_version=ssl.TLSVersion.TLSv1_3))
    result = run_handshake(server, cache, "modern.test", max_version=TlsVersion.TLS1_2)
    assert result.handshake.failure in (Failure.TLS_ALERT, Failure.PROTOCOL_ERROR)
    if result.handshake.failure is Failure.TLS_ALERT:
        assert result.handshake.alert == "protocol_version"
    assert result.native.verdict is Verdict.NO_CHAIN
    both = run_handshake(server, cache, "modern.test", min_version="TLSv1.3")
    assert both.handshake.tls_version == "TLSv1.3"


def test_stalling_server_times_out_within_the_deadline(serve: list[TlsServer], cache: ContextCache) -> None:
    server = start(serve, TlsServer(None, mode="stall"))
    started = time.monotonic()
    result = run_handshake(server, cache, "stall.test", handshake_timeout=0.3)
    elapsed = time.monotonic() - started
    assert result.handshake.failure is Failure.HANDSHAKE_TIMEOUT
    assert elapsed < 2.0, elapsed
    assert result.connect_failure is Failure.NONE


def test_garbage_is_not_tls(serve: list[TlsServer], cache: ContextCache) -> None:
    server = start(serve, TlsServer(None, mode="garbage"))
    result = run_handshake(server, cache, "garbage.test")
    assert result.handshake.failure is Failure.NOT_TLS
    assert result.handshake.error


def test_server_closing_mid_handshake_is_closed(serve: list[TlsServer], cache: ContextCache) -> None:
    server = start(serve, TlsServer(None, mode="close"))
    result = run_handshake(server, cache, "close.test")
    assert result.handshake.failure is Failure.CLOSED


def test_refused_port(cache: ContextCache) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    result = asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni="refused.test",
            expected_name="refused.test",
            connect_timeout=2.0,
            handshake_timeout=2.0,
            context_cache=cache,
        )
    )
    assert result.connect_failure is Failure.REFUSED
    assert "ECONNREFUSED" in result.connect_error
    assert result.connect_ms is None
    assert result.native.verdict is Verdict.NO_CHAIN


def test_handshake_bytes_are_capped(pki: LabPKI, cache: ContextCache, serve: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("big.test")
    server = start(serve, TlsServer(ServedIdentity.of(leaf, pki.intermediate)))
    result = run_handshake(server, cache, "big.test", max_handshake_bytes=256)
    assert result.handshake.failure is Failure.TOO_LARGE
    assert "256" in result.handshake.error


def test_sni_must_equal_the_expected_name(cache: ContextCache) -> None:
    with pytest.raises(ValueError, match="must be equal"):
        asyncio.run(
            handshake(
                "127.0.0.1",
                1,
                server_hostname_for_sni="a.test",
                expected_name="b.test",
                connect_timeout=1.0,
                handshake_timeout=1.0,
                context_cache=cache,
            )
        )


def test_context_cache_is_bounded_lru_and_rejects_unknown_versions(root_file: str) -> None:
    contexts = ContextCache(cafile=root_file, maxsize=2)
    a = contexts.get(verify=True, check_hostname=True)
    assert contexts.get(verify=True, check_hostname=True) is a
    b = contexts.get(verify=True, check_hostname=True, alpn=("h2",))
    contexts.get(verify=True, check_hostname=True)  # a is now the most recent
    contexts.get(verify=False, check_hostname=False)  # evicts b
    assert len(contexts) == 2
    assert contexts.get(verify=True, check_hostname=True) is a
    assert contexts.get(verify=True, check_hostname=True, alpn=("h2",)) is not b
    unverified = contexts.get(verify=False, check_hostname=True)
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname
    with pytest.raises(ValueError, match=r"accepted: TLSv1, TLSv1\.1, TLSv1\.2, TLSv1\.3"):
        contexts.get(verify=True, check_hostname=True, min_version="SSLv3")
    with pytest.raises(ValueError, match="at least 1"):
        ContextCache(maxsize=0)


@pytest.mark.e2e  # the lab TLS server as its own process
def test_tls_server_runs_as_a_process_and_stops_on_sigterm(pki: LabPKI, cache: ContextCache, tmp_path: Path) -> None:
    leaf = pki.issue_leaf("process.test")
    chain_file = write_pem(tmp_path / "chain.pem", chain_pem(leaf, pki.intermediate))
    key_file = write_pem(tmp_path / "key.pem", leaf.key_pem)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tlsfleet.coordinator.lab.tls_server",
            "--cert-chain",
            str(chain_file),
            "--key",
            str(key_file),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        line = _read_line(process, timeout=15.0)
        word, host, port = line.split()
        assert word == "LISTENING" and host == "127.0.0.1"
        result = asyncio.run(
            handshake(
                host,
                int(port),
                server_hostname_for_sni="process.test",
                expected_name="process.test",
                connect_timeout=2.0,
                handshake_timeout=3.0,
                context_cache=cache,
            )
        )
        assert result.native.verdict is Verdict.OK
        assert result.chain[0] == leaf.der
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()


@pytest.mark.e2e  # the lab TLS server as its own process
def test_tls_server_cli_rejects_a_missing_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tlsfleet.coordinator.lab.tls_server", "--cert-chain", str(tmp_path / "x.pem")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--cert-chain and --key go together" in done.stderr


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The first stdout line, without blocking past `timeout`."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            chunk = b""
        buffer += chunk
        if b"\n" in buffer:
            return buffer.split(b"\n", 1)[0].decode()
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"tls_server exited with {process.returncode}: {stderr}")
        time.sleep(0.02)
    raise AssertionError(f"no LISTENING line within {timeout} s (got {buffer!r})")


def test_tls_server_reports_a_port_in_use(pki: LabPKI, serve: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("busy.test")
    identity = ServedIdentity.of(leaf, pki.intermediate)
    first = start(serve, TlsServer(identity))
    with pytest.raises(OSError):
        start(serve, TlsServer(identity, port=first.port))
    with pytest.raises(ValueError, match="accepted: tls, stall, garbage, close"):
        TlsServer(identity, mode="loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a default identity"):
        TlsServer(None)
