"""Network namespaces as separate lab hosts (root only), private file views, and the intercepting proxy."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue
from tlsfleet.coordinator.lab import netns
from tlsfleet.coordinator.lab.agent_process import start_agent, tlsfleet_command
from tlsfleet.coordinator.lab.intercepting_proxy import InterceptingProxy, ProxyAuthority, start_proxy_process
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer


def needs_netns() -> None:
    reason = netns.available()
    if reason:
        pytest.skip(reason)


def _gone(namespace: netns.Namespace) -> None:
    assert namespace.name not in netns.list_lab_namespaces()
    assert namespace.root_link not in netns.list_lab_links()
    assert not namespace.etc_dir.exists()


def _peer_subject(host: str, port: int, sni: str | None) -> str:
    """The served leaf's subject and issuer CNs, read without verifying (the chain is what we compare)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return f"{cert.subject.rfc4514_string()} by {cert.issuer.rfc4514_string()}"


@pytest.mark.root
def test_namespace_has_its_own_hosts_loopback_and_a_veth_to_the_root(tmp_path: Path) -> None:
    needs_netns()
    outside = socket.create_server(("127.0.0.1", 0))
    outside_port = outside.getsockname()[1]
    with netns.NetnsLab() as lab:
        namespace = lab.create({"api.inside.lab.test": ["10.9.8.7", "10.9.8.6"]})
        assert namespace.name in netns.list_lab_namespaces()
        assert namespace.root_link in netns.list_lab_links()
        # Split horizon: the name resolves inside through the namespace's own /etc/hosts, both addresses.
        resolved = namespace.run("getent", "ahostsv4", "api.inside.lab.test")
        assert {line.split()[0] for line in resolved.stdout.splitlines()} == {"10.9.8.7", "10.9.8.6"}
        assert namespace.run("getent", "hosts", "api.inside.lab.test").returncode == 0
        assert subprocess.run(["getent", "hosts", "api.inside.lab.test"], capture_output=True).returncode != 0
        # Loopback inside is the namespace's own: the root namespace's listener is not there.
        probe = f"import socket; socket.create_connection(('127.0.0.1', {outside_port}), timeout=2)"
        assert namespace.run(sys.executable, "-c", probe).returncode != 0
        # The root side of the veth is reachable from inside, and the inside address from the root.
        server = socket.create_server((namespace.root_address, 0))
        port = server.getsockname()[1]
        try:
            reach = namespace.run(
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(({namespace.root_address!r}, {port}), timeout=2)",
            )
            assert reach.returncode == 0, reach.stderr
        finally:
            server.close()
    outside.close()
    _gone(namespace)


@pytest.mark.root
def test_clean_up_after_a_failure_inside_the_lab() -> None:
    needs_netns()
    with pytest.raises(RuntimeError, match="boom"), netns.NetnsLab() as lab:
        first = lab.create()
        second = lab.create()
        assert first.root_address != second.root_address
        raise RuntimeError("boom")
    _gone(first)
    _gone(second)


@pytest.mark.root
def test_sweep_removes_what_a_dead_run_left_behind() -> None:
    needs_netns()
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = finished.pid  # a PID that is no longer alive: its namespaces are leftovers
    name = f"{netns.NS_PREFIX}{dead}-0"
    root_link, link = f"tf{dead}x0r", f"tf{dead}x0n"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "link", "add", root_link, "type", "veth", "peer", "name", link], check=True)
        (netns.NETNS_ETC / name).mkdir(parents=True)
        (netns.NETNS_ETC / name / "hosts").write_text("10.1.1.1 stale.lab.test\n")
        with netns.NetnsLab() as lab:  # sweeps on entry
            live = lab.create()
            assert name not in netns.list_lab_namespaces()
            assert root_link not in netns.list_lab_links()
            assert not (netns.NETNS_ETC / name).exists()
            removed_again = netns.sweep_stale()
            assert live.name not in removed_again, "a live run's namespace is never swept"
            assert live.name in netns.list_lab_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", root_link], capture_output=True)
    _gone(live)


