"""Logging set-up: services write structlog JSON lines (or console lines when asked), the CLI writes short
lines for humans. The standard library's loggers (gRPC's Python side, asyncio) go through the same
renderer; with gRPC's C core kept quiet (`command.quiet_grpc_core`), a service's stderr holds nothing but
its own lines.

Modules log through `get_logger`, which imports structlog when a line is first logged: a short command that
logs nothing (a probe from this machine, as a rule) never loads it. The CLI's set-up may be deferred the same
way (`defer_configuration`): it runs before the first line at its level, from structlog or from the standard
library, and a command whose lines all fall below that level (a report run's progress, at the CLI's warning
level) never loads structlog at all."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from .errors import UsageError

LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


class LogOptionError(UsageError):
    """A --log-level or --log-format value that is not accepted."""


def get_logger(name: str) -> Any:
    """structlog's logger `name`, imported and configured when it first logs."""
    return _Deferred(name)


class _Deferred:
    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            if _pending is not None and _METHOD_LEVELS.get(attr, logging.CRITICAL) < _pending_level:
                return _dropped  # below the level the deferred set-up will log at: no need to load it
            settle()
            import structlog

            logger = self._logger = structlog.get_logger(self._name)
        return getattr(logger, attr)


_pending: Callable[[], None] | None = None
_pending_level = logging.NOTSET
_pending_lock = threading.Lock()
# A logger's methods by the level of the line each logs.
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _dropped(*_args: Any, **_kwargs: Any) -> None:
    return None


def defer_configuration(configure: Callable[[], None], level: str) -> None:
    """Run `configure` (which imports structlog) before the first line at `level` or above is logged, rather
    than now: `level` is the one `configure` logs at, and lines below it are dropped without running it.
    Records of the standard library's loggers at `level` or above log the first line as well."""
    global _pending, _pending_level
    number = level_number(level)  # refused now, not at the first line
    with _pending_lock:
        _pending, _pending_level = configure, number
    root = logging.getLogger()
    root.handlers[:] = [_SettleFirst()]
    root.setLevel(number)


def settle() -> None:
    """Run a deferred configuration, once."""
    global _pending
    with _pending_lock:
        configure, _pending = _pending, None
        if configure is not None:
            configure()


class _SettleFirst(logging.Handler):
    """The root handler until logging is configured: the first record configures it, then goes through the
    handlers the configuration installed."""

    def emit(self, record: logging.LogRecord) -> None:
        settle()
        for handler in logging.getLogger().handlers:
            if handler is not self:
                handler.handle(record)


def configure_service_logging(level: str = "info", stream: TextIO | None = None, log_format: str = "json") -> None:
    """One event per line on stderr (or `stream`), with an ISO timestamp and level: JSON, or `console`
    lines for a person at a terminal."""
    import structlog

    renderer = _renderer(log_format, colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    out = stream or sys.stderr
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        # One write(2) per line (PrintLogger makes two): an agent logs a line per probe.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(out, level, shared, renderer)


def configure_cli_logging(level: str = "warning") -> None:
    """Short human-readable lines on stderr; the CLI's real output goes to stdout."""
    import structlog

    renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared: list[Any] = [structlog.processors.add_log_level]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(sys.stderr, level, shared, renderer)


def level_number(level: str) -> int:
    if level.lower() not in LOG_LEVELS:
        raise LogOptionError(f"unknown log level {level!r}; accepted: {', '.join(LOG_LEVELS)}")
    return logging.getLevelNamesMapping()[level.upper()]


def check_log_format(log_format: str) -> str:
    if log_format not in LOG_FORMATS:
        raise LogOptionError(f"unknown log format {log_format!r}; accepted: {', '.join(LOG_FORMATS)}")
    return log_format


def _renderer(log_format: str, *, colors: bool) -> Any:
    import structlog

    if check_log_format(log_format) == "console":
        return structlog.dev.ConsoleRenderer(colors=colors)
    return structlog.processors.JSONRenderer()


def _route_stdlib(stream: TextIO, level: str, shared: list[Any], renderer: Any) -> None:
    """Records of the standard library's loggers become lines of the same shape as structlog's own."""
    import structlog

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number(level))
