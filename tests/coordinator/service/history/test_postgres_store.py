"""The PostgreSQL history against a real throwaway server: its clear errors (no server, a wrong password,
a newer schema, another application's database), migrations run once by coordinators starting together,
a dropped connection replaced, the password kept out of messages, and `[storage]` choosing it.

What every store must do (round trips, "since when", retention) runs on both backends in test_sqlite_store.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.coordinator.service.history.backends import HistoryDatabase
from tests.coordinator.service.history.test_sqlite_store import T0, make_run
from tests.postgres import PASSWORD, PostgresServer
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.service.config import ConfigError, parse_config, redact_url
from tlsfleet.coordinator.service.history import HistoryError, open_history

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'tlsfleet[postgresql]')")
from tlsfleet.coordinator.service.history.postgres_migrations import LATEST_VERSION, MIGRATIONS  # noqa: E402
from tlsfleet.coordinator.service.history.postgres_store import PostgresHistory  # noqa: E402


@pytest.fixture
def database(postgres_server: PostgresServer):  # type: ignore[no-untyped-def]
    url = postgres_server.create_database()
    yield HistoryDatabase("postgresql", url)
    postgres_server.drop_database(url)


def closed_port() -> int:
    """A loopback port bound but not listening: connecting to it is refused."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = int(holder.getsockname()[1])
    holder.close()
    return port


# --- clear errors ---------------------------------------------------------------------------------------


def test_a_server_nobody_runs_is_named_unreachable(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("history", port=closed_port())
    with pytest.raises(HistoryError) as raised:
        PostgresHistory(url, connect_timeout_s=3)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"history database postgresql://tlsfleet@127.0.0.1:{url.split(':')[3]}")
    assert "is unreachable (" in message and "check that the server runs" in message
    assert PASSWORD not in message


def test_a_wrong_password_is_named(postgres_server: PostgresServer, database: HistoryDatabase) -> None:
    url = database.location.replace(PASSWORD, "not-the-password")
    with pytest.raises(
        HistoryError, match=r"authentication failed for tlsfleet .*check the user and password"
    ) as raised:
        PostgresHistory(url)
    assert "\n" not in str(raised.value) and "not-the-password" not in str(raised.value)


def test_a_missing_database_is_named(postgres_server: PostgresServer) -> None:
    with pytest.raises(HistoryError, match=r"/absent does not exist on the server .*create it first"):
        PostgresHistory(postgres_server.url("absent"))


def test_a_newer_schema_is_refused(database: HistoryDatabase) -> None:
    PostgresHistory(database.location).close()
    database.query("INSERT INTO schema_version VALUES (?, now())", LATEST_VERSION + 1)
    with pytest.raises(HistoryError, match=f"schema version {LATEST_VERSION + 1}, newer than this tlsfleet knows"):
        PostgresHistory(database.location)


def test_another_applications_database_is_not_taken_over(database: HistoryDatabase) -> None:
    database.query("CREATE TABLE customers (id INTEGER)")
    database.query("INSERT INTO customers VALUES (1)")
    with pytest.raises(
        HistoryError, match=r"PostgreSQL database but not a tlsfleet history .*customers.*another database"
    ):
        PostgresHistory(database.location)
    assert database.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()") == [
        ("customers",)
    ]
    assert database.count("customers") == 1


def test_a_user_without_rights_on_the_schema_is_told_what_to_grant(
    postgres_server: PostgresServer, database: HistoryDatabase
) -> None:
    database.query("DROP ROLE IF EXISTS history_reader")
    database.query(f"CREATE ROLE history_reader LOGIN PASSWORD '{PASSWORD}'")
    try:
        url = database.location.replace(f"//tlsfleet:{PASSWORD}@", f"//history_reader:{PASSWORD}@")
        with pytest.raises(HistoryError, match=r"no schema on the search path is open to this user; grant it USAGE"):
            PostgresHistory(url)
        schema = url.rsplit("%3D", 1)[1]
        database.query(f"GRANT USAGE ON SCHEMA {schema} TO history_reader")  # PostgreSQL 15's `public`, as it were
        with pytest.raises(HistoryError, match=r"history_reader may not create or update its schema .*grant it CREATE"):
            PostgresHistory(url)
        database.query(f"REVOKE USAGE ON SCHEMA {schema} FROM history_reader")
    finally:
        database.query("DROP ROLE history_reader")


