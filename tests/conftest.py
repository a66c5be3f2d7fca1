"""Fixtures shared by the whole suite.

Markers (registered in pyproject.toml): `e2e` starts real agent processes, the lab fleet, CLI subprocesses
or a whole scheduled-report pipeline; `root` needs root (network namespaces); `browser` needs headless
Chromium. `make test-fast` runs what has none of them.
"""

from __future__ import annotations

import pytest

from tlsfleet.coordinator.lab.pki import LabPKI


@pytest.fixture(scope="session")
def pki() -> LabPKI:
    """One lab PKI for the session: a root "Acme Root CA" and an intermediate "Acme Intermediate CA".

    Nothing changes a LabPKI after it is made (leaves and intermediates are new objects), so sharing it
    is safe. Tests that assert on these names (the diagnosis wording) rely on "Acme"; a module that needs
    other names keeps a fixture of its own.
    """
    return LabPKI("Acme")
