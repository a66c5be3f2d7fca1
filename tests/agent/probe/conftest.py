"""Fixtures of the probe tests that run real OpenSSL servers and clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import Lab
from tlsfleet.coordinator.lab.pki import LabPKI


@pytest.fixture
def lab(pki: LabPKI, tmp_path: Path) -> Iterator[Lab]:
    """Files and `openssl s_server` processes for one test; every process is stopped at the end."""
    started = Lab(tmp_path, pki)
    try:
        yield started
    finally:
        started.stop()
