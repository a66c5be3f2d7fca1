"""Reports of a scheduled run: Markdown, one self-contained HTML page, and JSON; and writing them to disk."""

from __future__ import annotations

from tlsfleet.coordinator.reports.html import render_html
from tlsfleet.coordinator.reports.json_report import render_json
from tlsfleet.coordinator.reports.markdown import render_markdown
from tlsfleet.coordinator.reports.writer import EXTENSIONS, FORMATS, report_paths, write_reports

__all__ = ["EXTENSIONS", "FORMATS", "render_html", "render_json", "render_markdown", "report_paths", "write_reports"]
