"""Target host names as people type them: what is accepted and normalized, and a one-line error for the rest that
names the problem in its own words (not the IDNA codec's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tlsfleet.agent.model import Target
from tlsfleet.agent.probe.targets import TargetError, parse_target
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("HTTPS://API.Example.TEST/login?x=1", Target("api.example.test", 443)),
        ("bücher.example.test:8443", Target("xn--bcher-kva.example.test", 8443)),
        ("BÜCHER.example.test", Target("xn--bcher-kva.example.test", 443)),
        # IDNA 2008 (UTS #46, non-transitional), as curl and browsers: not IDNA 2003's "strasse".
        ("straße.example.test", Target("xn--strae-oqa.example.test", 443)),
        ("ς.example.test", Target("xn--3xa.example.test", 443)),
        ("bücher.under_score.test", Target("xn--bcher-kva.under_score.test", 443)),
        ("under_score.example.test", Target("under_score.example.test", 443)),
        ("https://[0:0:0:0:0:0:0:1]:8443/x", Target("::1", 8443)),
        ("::1", Target("::1", 443)),
        ("[fe80::1%eth0]:443", Target("fe80::1%eth0", 443)),  # the zone stays: it says which link to connect on
        ("https://[fe80::1%25eth0]:8443/x", Target("fe80::1%eth0", 8443)),  # as a URL writes it (RFC 6874)
    ],
)
def test_accepted_targets_are_normalized(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("api..example.test", "a label of host name 'api..example.test' is empty (a leading dot, or two dots"),
        (".api.example.test", "is empty (a leading dot, or two dots in a row)"),
        ("api.example.test..", "is empty"),
        ("https://a..b/", "a label of host name 'a..b' is empty"),
        ("a" * 64 + ".example.test", "is longer than 63 characters"),
    ],
)
def test_an_empty_or_overlong_label_is_said_as_such(text: str, said: str) -> None:
    with pytest.raises(TargetError) as raised:
        parse_target(text)
    message = str(raised.value)
    assert said in message and "accepted:" in message, message
    assert "codec" not in message and "\n" not in message, message


def _curl_with_idn() -> str | None:
    curl = shutil.which("curl")
    if curl is None:
        return None
    features = subprocess.run([curl, "-V"], capture_output=True, text=True, timeout=10, check=False).stdout
    return curl if " IDN" in features else None


@pytest.mark.skipif(_curl_with_idn() is None, reason="no curl built with IDN support (libidn2) here")
def test_an_internationalized_target_is_the_name_curl_asks_for(pki: LabPKI, tmp_path: Path) -> None:
    target = parse_target("straße.example.test")
    server = TlsServer(ServedIdentity.of(pki.issue_leaf(target.host), pki.intermediate)).start()
    try:
        roots = write_pem(tmp_path / "roots.pem", pki.root.cert_pem)
        # Only the name tlsfleet asks for resolves: a curl that asked for IDNA 2003's "strasse" could not connect.
        command = [str(_curl_with_idn()), "-sS", "-o", os.devnull, "--cacert", str(roots), "--max-time", "10"]
        command += [
            "--resolve",
            f"{target.host}:{server.port}:127.0.0.1",
            f"https://straße.example.test:{server.port}/",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    finally:
        server.stop()
    # 6: the name did not resolve; 35, 51, 60: TLS or the certificate's name refused. After the handshake the lab
    # server speaks no HTTP, so curl ends with an empty reply (52) or a receive error (56).
    assert done.returncode not in (6, 35, 51, 60), done.stderr
