"""Report files go with the history, or sooner: per-run files of runs older than report_files_days are removed,
the `latest.*` copies and anything else in the folders stay; the service's pruning loop does both, and keeps
in the history the runs whose files went."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tlsfleet.coordinator.service.config import ServiceConfig, load_config
from tlsfleet.coordinator.service.history import open_history
from tlsfleet.coordinator.service.report_model import ReportRun
from tlsfleet.coordinator.service.reports.writer import prune_reports
from tlsfleet.coordinator.service.scheduler import CoordinatorService

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _files(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(name)


def test_old_run_files_go_latest_and_strangers_stay(tmp_path: Path) -> None:
    old = (NOW - timedelta(days=40)).strftime("%Y%m%dT%H%M%SZ")
    new = (NOW - timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
    _files(tmp_path / "edge", f"1-{old}.html", f"1-{old}.md", f"1-{old}.json", f"9-{new}.html", "latest.html")
    _files(tmp_path / "core", f"unsaved-{old}.json", "notes.txt", f"2-{old}.html.bak")
    removed = prune_reports(tmp_path, NOW - timedelta(days=30))
    assert removed == 4
    assert sorted(p.name for p in (tmp_path / "edge").iterdir()) == [f"9-{new}.html", "latest.html"]
    assert sorted(p.name for p in (tmp_path / "core").iterdir()) == [f"2-{old}.html.bak", "notes.txt"]
    assert prune_reports(tmp_path / "missing", NOW) == 0


def _prune_until_gone(config: ServiceConfig, gone: Path) -> None:
    """Run the service's pruning loop until `gone` is removed (or two seconds pass), then stop it."""

    async def one_pass() -> None:
        history = open_history(config.storage)
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(CoordinatorService(config)._prune(history, stop))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if not await asyncio.to_thread(gone.exists):
                    break
            stop.set()
            await task
        finally:
            history.close()

    asyncio.run(one_pass())


def test_report_files_go_before_their_runs_leave_the_history(tmp_path: Path) -> None:
    config_file = tmp_path / "coordinator.toml"
    config_file.write_text(
        '[coordinator]\nreports_dir = "reports"\n[storage]\npath = "h.sqlite"\nretention_days = 30\n'
        'report_files_days = 2\n[[report]]\nname = "edge"\ntargets = ["localhost:1"]\ninterval = "1h"\n'
    )
    config = load_config(config_file)
    started = datetime.now(UTC) - timedelta(days=3)
    history = open_history(config.storage)
    try:
        empty = ReportRun(report="edge", started_at=started, finished_at=started, targets=(), agents=())
        run_id = history.save_run(empty)
    finally:
        history.close()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    fresh = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _files(tmp_path / "reports" / "edge", f"{run_id}-{stamp}.html", f"{run_id}-{stamp}.json", f"99-{fresh}.html")

    _prune_until_gone(config, tmp_path / "reports" / "edge" / f"{run_id}-{stamp}.html")
    assert [p.name for p in (tmp_path / "reports" / "edge").iterdir()] == [f"99-{fresh}.html"]
    history = open_history(config.storage)
    try:
        assert [r.run_id for r in history.list_runs("edge", limit=5)] == [run_id]  # still renderable
    finally:
        history.close()


def test_the_service_prunes_report_files_with_the_history(tmp_path: Path) -> None:
    config_file = tmp_path / "coordinator.toml"
    config_file.write_text(
        '[coordinator]\nreports_dir = "reports"\n[storage]\npath = "h.sqlite"\nretention_days = 7\n'
        '[[report]]\nname = "edge"\ntargets = ["localhost:1"]\ninterval = "1h"\n'
    )
    config = load_config(config_file)
    ancient = datetime(2020, 1, 1, tzinfo=UTC).strftime("%Y%m%dT%H%M%SZ")
    _files(tmp_path / "reports" / "edge", f"3-{ancient}.html", "latest.html")

    _prune_until_gone(config, tmp_path / "reports" / "edge" / f"3-{ancient}.html")
    assert [p.name for p in (tmp_path / "reports" / "edge").iterdir()] == ["latest.html"]
