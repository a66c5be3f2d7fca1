"""`--sni` with an IP address: RFC 6066 allows only a DNS name in SNI, and the clients on this host send none
for an address (curl, Python, `openssl s_client -connect IP`). tlsfleet refuses such a --sni at once, in one
line naming the option, what is accepted and --no-sni, before any connection is made."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.agent.errors import UsageError
from tlsfleet.agent.probe.targets import ip_sni_problem
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.probing import build_request


class SniRecorder:
    """A TLS server on 127.0.0.1 that keeps the SNI name of every handshake (None: none was sent)."""

    def __init__(self, pki: LabPKI, directory: Path) -> None:
        leaf = pki.issue_leaf("localhost", "127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(
            write_pem(directory / "leaf.pem", leaf.cert_pem + pki.intermediate.cert_pem),
            write_pem(directory / "leaf.key", leaf.key_pem),
        )
        context.sni_callback = lambda _sslobj, name, _context: self.names.append(name)
        self.context = context
        self.names: list[str | None] = []
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            connection.settimeout(5)
            try:
                with self.context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                connection.close()

    def close(self) -> None:
        # close() alone leaves the thread blocked in accept(); shutdown() wakes it at once (Linux).
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def recorder(pki: LabPKI, tmp_path: Path) -> Iterator[SniRecorder]:
    server = SniRecorder(pki, tmp_path)
    try:
        yield server
    finally:
        server.close()


def _sent(recorder: SniRecorder, command: list[str]) -> str | None:
    recorder.names.clear()
    subprocess.run(command, input=b"", capture_output=True, timeout=30)
    assert len(recorder.names) == 1, (command, recorder.names)
    return recorder.names[0]


def test_clients_send_no_sni_for_an_address(recorder: SniRecorder) -> None:
    at = f"127.0.0.1:{recorder.port}"
    assert _sent(recorder, ["openssl", "s_client", "-connect", at]) is None
    # Only when told to in so many words does s_client put the address in SNI, against RFC 6066.
    assert _sent(recorder, ["openssl", "s_client", "-connect", at, "-servername", "127.0.0.1"]) == "127.0.0.1"
    if shutil.which("curl"):
        assert _sent(recorder, ["curl", "-sk", f"https://{at}/"]) is None
    python = ssl.create_default_context()
    python.check_hostname, python.verify_mode = False, ssl.CERT_NONE
    recorder.names.clear()
    with (
        socket.create_connection(("127.0.0.1", recorder.port)) as raw,
        python.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass
    assert recorder.names == [None]


@pytest.mark.parametrize("sni", ["127.0.0.1", "127.1", "2130706433", "::1", "[::1]", "10.0.0.5"])
def test_an_address_as_sni_is_refused_naming_the_option(sni: str) -> None:
    problem = ip_sni_problem(sni)
    assert problem is not None
    with pytest.raises(UsageError) as caught:
        build_request("api.example.com", now_ns=0, sni=sni)
    message = str(caught.value)
    assert message == problem and "\n" not in message
    assert message.startswith(f"--sni {sni!r} is an IP address")
    assert "accepted: a DNS name" in message and "--no-sni" in message


@pytest.mark.parametrize("sni", ["api.example.com", "localhost", "db.0x7f", "host.example."])
def test_a_name_as_sni_is_kept(sni: str) -> None:
    assert ip_sni_problem(sni) is None
    assert build_request("10.0.0.5", now_ns=0, sni=sni).options.sni == sni


@pytest.mark.e2e
def test_probe_and_chain_refuse_an_address_as_sni_before_connecting(
    recorder: SniRecorder, pki: LabPKI, tmp_path: Path
) -> None:
    env = trust_env(tmp_path, write_pem(tmp_path / "root.pem", pki.root.cert_pem))
    target = f"localhost:{recorder.port}"
    for verb in ("probe", "chain"):
        done = subprocess.run(
            [*tlsfleet_command(), verb, target, "--sni", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: --sni '127.0.0.1' is an IP address"), line
    assert recorder.accepted == 0
    # A name is still sent as asked, and --no-sni still sends none.
    for extra, sent in ((["--sni", "localhost"], "localhost"), (["--no-sni"], None)):
        recorder.names.clear()
        done = subprocess.run(
            [*tlsfleet_command(), "probe", target, *extra, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode in (0, 1), done.stderr
        assert recorder.names and set(recorder.names) == {sent}, recorder.names


@pytest.mark.parametrize(("given", "pinned"), [("127.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"), ("::1", "::1")])
def test_a_pinned_address_is_read_as_the_target_is(given: str, pinned: str) -> None:
    assert build_request("api.example.com", now_ns=0, address=given).options.pin_address == pinned
