"""Bad input through the real CLI: one line naming the problem, a documented exit code, no traceback."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import tlsfleet_command

pytestmark = pytest.mark.e2e  # every test runs the real CLI


def cli(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    if env_home is not None:
        # No inventory or PKI from the machine running the tests leaks in.
        env["HOME"] = str(env_home)
        env.pop("TLSFLEET_INVENTORY", None)
        env.pop("TLSFLEET_PKI_DIR", None)
    return subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, env=env)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("", "empty"),
        ("example.com:99999", "65535"),
        ("example.com:http", "port"),
        ("exa mple.com", "space"),
        ("ftp://example.com", "https"),
        ("bad-.example", "label"),
    ],
)
def test_malformed_targets(target: str, fragment: str, tmp_path: Path) -> None:
    done = cli("probe", target, env_home=tmp_path)
    assert_one_line_error(done, 2, fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--sni", "a.example", "--no-sni"], "--no-sni"),
        (["--timeout", "0"], "--timeout"),
        (["--tls-min", "1.4"], "1.3"),
        (["--tls-min", "1.3", "--tls-max", "1.2"], "above the maximum"),
        (["--address", "not-an-ip"], "IP address"),
        (["--max-addresses", "0"], "--max-addresses 0 is out of range; accepted: 1-64"),
        (["--agents", "env=prod,bad term"], "selector term"),
    ],
)
def test_bad_probe_options(args: list[str], fragment: str, tmp_path: Path) -> None:
    done = cli("probe", "example.com", *args, env_home=tmp_path)
    assert_one_line_error(done, 2, fragment)


def test_unknown_host_is_a_dns_failure_not_a_crash(tmp_path: Path) -> None:
    done = cli("probe", "no-such-host.invalid", "--json", env_home=tmp_path)
    assert done.returncode == 1, done.stderr
    [vantage] = json.loads(done.stdout)["vantages"]
    assert vantage["agent"] == "local"
    assert vantage["result"]["resolution"]["failure"] == "dns_error"
    assert vantage["result"]["addresses"] == []


def test_explicit_inventory_missing(tmp_path: Path) -> None:
    done = cli("probe", "example.com", "--inventory", str(tmp_path / "nope.toml"), env_home=tmp_path)
    assert_one_line_error(done, 2, "nope.toml", "does not exist")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[[agent]\nname = 'x'", "not valid TOML"),
        (
            '[[agent]]\nname = "a"\naddress = "127.0.0.1:1"\ninsecure = true\n'
            '[[agent]]\nname = "a"\naddress = "127.0.0.1:2"\ninsecure = true\n',
            "repeats the name 'a'",
        ),
        ('[[agent]]\nname = "a"\naddress = "127.0.0.1"\n', "has no port"),
        ('[[agent]]\nname = "a"\naddress = "10.1.2.3:7443"\ninsecure = true\n', "loopback"),
        ('[[agent]]\nname = "Bad_Name"\naddress = "127.0.0.1:7443"\n', "not accepted"),
        ('[[agent]]\nname = "a"\naddress = "127.0.0.1:7443"\ncolour = "red"\n', "unknown key"),
    ],
)
def test_malformed_inventory(content: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(content)
    done = cli("probe", "example.com", "--inventory", str(path), env_home=tmp_path)
    assert_one_line_error(done, 2, str(path), fragment)


def test_missing_fleet_certificates(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(
        f'[coordinator]\npki_dir = "{tmp_path / "pki"}"\n[[agent]]\nname = "a"\naddress = "127.0.0.1:7443"\n'
    )
    done = cli("probe", "example.com", "--inventory", str(path), env_home=tmp_path)
    assert_one_line_error(done, 2, "ca.pem")


def test_expired_coordinator_certificate(tmp_path: Path) -> None:
    from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue

    pki = tmp_path / "pki"
    init_fleet_ca(pki)
    now = datetime.now(UTC)
    issue(pki, "coordinator", "coordinator", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    path = tmp_path / "inventory.toml"
    path.write_text(f'[coordinator]\npki_dir = "{pki}"\n[[agent]]\nname = "a"\naddress = "127.0.0.1:7443"\n')
    done = cli("probe", "example.com", "--inventory", str(path), env_home=tmp_path)
    assert_one_line_error(done, 2, "expired")


def test_certificate_from_another_ca(tmp_path: Path) -> None:
    from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    init_fleet_ca(ours)
    init_fleet_ca(theirs)
    issue(theirs, "coordinator", "coordinator")
    path = tmp_path / "inventory.toml"
    path.write_text(
        f'[coordinator]\nca = "{ours / "ca.pem"}"\ncert = "{theirs / "coordinators/coordinator.pem"}"\n'
        f'key = "{theirs / "coordinators/coordinator.key"}"\n[[agent]]\nname = "a"\naddress = "127.0.0.1:7443"\n'
    )
    done = cli("probe", "example.com", "--inventory", str(path), env_home=tmp_path)
    assert_one_line_error(done, 2, "but the fleet CA is")


def test_no_vantage_selected(tmp_path: Path) -> None:
    done = cli("probe", "example.com", "--no-local", env_home=tmp_path)
    assert_one_line_error(done, 2, "no vantage")


def test_help_documents_exit_codes() -> None:
    done = cli("probe", "--help")
    assert done.returncode == 0
    assert "Exit codes" in done.stdout
