"""Fixtures shared by the whole suite.

Markers (registered in pyproject.toml): `e2e` starts real agent processes, the lab fleet, CLI subprocesses
or a whole scheduled-report pipeline; `root` needs root (network namespaces); `browser` needs headless
Chromium; `postgres` runs against the session's PostgreSQL server (given here to every test that takes it or
runs on the "postgresql" backend). `make test-fast` runs what has none of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordinator.service.history.backends import BACKENDS, HistoryDatabase, history_database
from tests.postgres import PostgresServer, absent_reason, throwaway_server
from tlsfleet.coordinator.lab.pki import LabPKI


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres_server" in getattr(item, "fixturenames", ()) or "postgresql" in params.values():
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$XDG_CACHE_HOME for the session, so that what the CLI keeps on disk (agent/trust/store_cache.py) goes
    to a directory of the tests' own, for them and the processes they start, never to the user's."""
    path = tmp_path_factory.mktemp("cache-home")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def pki() -> LabPKI:
    """One lab PKI for the session: a root "Acme Root CA" and an intermediate "Acme Intermediate CA".

    Nothing changes a LabPKI after it is made (leaves and intermediates are new objects), so sharing it
    is safe. Tests that assert on these names (the diagnosis wording) rely on "Acme"; a module that needs
    other names keeps a fixture of its own.
    """
    return LabPKI("Acme")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (tests/postgres.py), started only when a test asks;
    where none can start, those tests are skipped with the reason."""
    reason = absent_reason()
    if reason is not None:
        pytest.skip(reason)
    with throwaway_server() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def history_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryDatabase]:
    """An empty history database, once SQLite and once PostgreSQL: tests that take it run on both."""
    with history_database(request.param, tmp_path, request.getfixturevalue) as database:
        yield database
