"""Logging set-up: services write structlog JSON lines, the CLI writes short lines for humans."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_service_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or `stream`), one event per line, with an ISO timestamp and level."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def configure_cli_logging(level: str = "warning") -> None:
    """Short human-readable lines on stderr; the CLI's real output goes to stdout."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; accepted: debug, info, warning, error")
    return number
