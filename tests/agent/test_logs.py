"""Service logs are JSON lines (or console lines when asked), the standard library's loggers included;
a bad --log-level or --log-format is one clear error."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from tlsfleet.agent import logs
from tlsfleet.agent.logs import LogOptionError, configure_cli_logging, configure_service_logging


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    logs._pending = None  # a deferred set-up no line ran


def test_stdlib_records_become_json_lines_like_structlogs_own() -> None:
    out = io.StringIO()
    configure_service_logging("info", stream=out)
    structlog.get_logger().info("agent_listening", port=7443)
    logging.getLogger("grpc._cython.cygrpc").warning("Unexpected error in %s", "poller")
    logging.getLogger("asyncio").debug("below the level, dropped")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["agent_listening", "Unexpected error in poller"]
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "grpc._cython.cygrpc"
    assert all("timestamp" in line for line in lines)


def test_console_format_is_for_people() -> None:
    out = io.StringIO()
    configure_service_logging("info", stream=out, log_format="console")
    structlog.get_logger().info("agent_listening", port=7443)
    text = out.getvalue()
    assert "agent_listening" in text and "port=7443" in text
    with pytest.raises(ValueError):
        json.loads(text.splitlines()[0])


def test_cli_logging_routes_stdlib_records_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_cli_logging("warning")
    logging.getLogger("asyncio").warning("Task was destroyed but it is pending!")
    assert "Task was destroyed but it is pending!" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("level", "log_format", "named"),
    [("loud", "json", "log level 'loud'"), ("info", "xml", "log format 'xml'")],
)
def test_bad_options_name_what_is_accepted(level: str, log_format: str, named: str) -> None:
    with pytest.raises(LogOptionError, match=named) as error:
        configure_service_logging(level, stream=io.StringIO(), log_format=log_format)
    assert "accepted:" in str(error.value)


def test_a_deferred_configuration_runs_once_before_the_first_line() -> None:
    out = io.StringIO()
    calls: list[str] = []

    def configure() -> None:
        calls.append("configured")
        configure_service_logging("info", stream=out)

    logs.defer_configuration(configure, "warning")
    log = logs.get_logger("tlsfleet.test")
    assert calls == []  # nothing logged yet: nothing configured
    log.warning("first_line", n=1)
    log.warning("second_line", n=2)
    assert calls == ["configured"]
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["first_line", "second_line"]


def test_a_standard_library_record_configures_a_deferred_set_up_and_is_logged_by_it() -> None:
    out = io.StringIO()
    logs.defer_configuration(lambda: configure_service_logging("info", stream=out), "warning")
    logging.getLogger("asyncio").info("below the deferred level: nothing configured")
    assert out.getvalue() == ""
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    [line] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["event"] == "Task exception was never retrieved" and line["logger"] == "asyncio"
    with pytest.raises(LogOptionError):
        logs.defer_configuration(lambda: None, "loud")


def test_lines_below_the_deferred_level_are_dropped_without_configuring() -> None:
    out = io.StringIO()
    calls: list[str] = []

    def configure() -> None:
        calls.append("configured")
        configure_service_logging("warning", stream=out)

    logs.defer_configuration(configure, "warning")
    log = logs.get_logger("tlsfleet.test")
    log.debug("quiet_detail")
    log.info("report_run_started", targets=200)
    assert calls == [] and out.getvalue() == ""  # the set-up (and structlog with it) not loaded for them
    log.error("loud_line")
    log.info("after_set_up_still_filtered")
    assert calls == ["configured"]
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud_line"]


def test_a_cli_run_that_logs_only_below_warning_never_imports_structlog() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from tlsfleet.coordinator.cli.cli_logging import configure_cli_logging\n"
        "from tlsfleet.agent.logs import get_logger\n"
        "configure_cli_logging()\n"
        "log = get_logger('tlsfleet.coordinator')\n"
        "log.info('report_run_started', report='r', targets=2)\n"
        "print('structlog' in sys.modules)\n"
        "log.warning('run_started_without_agents', missing=1)\n"
        "print('structlog' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "True"]
    assert "run_started_without_agents" in done.stderr and "report_run_started" not in done.stderr
