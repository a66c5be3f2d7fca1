"""`tlsfleet probe` from this machine alone, as fresh CLI processes: what it loads, and the trust-store cache
it keeps between runs ($XDG_CACHE_HOME/tlsfleet), which never hides a change to a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.pki import LabPKI, write_pem

pytestmark = pytest.mark.e2e

# Port 1 on loopback refuses at once: the probe still discovers and reports every trust store.
TARGET = "127.0.0.1:1"

PADDED_SIZE = 1024


def padded(pem: bytes) -> bytes:
    """`pem` followed by newlines to a fixed size (ECDSA signatures vary in length): another root of the same
    size, so that only the content tells two versions of a file apart."""
    assert len(pem) <= PADDED_SIZE
    return pem + b"\n" * (PADDED_SIZE - len(pem))


def run_probe(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("TLSFLEET_INVENTORY", "TLSFLEET_COORDINATOR")}
    return subprocess.run(
        [sys.executable, *extra, "-m", "tlsfleet.coordinator.cli", "probe", TARGET, "--agents", "local", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=base | {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")} | (env or {}),
    )


def loaded_modules(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]


def test_a_json_probe_from_this_machine_loads_no_terminal_rendering(tmp_path: Path) -> None:
    """Under --json nothing is drawn: rich (and the pygments and attrs it would bring) is not imported, nor
    structlog while nothing is logged."""
    done = run_probe(tmp_path, "-X", "importtime")
    assert '"kind": "tlsfleet-probe"' in done.stdout, done.stderr[-2000:]
    loaded = loaded_modules(done)
    assert "cryptography.x509" in loaded and "tlsfleet.coordinator.diagnosis" in loaded  # the list is real
    heavy = ("rich", "pygments", "attr", "structlog", "tlsfleet.coordinator.cli.probe_many")
    assert [m for m in loaded if m.startswith(heavy)] == []


def store_of(done: subprocess.CompletedProcess[str], name: str) -> dict[str, object]:
    assert done.returncode in (0, 1), done.stderr[-2000:]
    [vantage] = json.loads(done.stdout)["vantages"]
    [store] = [s for s in vantage["result"]["trust_stores"] if s["name"] == name]
    return store


def test_the_next_run_sees_a_store_that_changed_in_place(tmp_path: Path) -> None:
    """Run 1 fills the cache, run 2 answers from it, run 3 follows a bundle rewritten in place with its
    size and mtime kept; a corrupt cache file is ignored by run 4."""
    one, two = LabPKI("Next Run One"), LabPKI("Next Run Two")
    bundle = write_pem(tmp_path / "bundle.pem", padded(one.root_pem()))
    env = {"SSL_CERT_FILE": str(bundle)}
    first = store_of(run_probe(tmp_path, env=env), "ssl_cert_file")
    cached = tmp_path / "cache" / "tlsfleet" / "store-files.v2"
    assert cached.is_file() and str(bundle).encode() in cached.read_bytes()
    assert store_of(run_probe(tmp_path, env=env), "ssl_cert_file") == first

    stat = bundle.stat()
    replacement = padded(two.root_pem())
    assert len(replacement) == stat.st_size
    with bundle.open("r+b") as f:
        f.write(replacement)
    os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = store_of(run_probe(tmp_path, env=env), "ssl_cert_file")
    assert third["fingerprint"] != first["fingerprint"] and third["root_count"] == 1

    cached.write_bytes(b"not a cache")
    assert store_of(run_probe(tmp_path, env=env), "ssl_cert_file") == third
