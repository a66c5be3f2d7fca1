"""One empty history database of either backend, for tests that run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlsfleet.coordinator.service.config import StorageConfig
from tlsfleet.coordinator.service.history import HistoryStore, open_history

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class HistoryDatabase:
    """Open it (again) as a store, count a table's rows, name it in a coordinator config."""

    backend: str
    location: str  # the SQLite file, or the PostgreSQL URL

    @property
    def storage(self) -> StorageConfig:
        if self.backend == "sqlite":
            return StorageConfig(backend="sqlite", path=Path(self.location))
        return StorageConfig(backend="postgresql", path=Path("unused"), url=self.location)

    def open(self) -> HistoryStore:
        return open_history(self.storage)

    def storage_toml(self) -> str:
        """The [storage] table of a coordinator config that names this database."""
        key = "path" if self.backend == "sqlite" else "url"
        return f'[storage]\n{key} = "{self.location}"\n'

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {table}")[0][0])

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one statement on the database itself, past the store (committed)."""
        if self.backend == "sqlite":
            connection = sqlite3.connect(self.location)
            try:
                with connection:
                    return connection.execute(sql, params).fetchall()
            finally:
                connection.close()
        import psycopg

        with psycopg.connect(self.location, autocommit=True, connect_timeout=10) as connection:
            cursor = connection.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []


@contextmanager
def history_database(backend: str, directory: Path, fixture: Callable[[str], Any]) -> Iterator[HistoryDatabase]:
    """An empty database of `backend` (a file in `directory`, or a new database on the session's
    PostgreSQL server, got through `fixture`, which is request.getfixturevalue), dropped afterwards."""
    if backend == "sqlite":
        yield HistoryDatabase("sqlite", str(directory / "history.sqlite"))
        return
    server = fixture("postgres_server")
    url = server.create_database()
    try:
        yield HistoryDatabase("postgresql", url)
    finally:
        server.drop_database(url)
