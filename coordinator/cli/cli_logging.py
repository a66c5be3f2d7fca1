"""The CLI's logging set-up, imported without the parts of rich that structlog would load for itself."""

from __future__ import annotations

import sys


def configure_cli_logging() -> None:
    """`agent.logs.configure_cli_logging`, deferred to the first line logged (a run that logs nothing never
    imports structlog: some 6 ms), with structlog imported while rich is hidden from it.

    structlog's console renderer formats exceptions with rich when it can import it, and importing rich's
    traceback support brings pygments and rich.pretty (which imports attrs): some 30 ms of a CLI run that
    logs no exception. Hidden only during that import, structlog formats tracebacks itself, and the
    tables and live lines import rich as usual when they are shown (a `--json` run never imports it).
    """
    from ...agent.logs import defer_configuration

    defer_configuration(_configure_now, "warning")


def _configure_now() -> None:
    from ...agent.logs import configure_cli_logging as configure

    hidden = "rich" not in sys.modules and "structlog" not in sys.modules
    if hidden:
        sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` raise ImportError
    try:
        configure()  # imports structlog
    finally:
        if hidden and sys.modules.get("rich", False) is None:
            del sys.modules["rich"]
