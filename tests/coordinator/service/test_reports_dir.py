"""A reports_dir that cannot hold reports: refused at start, and a run whose reports cannot be written still
keeps its history row and queues its alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog.testing

from tests.coordinator.service.history.backends import HistoryDatabase
from tests.coordinator.service.test_delivery import expiring_run, service_config
from tlsfleet.agent.errors import UsageError
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.service.pipeline import Pipeline
from tlsfleet.coordinator.service.reports.writer import check_reports_dir


def test_a_file_where_the_reports_go_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "reports").write_text("not a directory")
    for directory in (tmp_path / "reports", tmp_path / "reports" / "deeper"):
        with pytest.raises(UsageError, match=r"reports_dir .*reports is not a directory"):
            check_reports_dir(directory)


def test_a_directory_still_to_be_made_is_accepted(tmp_path: Path) -> None:
    check_reports_dir(tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()  # checked, not created


def test_a_run_whose_reports_cannot_be_written_keeps_its_row_and_alerts(
    tmp_path: Path, history_db: HistoryDatabase, pki: LabPKI
) -> None:
    config = service_config(tmp_path, history_db, "http://127.0.0.1:9/hook")
    config.reports_dir.write_text("the directory was replaced by a file after start")

    async def run() -> tuple[int | None, int]:
        with history_db.open() as history:  # type: ignore[attr-defined]
            pipeline = Pipeline(config, history)
            try:
                done = await pipeline.complete(config.reports[0], expiring_run(pki, 0))
            finally:
                await pipeline.close()
            return done.run.run_id, done.queued

    with structlog.testing.capture_logs() as logs:
        run_id, queued = asyncio.run(run())
    assert run_id is not None and queued >= 1
    (failed,) = [e for e in logs if e["event"] == "reports_not_written"]
    assert failed["report"] == "prod-edge" and "Not a directory" in failed["reason"]
