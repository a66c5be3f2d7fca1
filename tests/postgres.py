"""A throwaway PostgreSQL server for the history's tests: the lab's cluster (coordinator/lab/postgres_server.py)
with password authentication, as a deployed server asks, and room for a session's connections; each test's
history gets a schema of its own."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

from tlsfleet.coordinator.lab.postgres_server import PostgresCluster, PostgresUnavailable, find_binary

USER = "tlsfleet"
PASSWORD = "history-test-password"
MAX_CONNECTIONS = 60
_names = itertools.count(1)


def absent_reason() -> str | None:
    """Why no server can be started here, or None when one can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'tlsfleet[postgresql]')"
    try:
        find_binary("postgres")
        find_binary("initdb")
    except PostgresUnavailable as error:
        return f"{error} (Debian: apt-get install postgresql)"
    return None


@dataclass
class PostgresServer:
    cluster: PostgresCluster

    @property
    def host(self) -> str:
        return self.cluster.host

    @property
    def port(self) -> int:
        return self.cluster.port

    def url(self, database: str = "postgres", *, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{port or self.port}/{database}"

    def admin(self):  # -> psycopg.Connection
        return psycopg_connect(self.url())

    def create_database(self) -> str:
        """A new empty history place: a schema of its own in the database `history`, first on the search
        path of the URL returned (a schema costs a few milliseconds, a database a hundred)."""
        schema = f"h{os.getpid()}_{next(_names)}"
        with self.admin() as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'history'").fetchone():
                admin.execute("CREATE DATABASE history")
        with psycopg_connect(self.url("history")) as history:
            history.execute(f"CREATE SCHEMA {schema}")
        return self.url("history") + f"?options=-csearch_path%3D{schema}"

    def drop_database(self, url: str) -> None:
        schema = url.rsplit("%3D", 1)[1]
        with psycopg_connect(self.url("history")) as history:
            history.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def log_tail(self) -> str:
        return self.cluster.log_tail()


def psycopg_connect(url: str):  # -> psycopg.Connection
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def throwaway_server() -> Iterator[PostgresServer]:
    cluster = PostgresCluster(user=USER, password=PASSWORD, max_connections=MAX_CONNECTIONS)
    try:
        cluster.start(ssl=False)
        yield PostgresServer(cluster)
    finally:
        cluster.remove()
