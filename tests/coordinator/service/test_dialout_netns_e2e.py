"""Dial-out agents on hosts the coordinator cannot reach: each agent runs in a network namespace of its
own with no route anywhere (loopback only), and reaches the coordinator through a one-way forwarder that
accepts inside the namespace and connects out, as NAT does. Probed end to end through the CLI."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab import netns
from tlsfleet.coordinator.lab.agent_process import trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem

from .dialout_fleet import LoggedProcess, cli, make_pki, start_coordinator, start_dialout_agent

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def listen_inside(namespace: netns.Namespace) -> socket.socket:
    """A listening socket on the namespace's loopback; only the calling thread visits the namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace.name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            listener = socket.create_server(("127.0.0.1", 0))
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return listener


class OneWayForwarder:
    """Connections opened inside a namespace go to `upstream` outside; nothing goes the other way."""

    def __init__(self, listener: socket.socket, upstream: tuple[str, int]) -> None:
        self.listener = listener
        self.port = listener.getsockname()[1]
        self._upstream = upstream
        self._sockets: list[socket.socket] = [listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                inside, _ = self.listener.accept()
                outside = socket.create_connection(self._upstream, timeout=5)
                outside.settimeout(None)
                self._sockets += [inside, outside]
                for a, b in ((inside, outside), (outside, inside)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[tuple[netns.NetnsLab, list[netns.Namespace]]]:
    reason = netns.available()
    if reason is not None:
        pytest.skip(reason)
    with netns.NetnsLab() as lab:
        spaces = [lab.create() for _ in range(2)]
        for space in spaces:
            # No veth: the namespace has its loopback and nothing else, no route in or out.
            subprocess.run(["ip", "-n", space.name, "link", "del", space.link], check=True, timeout=10)
        yield lab, spaces


def test_agents_no_one_can_reach_are_probed_through_the_coordinator(
    isolated: tuple[netns.NetnsLab, list[netns.Namespace]], tmp_path: Path
) -> None:
    _lab, spaces = isolated
    pki_dir = make_pki(tmp_path / "pki", "edge-ns0", "edge-ns1")
    lab_pki = LabPKI("Hidden")
    leaf = lab_pki.issue_leaf("localhost")
    write_pem(tmp_path / "chain.pem", chain_pem(leaf, lab_pki.intermediate))
    write_pem(tmp_path / "leaf.key", leaf.key_pem)
    bundle = write_pem(tmp_path / "root.pem", lab_pki.root_pem())
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[coordinator]\npki_dir = "pki"\n')
    config = tmp_path / "coordinator.toml"
    config.write_text(
        '[coordinator]\ninventory = "inventory.toml"\n\n[storage]\npath = "history.sqlite"\n\n'
        '[agent_link]\nlisten = "127.0.0.1:0"\nallow = ["edge-*"]\n\n'
        '[[report]]\nname = "hidden"\ntargets = ["localhost:8443"]\ninterval = "1h"\n'
    )
    processes: list[LoggedProcess | subprocess.Popen[bytes]] = []
    forwarders: list[OneWayForwarder] = []
    try:
        coordinator = start_coordinator(config, tmp_path / "coordinator.log")
        processes.append(coordinator)
        link_port = coordinator.wait_for("agent_link_listening")["port"]
        for index, space in enumerate(spaces):
            assert space.run("ip", "-4", "route").stdout.strip() == ""  # nowhere to go but its own loopback
            server = subprocess.Popen(
                [
                    *space.exec_prefix,
                    sys.executable,
                    "-m",
                    "tlsfleet.coordinator.lab.tls_server",
                    "--cert-chain",
                    str(tmp_path / "chain.pem"),
                    "--key",
                    str(tmp_path / "leaf.key"),
                    "--listen",
                    "127.0.0.1:8443",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            processes.append(server)
            assert server.stdout is not None and server.stdout.readline().startswith(b"LISTENING")
            forwarder = OneWayForwarder(listen_inside(space), ("127.0.0.1", link_port))
            forwarders.append(forwarder)
            agent = start_dialout_agent(
                f"edge-ns{index}",
                f"127.0.0.1:{forwarder.port}",
                pki_dir,
                tmp_path,
                labels=[("zone", f"hidden-{index}")],
                env=trust_env(tmp_path, bundle),
                prefix=space.exec_prefix,
            )
            processes.append(agent)
            agent.wait_for("agent_link_connected")
        env = {**os.environ, "TLSFLEET_COORDINATOR": f"127.0.0.1:{link_port}"}
        listed = cli("agents", "--inventory", str(inventory), "--no-local", "--json", env=env)
        assert listed.returncode == 0, listed.stderr + listed.stdout
        assert {a["agent"]: a["state"] for a in json.loads(listed.stdout)["agents"]} == {
            "edge-ns0": "ok",
            "edge-ns1": "ok",
        }
        done = cli("probe", "localhost:8443", "--inventory", str(inventory), "--no-local", "--json", env=env)
        assert "Traceback" not in done.stderr and done.stdout, done.stderr
        report = json.loads(done.stdout)
        for vantage in report["vantages"]:
            assert vantage["state"] == "ok", vantage["error"]
            # localhost is 127.0.0.1 and ::1 in there; the hidden server listens on the first.
            [address] = [a for a in vantage["result"]["addresses"] if a["address"] == "127.0.0.1"]
            assert address["native"]["verdict"] == "ok"
        assert len(report["vantages"]) == 2
        # This machine cannot see what the hidden agents see: nothing listens on its own 127.0.0.1:8443.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", 8443), timeout=2):
            pass
    finally:
        for process in reversed(processes):
            if isinstance(process, LoggedProcess):
                process.stop()
            else:
                process.terminate()
                process.wait(10)
        for forwarder in forwarders:
            forwarder.close()
