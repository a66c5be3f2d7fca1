"""The coordinator service's configuration: a full example reads back, every mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsfleet.coordinator.diagnosis.model import Severity
from tlsfleet.coordinator.service.config import ConfigError, load_config, parse_duration

EXAMPLE = """
[coordinator]
inventory = "inventory.toml"
reports_dir = "out"
metrics_listen = "127.0.0.1:0"
max_probes_in_flight = 50

[storage]
path = "db/history.sqlite"
retention_days = 14

[[report]]
name = "prod-edge"
targets = ["api.example.com:443", "login.example.com"]
agents = "env=prod"
schedule = "*/15 * * * *"
jitter = "30s"
deadline = "2m"
probe_timeout = "8s"
formats = ["html", "json"]
notify_min_severity = "warning"
webhooks = ["oncall"]

[[report]]
name = "nightly"
targets = ["internal.example:8443"]
interval = "1h"

[[webhook]]
name = "oncall"
url = "http://127.0.0.1:9999/hook"
format = "slack"
timeout = "3s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coordinator.toml"
    path.write_text(text)
    return path


def test_full_example_reads_back(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.inventory == tmp_path / "inventory.toml"
    assert config.reports_dir == tmp_path / "out"
    assert config.storage.path == tmp_path / "db/history.sqlite" and config.storage.retention_days == 14
    assert config.max_probes_in_flight == 50 and config.metrics_listen == "127.0.0.1:0"
    edge = config.report("prod-edge")
    assert edge.targets == ("api.example.com:443", "login.example.com")
    assert edge.schedule == "*/15 * * * *" and edge.interval_s is None
    assert (edge.jitter_s, edge.deadline_s, edge.probe_timeout_s) == (30, 120, 8)
    assert edge.formats == ("html", "json") and edge.notify_min_severity is Severity.WARNING
    assert edge.webhooks == ("oncall",)
    nightly = config.report("nightly")
    assert nightly.interval_s == 3600 and nightly.schedule is None
    assert nightly.formats == ("html", "markdown", "json")
    assert config.webhook("oncall").format == "slack" and config.webhook("oncall").timeout_s == 3


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('schedule = "*/15 * * * *"', 'schedule = "every minute"', "is not a cron expression"),
        ('interval = "1h"', 'interval = "1h"\nschedule = "* * * * *"', "exactly one of schedule"),
        ('jitter = "30s"', 'jitter = "soon"', "is not a duration"),
        ('url = "http://127.0.0.1:9999/hook"', 'url = "ftp://x"', "http:// or https:// only"),
        ('webhooks = ["oncall"]', 'webhooks = ["pager"]', "must name [[webhook]] entries"),
        ('name = "nightly"', 'name = "prod-edge"', "'prod-edge' is given twice"),
        ('targets = ["internal.example:8443"]', 'targets = ["internal.example:99999"]', "65535"),
        ('targets = ["internal.example:8443"]', "targets = []", "non-empty list"),
        ('formats = ["html", "json"]', 'formats = ["pdf"]', "a list of html, markdown, json"),
        ('metrics_listen = "127.0.0.1:0"', 'metrics_listen = "nowhere"', "metrics_listen"),
        ("retention_days = 14", "retention_days = 0", "retention_days"),
        ('agents = "env=prod"', 'agents = "env=prod,bad term"', "selector term"),
        ('notify_min_severity = "warning"', 'notify_min_severity = "loud"', "info, warning, critical"),
        ('probe_timeout = "8s"', 'probe_timeout = "10m"', "probe_timeout"),
        ("[storage]", "[storage]\ncolour = 1", "unknown key"),
        ('timeout = "3s"', 'timeout = "3s"\nretries = 2', "retries is no longer read"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    assert old in EXAMPLE
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, EXAMPLE.replace(old, new, 1)))
    assert fragment in str(caught.value)
    assert str(tmp_path / "coordinator.toml") in str(caught.value)


def test_report_files_are_kept_a_week_at_most_and_never_past_the_history(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, EXAMPLE)).storage.report_files_days == 7
    short = EXAMPLE.replace("retention_days = 14", "retention_days = 3", 1)
    assert load_config(write(tmp_path, short)).storage.report_files_days == 3
    chosen = EXAMPLE.replace("retention_days = 14", "retention_days = 14\nreport_files_days = 0.5", 1)
    assert load_config(write(tmp_path, chosen)).storage.report_files_days == 0.5


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[[report]\n"))
    with pytest.raises(ConfigError, match="nests arrays or tables too deeply"):
        load_config(write(tmp_path, "x = " + "{a = " * 10_000 + "1" + "}" * 10_000))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_unknown_report_is_named(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    with pytest.raises(ConfigError, match="defined: prod-edge, nightly"):
        config.report("staging")


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (5, 5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('interval = "1h"', 'interval = "99999999d"', "interval must be 1 s to 366 d"),
        ('interval = "1h"', "interval = nan", "not a finite duration"),
        ('interval = "1h"', "interval = inf", "not a finite duration"),
        ('jitter = "30s"', "jitter = nan", "not a finite duration"),
        ('jitter = "30s"', 'jitter = "9999999999d"', "jitter must be at most 1 d"),
        ('jitter = "30s"', 'jitter = "30s"\nclock_tolerance = inf', "not a finite duration"),
        ('jitter = "30s"', 'jitter = "30s"\nclock_tolerance = "30d"', "clock_tolerance must be at most"),
        ("retention_days = 14", "retention_days = 14\nreport_files_days = 15", "at most retention_days (14)"),
        ("retention_days = 14", "retention_days = 14\nreport_files_days = 0", "report_files_days must be a number"),
        ("retention_days = 14", "retention_days = 14\nreport_files_days = true", "report_files_days must be a number"),
        ("retention_days = 14", "retention_days = nan", "retention_days must be a number above 0 and at most"),
        ("retention_days = 14", "retention_days = inf", "retention_days must be a number above 0 and at most"),
        ('jitter = "30s"', 'jitter = "30s"\nexpiry_warning_days = inf', "expiry_warning_days must be a number"),
        ('webhooks = ["oncall"]', "webhooks = [{}]", "must name [[webhook]] entries"),
        ('agents = "env=prod"', 'agents = ["env=prod"]', "agents must be a selector string"),
        ("max_probes_in_flight = 50", "max_probes_in_flight = 50\nshutdown_grace = nan", "not a finite duration"),
    ],
)
def test_values_that_would_overflow_a_schedule_are_named(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    """NaN, infinity and huge durations, and values of the wrong type, are refused in one line rather than
    accepted and crashing the scheduler (datetime overflow) or the diagnosis (timedelta of infinity)."""
    assert old in EXAMPLE
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, EXAMPLE.replace(old, new, 1)))
    assert fragment in str(caught.value)
    assert str(tmp_path / "coordinator.toml") in str(caught.value)