@pytest.mark.root
@pytest.mark.e2e
def test_agent_inside_a_namespace_answers_the_coordinator_over_mutual_tls(tmp_path: Path) -> None:
    needs_netns()
    pki_dir = tmp_path / "pki"
    init_fleet_ca(pki_dir)
    issue(pki_dir, "coordinator", "coordinator")
    issue(pki_dir, "agent", "inside")
    lab_pki = LabPKI("Netns Lab")
    with netns.NetnsLab() as lab:
        namespace = lab.create()
        # The target lives in the root namespace, on the veth's root side; inside, its name resolves there.
        namespace.write_hosts({"api.outside.lab.test": [namespace.root_address]})
        leaf = lab_pki.issue_leaf("api.outside.lab.test")
        with TlsServer(ServedIdentity.of(leaf, lab_pki.intermediate), host=namespace.root_address) as server:
            agent = start_agent(
                "inside",
                tmp_path,
                host=namespace.address,
                insecure=False,
                extra_args=["--pki-dir", str(pki_dir)],
                wrapper=namespace.exec_prefix,
            )
            try:
                assert agent.pid in namespace.pids(), "the agent runs inside, under the PID we hold"
                inventory = tmp_path / "inventory.toml"
                inventory.write_text(f'[coordinator]\npki_dir = "{pki_dir}"\n\n' + agent.inventory_entry())
                done = subprocess.run(
                    [
                        *tlsfleet_command(),
                        "probe",
                        f"api.outside.lab.test:{server.port}",
                        "--inventory",
                        str(inventory),
                        "--no-local",
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                [vantage] = json.loads(done.stdout)["vantages"]
                assert vantage["state"] == "ok", vantage["error"]
                result = vantage["result"]
                assert result["resolution"]["addresses"] == [namespace.root_address]
                assert result["addresses"][0]["certificates"][0]["san"] == ["api.outside.lab.test"]
            finally:
                agent.stop()
            assert not namespace.pids()
    _gone(namespace)


@pytest.mark.root
@pytest.mark.e2e
def test_proxy_inside_a_namespace_answers_on_the_servers_own_address(tmp_path: Path) -> None:
    needs_netns()
    lab_pki = LabPKI("Real Server")
    authority = ProxyAuthority.create("Corp Proxy")
    leaf = lab_pki.issue_leaf("api.shop.lab.test")
    with TlsServer(ServedIdentity.of(leaf, lab_pki.intermediate), host="127.0.0.9") as server, netns.NetnsLab() as lab:
        namespace = lab.create()
        proxy = start_proxy_process(
            authority, tmp_path, host="127.0.0.9", port=server.port, wrapper=namespace.exec_prefix
        )
        try:
            assert (proxy.host, proxy.port) == ("127.0.0.9", server.port)
            assert proxy.pid in namespace.pids()
            outside = _peer_subject("127.0.0.9", server.port, "api.shop.lab.test")
            code = (
                "import socket, ssl\n"
                "c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
                f"s = c.wrap_socket(socket.create_connection(('127.0.0.9', {server.port}), timeout=5), "
                "server_hostname='api.shop.lab.test')\n"
                "print(s.getpeercert(binary_form=True).hex())\n"
            )
            inside = namespace.run(sys.executable, "-c", code)
            assert inside.returncode == 0, inside.stderr
        finally:
            assert proxy.stop() == 0
    from cryptography import x509

    minted = x509.load_der_x509_certificate(bytes.fromhex(inside.stdout.strip()))
    assert outside == "CN=api.shop.lab.test by CN=Real Server Intermediate CA"
    assert minted.issuer.rfc4514_string() == "CN=Corp Proxy CA"
    assert minted.subject.rfc4514_string() == "CN=api.shop.lab.test"
    _gone(namespace)


def test_proxy_mints_one_leaf_per_name_and_reuses_it() -> None:
    authority = ProxyAuthority.create()
    with InterceptingProxy(authority) as proxy:
        first = _peer_subject(proxy.host, proxy.port, "a.lab.test")
        again = _peer_subject(proxy.host, proxy.port, "a.lab.test")
        other = _peer_subject(proxy.host, proxy.port, "b.lab.test")
        unnamed = _peer_subject(proxy.host, proxy.port, None)
        assert first == again == "CN=a.lab.test by CN=Corp Proxy CA"
        assert other == "CN=b.lab.test by CN=Corp Proxy CA"
        assert unnamed == "CN=corp-proxy.invalid by CN=Corp Proxy CA"
        assert list(proxy.minted) == ["corp-proxy.invalid", "a.lab.test", "b.lab.test"]
        # The proxy counts a handshake on its own thread, possibly just after the client has its answer.
        deadline = time.monotonic() + 5
        while proxy.handshakes < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.handshakes == 4


def test_mount_view_replaces_one_file_for_one_process_only(tmp_path: Path) -> None:
    reason = netns.mount_view_available()
    if reason:
        pytest.skip(reason)
    replacement = tmp_path / "os-release"
    replacement.write_text("ID=tlsfleet-lab\n")
    target = "/etc/os-release"
    original = Path(target).read_text()
    done = subprocess.run(
        [*netns.mount_view_prefix([(replacement, target)]), "sh", "-c", f"cat {target}; echo $$"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ID=tlsfleet-lab\n")
    assert Path(target).read_text() == original, "the machine's own file is untouched"
