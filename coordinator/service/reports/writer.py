"""Writing a run's reports to disk: one file per run and format, plus `latest.<ext>` for each format.

Every file is written to a temporary name in the same directory and renamed into place, so a reader
(a web server, a person refreshing the page) sees the previous complete file or the new one, never half.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ....agent.errors import UsageError
from ..report_model import Change, ReportRun
from .html import render_html
from .json_report import DEFAULT_CRITICAL_DAYS, DEFAULT_WARNING_DAYS, check_thresholds, iter_json
from .markdown import render_markdown

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "ReportsDirError",
    "check_reports_dir",
    "prune_reports",
    "report_paths",
    "write_reports",
]

FORMATS = ("html", "markdown", "json")
EXTENSIONS = {"html": "html", "markdown": "md", "json": "json"}
# The report name becomes a directory: nothing that could climb out of it or hide it.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A per-run file as report_paths names it; `latest.*` and anything else in the folder never matches.
_RUN_FILE = re.compile(r"^(?:\d+|unsaved)-(\d{8}T\d{6}Z)\.(?:html|md|json)$")

Renderer = Callable[[ReportRun, Sequence[Change], float, float], Iterator[str]]


_RENDERERS: dict[str, Renderer] = {
    "html": lambda r, c, w, k: iter((render_html(r, c, expiry_warning_days=w, expiry_critical_days=k),)),
    "markdown": lambda r, c, w, k: iter((render_markdown(r, c, expiry_warning_days=w, expiry_critical_days=k),)),
    "json": lambda r, c, w, k: iter_json(r, c, expiry_warning_days=w, expiry_critical_days=k),
}


class ReportsDirError(UsageError):
    """A reports_dir that cannot hold reports; the message names it and what is needed."""


def check_reports_dir(directory: Path) -> None:
    """Refuse, before any run, a reports_dir that is a file or sits under one, or that this user cannot write."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ReportsDirError(
            f"[coordinator] reports_dir {directory}: {existing} is not a directory; name one to write reports in"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReportsDirError(f"[coordinator] reports_dir {directory}: {existing} is not writable by this user")


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"report format {unknown[0]!r} is not known; accepted: {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"no report format given; accepted: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def report_paths(run: ReportRun, directory: Path, fmt: str) -> tuple[Path, Path]:
    """Where a run's report in `fmt` goes: `<report>/<run_id>-<UTC start>.<ext>`, and `<report>/latest.<ext>`."""
    (fmt,) = _check_formats([fmt])
    if not _SAFE_NAME.match(run.report):
        raise ValueError(
            f"report name {run.report!r} cannot name a directory; accepted: 1-128 characters of letters, digits, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    ext = EXTENSIONS[fmt]
    stamp = run.started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = str(run.run_id) if run.run_id is not None else "unsaved"
    base = Path(directory) / run.report
    return base / f"{run_id}-{stamp}.{ext}", base / f"latest.{ext}"


def write_reports(
    run: ReportRun,
    changes: Sequence[Change],
    directory: Path,
    formats: Sequence[str],
    *,
    expiry_warning_days: float = DEFAULT_WARNING_DAYS,
    expiry_critical_days: float = DEFAULT_CRITICAL_DAYS,
) -> list[Path]:
    """Render and write each format; returns the per-run files written (the `latest.*` copies are not listed)."""
    chosen = _check_formats(formats)
    check_thresholds(expiry_warning_days, expiry_critical_days)
    # One format at a time: a fleet-sized report is tens of megabytes per format, and holding every format
    # at once is what would set the coordinator's peak memory.
    written = []
    for fmt in chosen:
        path, latest = report_paths(run, directory, fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, _RENDERERS[fmt](run, changes, expiry_warning_days, expiry_critical_days))
        _atomic_link(path, latest)
        written.append(path)
    return written


def _atomic_link(source: Path, path: Path) -> None:
    """Point `path` at `source`'s bytes: a hard link where the file system has them (a fleet-sized report is
    tens of megabytes a format, written once instead of twice a run), a copy where it has not. Pruning the
    per-run file later leaves `latest.*` whole."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.unlink(temp)
        try:
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
            os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, chunks: Iterator[str]) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; reports are meant to be read (by a web server, say) like any other file.
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def prune_reports(directory: Path, before: datetime) -> int:
    """Remove the per-run report files of runs started before `before` (the history's retention), in every
    report's folder under `directory`; `latest.*` stays. Returns how many files went."""
    removed = 0
    root = Path(directory)
    if not root.is_dir():
        return 0
    for folder in root.iterdir():
        if not folder.is_dir() or not _SAFE_NAME.match(folder.name):
            continue
        for path in folder.iterdir():
            match = _RUN_FILE.match(path.name)
            if match is None:
                continue
            started = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            if started < before:
                path.unlink(missing_ok=True)
                removed += 1
    return removed
