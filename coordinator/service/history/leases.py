"""Leases of report slots, for either store: the SQL is the same in both dialects but for the parameter
marker (`?`, `%s`) and how times are written and read back, which each store gives. Every method runs
inside the caller's write transaction.

A slot is run once. Its lease is claimed by inserting it (the first insert wins), renewed by its holder
while the run goes, and marked done with the run's id. A lease that expired unfinished is never taken
over: its holder died or went silent mid-run, and the run is recorded as interrupted, by whichever
coordinator sweeps first.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .store import SlotLease

# The columns `LeaseSql._lease` reads, in its order.
LEASE_COLUMNS = "report, slot, owner, claimed_at, renewed_at, expires_at, done_at, run_id, interrupted"


class LeaseSql:
    """One store's connection seen through its dialect: `mark` is its parameter marker, `write_time` turns
    an aware datetime into what its time columns hold, `read_time` the reverse."""

    def __init__(
        self, db: Any, *, mark: str, write_time: Callable[[datetime, str], Any], read_time: Callable[[Any], datetime]
    ) -> None:
        self._db = db
        self._mark = mark
        self._write_time = write_time
        self._read_time = read_time

    def _run(self, sql: str, *params: Any) -> Any:
        return self._db.execute(sql.replace("?", self._mark), params)

    def _lease(self, row: tuple[Any, ...]) -> SlotLease:
        report, slot, owner, claimed, renewed, expires, done, run_id, interrupted = row
        return SlotLease(
            report=report,
            slot=self._read_time(slot),
            owner=owner,
            claimed_at=self._read_time(claimed),
            renewed_at=self._read_time(renewed),
            expires_at=self._read_time(expires),
            done_at=None if done is None else self._read_time(done),
            run_id=None if run_id is None else int(run_id),
            interrupted=bool(interrupted),
        )

    def claim(self, report: str, slot: datetime, owner: str, now: datetime, expires_at: datetime) -> SlotLease:
        at, when = self._write_time(slot, "slot"), self._write_time(now, "claim time")
        running = self._run(
            f"SELECT {LEASE_COLUMNS} FROM report_leases WHERE report = ? AND slot <> ? AND done_at IS NULL "
            "AND expires_at >= ? ORDER BY slot DESC LIMIT 1",
            report,
            at,
            when,
        ).fetchone()
        if running is not None:
            return self._lease(running)
        # A concurrent claim of the same slot waits for the first one's commit, then inserts nothing.
        self._run(
            "INSERT INTO report_leases (report, slot, owner, claimed_at, renewed_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (report, slot) DO NOTHING",
            report,
            at,
            owner,
            when,
            when,
            self._write_time(expires_at, "lease end"),
        )
        row = self._run(f"SELECT {LEASE_COLUMNS} FROM report_leases WHERE report = ? AND slot = ?", report, at)
        return self._lease(row.fetchone())

    def renew(self, report: str, slot: datetime, owner: str, now: datetime, expires_at: datetime) -> bool:
        done = self._run(
            "UPDATE report_leases SET renewed_at = ?, expires_at = ? "
            "WHERE report = ? AND slot = ? AND owner = ? AND done_at IS NULL",
            self._write_time(now, "renewal time"),
            self._write_time(expires_at, "lease end"),
            report,
            self._write_time(slot, "slot"),
            owner,
        )
        return int(done.rowcount) == 1

    def finish(self, report: str, slot: datetime, owner: str, at: datetime, run_id: int | None) -> bool:
        done = self._run(
            "UPDATE report_leases SET done_at = ?, run_id = ? "
            "WHERE report = ? AND slot = ? AND owner = ? AND done_at IS NULL",
            self._write_time(at, "finish time"),
            run_id,
            report,
            self._write_time(slot, "slot"),
            owner,
        )
        return int(done.rowcount) == 1

    def interrupt_expired(self, now: datetime) -> list[SlotLease]:
        when = self._write_time(now, "sweep time")
        expired = self._run(
            "SELECT report, slot FROM report_leases WHERE done_at IS NULL AND expires_at < ? ORDER BY report, slot",
            when,
        ).fetchall()
        interrupted = []
        # One row at a time, in one order: a concurrent sweep waits on the row and then finds it done, and
        # two sweeps never lock rows in opposite orders.
        for report, slot in expired:
            row = self._run(
                "UPDATE report_leases SET done_at = ?, interrupted = ? "
                "WHERE report = ? AND slot = ? AND done_at IS NULL AND expires_at < ? "
                f"RETURNING {LEASE_COLUMNS}",
                when,
                True,
                report,
                slot,
                when,
            ).fetchone()
            if row is None:
                continue
            lease = self._lease(row)
            run = self._run(
                "INSERT INTO runs (report, started_at, finished_at, abandoned, note) VALUES (?, ?, ?, ?, ?) "
                "RETURNING id",
                report,
                row[3],  # claimed_at, as stored
                row[4],  # renewed_at: when the holder was last heard of
                True,
                interrupted_note(lease),
            ).fetchone()
            run_id = int(run[0])
            self._run("UPDATE report_leases SET run_id = ? WHERE report = ? AND slot = ?", run_id, report, slot)
            interrupted.append(replace(lease, run_id=run_id))
        return interrupted


def interrupted_note(lease: SlotLease) -> str:
    def utc(value: datetime) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    return (
        f"interrupted: coordinator {lease.owner} held this run (slot {utc(lease.slot)}) and went silent "
        f"after {utc(lease.renewed_at)}; its lease expired at {utc(lease.expires_at)}"
    )


class SlotLeases:
    """The HistoryStore's lease methods, for a store that gives its write transaction (`_write`) and its
    dialect (`_leases`)."""

    def _write(self, action: str) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _leases(self, db: Any) -> LeaseSql:
        raise NotImplementedError

    def claim_slot(self, report: str, slot: datetime, owner: str, now: datetime, expires_at: datetime) -> SlotLease:
        with self._write("claim a report slot") as db:
            return self._leases(db).claim(report, slot, owner, now, expires_at)

    def renew_slot(self, report: str, slot: datetime, owner: str, now: datetime, expires_at: datetime) -> bool:
        with self._write("renew a report slot's lease") as db:
            return self._leases(db).renew(report, slot, owner, now, expires_at)

    def finish_slot(self, report: str, slot: datetime, owner: str, at: datetime, run_id: int | None) -> bool:
        with self._write("finish a report slot") as db:
            return self._leases(db).finish(report, slot, owner, at, run_id)

    def interrupt_expired(self, now: datetime) -> list[SlotLease]:
        with self._write("record interrupted runs") as db:
            return self._leases(db).interrupt_expired(now)
