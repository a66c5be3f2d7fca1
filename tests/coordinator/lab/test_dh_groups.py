"""The lab's fixed weak DH group is the published one: OpenSSL reads it as a 1024-bit group with generator 2
and a safe prime."""

from __future__ import annotations

import subprocess

from tests.agent.probe.openssl_lab import OPENSSL, needs_openssl
from tlsfleet.coordinator.lab.dh_groups import OAKLEY_GROUP_2_BITS, oakley_group_2_pem

RFC_2409_PRIME_START = "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd1"


@needs_openssl
def test_the_oakley_group_is_what_openssl_reads_and_checks() -> None:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "dhparam", "-check", "-text", "-noout"],
        input=oakley_group_2_pem(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    text = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, text
    assert f"DH Parameters: ({OAKLEY_GROUP_2_BITS} bit)" in text and "appear to be ok" in text
    assert "G:    2 (0x2)" in text or "generator: 2 (0x2)" in text, text
    hex_lines = [line for line in text.splitlines() if line.startswith("        ")]
    digits = "".join(c for line in hex_lines for c in line if c in "0123456789abcdef")
    assert digits.lstrip("0").startswith(RFC_2409_PRIME_START), digits[:60]
