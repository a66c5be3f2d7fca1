"""IPv4 addresses in the forms inet_aton reads (127.1, 0x7f.1, 2130706433): a target is accepted exactly
where both getaddrinfo and curl on this host take it for an address, shown as the canonical dotted quad,
and probed there; the forms they refuse are refused with the reason."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tlsfleet.agent.probe.targets import TargetError, inet_aton, parse_target
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

# Every accepted form lands in 127.0.0.0/8 or 0.0.0.0, so asking curl where it connects stays on this host.
ADDRESS_FORMS = [
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0X7F.0.0.1",
    "0x7f.0x0.0x0.0x1",
    "0x0000007f.1",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "0177.0.0.1",
    "127.0.0.01",
    "127.256",
    "0",
]
REFUSED_FORMS = [
    "127.0.0.1.",
    "127.1.",
    "256.1",
    "0x100.1",
    "08.1",
    "127.0x.0.1",
    "1.2.3.4.5",
    "127.16777216",
    "4294967296",
    "0x1ffffffff",
    "0x",
]


def _getaddrinfo(host: str) -> str | None:
    try:
        [info, *_] = socket.getaddrinfo(host, 9, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None
    return str(info[4][0])


def _curl_connects_to(host: str) -> str | None:
    """The address curl says it tries for https://HOST:9/ (None: it could not resolve the host)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed on this host")
    done = subprocess.run(
        [curl, "-sv", "--connect-timeout", "2", "--max-time", "5", f"https://{host}:9/"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    tried = re.search(r"Trying (\S+):9\.\.\.", done.stderr)
    if tried:
        return tried.group(1)
    assert "Could not resolve host" in done.stderr, done.stderr
    return None


@pytest.mark.parametrize("form", ADDRESS_FORMS)
def test_a_form_curl_and_getaddrinfo_read_as_an_address_is_that_address(form: str) -> None:
    address = _getaddrinfo(form)
    assert address is not None and _curl_connects_to(form) == address
    assert inet_aton(form) == address
    assert parse_target(f"{form}:8443").host == address
    assert parse_target(f"https://{form}/login").host == address


@pytest.mark.parametrize("form", REFUSED_FORMS)
def test_a_form_they_refuse_is_refused_with_what_is_accepted(form: str) -> None:
    assert _getaddrinfo(form) is None and _curl_connects_to(form) is None
    assert inet_aton(form) is None
    with pytest.raises(TargetError) as caught:
        parse_target(f"{form}:443")
    message = str(caught.value)
    assert "not a valid IPv4 address" in message and "127.1" in message and "accepted" in message


def test_a_name_that_only_looks_numeric_in_part_stays_a_name() -> None:
    # 0x7f is a valid last label of a name: getaddrinfo sends it to the resolver, not inet_aton.
    assert inet_aton("db.0x7f") is None and parse_target("db.0x7f").host == "db.0x7f"


@pytest.mark.e2e
def test_probe_of_127_1_reaches_127_0_0_1_and_shows_it(pki: LabPKI, tmp_path: Path) -> None:
    root = write_pem(tmp_path / "root.pem", pki.root.cert_pem)
    identity = ServedIdentity.of(pki.issue_leaf("127.0.0.1", common_name="aton"), pki.intermediate)
    with TlsServer(identity) as server:
        seen = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.1:{server.port}",
                "-CAfile",
                str(root),
                "-verify_ip",
                "127.0.0.1",
                "-verify_return_error",
                "-brief",
            ],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
        )
        done = subprocess.run(
            [*tlsfleet_command(), "probe", f"127.1:{server.port}", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=trust_env(tmp_path, root),
        )
    assert seen.returncode == 0 and "CONNECTION ESTABLISHED" in seen.stderr + seen.stdout, seen.stderr
    assert done.returncode == 0, done.stderr
    assert '"host": "127.0.0.1"' in done.stdout and '"127.1"' not in done.stdout
    assert '"verdict": "ok"' in done.stdout
