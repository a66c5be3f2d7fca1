"""Reports of a scheduled run: Markdown, one self-contained HTML page, and JSON; and writing them to disk."""

from __future__ import annotations

from .html import render_html
from .json_report import render_json
from .markdown import render_markdown
from .writer import EXTENSIONS, FORMATS, report_paths, write_reports

__all__ = ["EXTENSIONS", "FORMATS", "render_html", "render_json", "render_markdown", "report_paths", "write_reports"]