def test_a_bad_url_is_named() -> None:
    with pytest.raises(HistoryError, match="the URL is not accepted"):
        PostgresHistory("postgresql://u:secret@host/db?nonsense=1")


# --- migrations -----------------------------------------------------------------------------------------


def test_coordinators_starting_together_migrate_once(database: HistoryDatabase, pki: LabPKI) -> None:
    """Four stores open an empty database at the same moment: one creates the schema, the others wait
    on the advisory lock and find it current; all of them work."""
    start = threading.Barrier(4)
    opened: list[PostgresHistory] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        start.wait(timeout=10)
        try:
            opened.append(PostgresHistory(database.location))
        except BaseException as error:
            failed.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failed == [] and len(opened) == 4
        assert database.query("SELECT version FROM schema_version ORDER BY version") == [(v,) for v, _ in MIGRATIONS]
        ids = [store.save_run(make_run(pki, T0 + timedelta(minutes=i))) for i, store in enumerate(opened)]
        assert [r.run_id for r in opened[0].list_runs()] == sorted(ids, reverse=True)
    finally:
        for store in opened:
            store.close()


def test_reopening_applies_nothing_again(database: HistoryDatabase) -> None:
    PostgresHistory(database.location).close()
    applied = database.query("SELECT version, applied_at FROM schema_version")
    PostgresHistory(database.location).close()
    assert database.query("SELECT version, applied_at FROM schema_version") == applied
    assert len(applied) == LATEST_VERSION


def test_a_damaged_row_names_the_run_and_what_is_wrong(database: HistoryDatabase, pki: LabPKI) -> None:
    leaf = pki.issue_leaf("svc0.example.test", "svc1.example.test")
    with PostgresHistory(database.location) as store:
        run_id = store.save_run(make_run(pki, T0, leaf=leaf))
        database.query(
            "UPDATE shared_parts SET data = '\\x00ff00'::bytea "
            "WHERE id = (SELECT part FROM target_sightings WHERE target LIKE 'svc1.%%')"
        )
        with pytest.raises(HistoryError, match=f"/history[^ ]*: run {run_id}, target 2 is damaged: ") as raised:
            store.get_run(run_id)
        assert str(raised.value).count("history database") == 1
        second = store.save_run(make_run(pki, T0 + timedelta(minutes=15)))  # another leaf: its own observations
        database.query("DELETE FROM run_parts WHERE run_id = ?", second)
        with pytest.raises(HistoryError, match=f"run {second} has lost its targets and timings"):
            store.latest_run("prod-edge")


# --- connection ---------------------------------------------------------------------------------------


def test_a_dropped_connection_is_replaced_at_the_next_call(database: HistoryDatabase, pki: LabPKI) -> None:
    with PostgresHistory(database.location) as store:
        first = store.save_run(make_run(pki, T0))
        database.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tlsfleet-coordinator' "
            "AND datname = current_database()"
        )
        with pytest.raises(HistoryError, match="connection was lost while trying to list runs") as raised:
            store.list_runs()
        assert "\n" not in str(raised.value)
        assert [r.run_id for r in store.list_runs()] == [first]
        second = store.save_run(make_run(pki, T0 + timedelta(minutes=15)))
        assert store.get_run(second) is not None


def test_a_closed_store_says_so(database: HistoryDatabase) -> None:
    store = PostgresHistory(database.location)
    store.close()
    store.close()
    with pytest.raises(HistoryError, match="is closed"):
        store.announced("k")


def test_naive_times_are_refused(database: HistoryDatabase, pki: LabPKI) -> None:
    with PostgresHistory(database.location) as store:
        with pytest.raises(HistoryError, match="has no time zone"):
            store.save_run(replace(make_run(pki, T0), started_at=datetime(2026, 3, 1, 12, 0)))
        with pytest.raises(HistoryError, match="has no time zone"):
            store.mark_announced("k", datetime(2026, 3, 1))
        assert store.list_runs() == []


def test_times_come_back_in_utc(database: HistoryDatabase, pki: LabPKI) -> None:
    database.query("ALTER ROLE tlsfleet SET TimeZone = 'Asia/Tokyo'")  # what a server far away may have
    try:
        with PostgresHistory(database.location) as store:
            run_id = store.save_run(make_run(pki, T0))
            [summary] = store.list_runs()
            assert summary.started_at == T0 and summary.started_at.utcoffset() == timedelta(0)
            assert store.get_run(run_id).started_at.tzinfo is UTC  # type: ignore[union-attr]
    finally:
        database.query("ALTER ROLE tlsfleet RESET TimeZone")


# --- configuration --------------------------------------------------------------------------------------


def _storage(toml_storage: dict[str, object], tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_config({"storage": toml_storage}, tmp_path / "coordinator.toml").storage


def test_storage_url_chooses_postgresql(database: HistoryDatabase, tmp_path: Path) -> None:
    storage = _storage({"url": database.location, "retention_days": 7}, tmp_path)
    assert (storage.backend, storage.url, storage.retention_days) == ("postgresql", database.location, 7)
    assert PASSWORD not in storage.location and PASSWORD not in repr(storage)
    assert _storage({"backend": "postgresql", "url": database.location}, tmp_path).backend == "postgresql"
    store = open_history(storage)
    try:
        assert isinstance(store, PostgresHistory)
    finally:
        store.close()
    assert _storage({}, tmp_path).backend == "sqlite"


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"url": "mysql://u@db/history"}, "url 'mysql://u@db/history' is not accepted; accepted: postgresql://"),
        ({"url": "postgresql://u:secret@db:port/h"}, r"url 'postgresql://u@db:port/h' is not accepted \("),
        ({"url": "postgresql://u@db"}, "names no host or no database"),
        ({"backend": "postgresql"}, "backend postgresql needs url"),
        ({"backend": "sqlite", "url": "postgresql://u@db/h"}, "url is for backend postgresql"),
        ({"url": "postgresql://u@db/h", "path": "h.sqlite"}, "path is the SQLite file"),
        ({"backend": "mongodb"}, "backend 'mongodb' is not available; accepted: sqlite, postgresql"),
        ({"url": 5}, "url must be a string"),
    ],
)
def test_a_wrong_storage_table_is_one_clear_line(storage: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        _storage(storage, tmp_path)
    assert "\n" not in str(raised.value) and "secret" not in str(raised.value)


def test_passwords_are_kept_out_of_what_is_shown() -> None:
    assert redact_url("postgresql://u:p%40ss@db:5432/h?sslmode=require") == "postgresql://u@db:5432/h?sslmode=require"
    assert redact_url("postgresql://db/h?user=u&password=secret") == "postgresql://db/h?user=u"
    assert redact_url("postgresql://u@db/h") == "postgresql://u@db/h"


@pytest.mark.e2e
def test_the_cli_names_an_unreachable_server_in_one_line(postgres_server: PostgresServer, tmp_path: Path) -> None:
    port = closed_port()
    config = tmp_path / "coordinator.toml"
    config.write_text(f'[storage]\nurl = "{postgres_server.url("history", port=port)}"\n')
    done = subprocess.run(
        [*tlsfleet_command(), "report", "list", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(
        f"error: history database postgresql://tlsfleet@127.0.0.1:{port}/history is unreachable"
    )
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and PASSWORD not in done.stderr


# --- the driver, loaded only when configured ----------------------------------------------------------


def _imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run(
        [*tlsfleet_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


@pytest.mark.e2e
def test_the_driver_is_loaded_only_for_a_postgresql_history(database: HistoryDatabase, tmp_path: Path) -> None:
    sqlite_config = tmp_path / "sqlite.toml"
    sqlite_config.write_text('[storage]\npath = "history.sqlite"\n')
    postgres_config = tmp_path / "postgres.toml"
    postgres_config.write_text(database.storage_toml())
    _, at_start = _imported("--help", cwd=tmp_path)
    done, with_sqlite = _imported("report", "list", "--config", str(sqlite_config), cwd=tmp_path)
    assert done.returncode == 0 and "tlsfleet.coordinator.service.history.sqlite_store" in with_sqlite
    done, with_postgres = _imported("report", "list", "--config", str(postgres_config), cwd=tmp_path)
    assert done.returncode == 0 and "psycopg" in with_postgres and "no runs yet" in done.stdout.lower()
    assert not {m for m in at_start | with_sqlite if m.split(".")[0] == "psycopg" or "postgres" in m}


def test_a_missing_driver_says_which_extra_to_install(
    database: HistoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets where it is not installed
    monkeypatch.delitem(sys.modules, "tlsfleet.coordinator.service.history.postgres_store")
    with pytest.raises(HistoryError, match=r"driver cannot be loaded .*pip install 'tlsfleet\[postgresql\]'"):
        database.open()
