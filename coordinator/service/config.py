"""The coordinator service's configuration: a TOML file of reports, webhooks, storage and limits.

[coordinator]
inventory = "inventory.toml"        # relative paths are relative to this file
reports_dir = "reports"
metrics_listen = "127.0.0.1:9464"   # Prometheus /metrics; leave out to serve none
max_probes_in_flight = 200          # agents x targets probing at once, across all reports
shutdown_grace = "10s"              # on SIGTERM, how long runs in flight may finish before abandoned

[storage]
backend = "sqlite"                  # or "postgresql", with url = "postgresql://user@host:port/db"
path = "history.sqlite"
retention_days = 30
report_files_days = 7               # per-run report files kept (latest.* always); `report show ID` renders older runs
lease_expiry = "30s"                # a report slot's lease: coordinators sharing the history run it once

[[report]]
name = "prod-edge"
targets = ["api.example.com:443", "login.example.com"]
agents = "env=prod"                 # a selector, as `--agents`; default: every agent
include_local = false
schedule = "*/15 * * * *"           # cron (UTC), or: interval = "15m" (1 s to 366 d)
jitter = "30s"                      # delay before each run, at most 1 d (default: a tenth of the period, <= 30 s)
deadline = "120s"                   # the whole run
probe_timeout = "10s"               # one target's fan-out
formats = ["html", "markdown", "json"]
expiry_warning_days = 30
expiry_critical_days = 7
clock_tolerance = "2s"
starttls = "none"                   # or smtp, imap, pop3, ftp, ldap, postgres, mysql, xmpp; default: by port
notify_min_severity = "critical"
webhooks = ["oncall"]

[[webhook]]
name = "oncall"
url = "https://hooks.example.com/..."
format = "slack"                    # or "json"
timeout = "5s"                      # per attempt; the service retries until delivered or a day old

[agent_link]                        # agents that dial in (`agent serve --connect`); leave out for none
listen = "0.0.0.0:7443"             # mutual TLS with the inventory's [coordinator] credentials
allow = ["edge-*"]                  # agents besides the inventory's that may dial in (shell-style)
min_agent_version = "0.1.0"         # older agents are refused, with the reason in their log
heartbeat_interval = "5s"           # agents send one this often ...
stale_after = 3                     # ... and one silent for this many intervals is shown stale
wait_at_start = "35s"               # after start, a run waits this long at most for its agents to dial back
query_allow = ["coordinator"]       # coordinator identities that may ask (`tlsfleet probe --coordinator`)
max_agents = 10000

[probe_endpoint]                    # GET /probe?target=HOST:PORT&agents=SELECTOR at metrics_listen; leave out for none
max_concurrent = 4                  # /probe requests at once; more are answered 503 at once
max_timeout = "10s"                 # a probe's deadline: Prometheus's scrape timeout less 0.5 s, at most this
"""

from __future__ import annotations

import math
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...agent.bounded_read import FileTooLarge, read_capped_text
from ...agent.endpoints import EndpointError, split_host_port
from ...agent.errors import UsageError
from ...agent.model import Starttls
from ..diagnosis.model import Severity
from ..fleet.selector import SelectorError, parse_selector

MAX_CONFIG_BYTES = 4 * 1024 * 1024
STORAGE_BACKENDS = ("sqlite", "postgresql")
POSTGRESQL_URL = "postgresql://USER@HOST:PORT/DATABASE"
MAX_TARGETS_PER_REPORT = 10_000
# A lease is renewed a few times within its expiry; below a second, a busy database could miss it.
MIN_LEASE_EXPIRY_S = 1.0
MAX_LEASE_EXPIRY_S = 3600.0
REPORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FORMATS = ("html", "markdown", "json")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Bounds on what becomes a timedelta or a schedule step: beyond them datetime arithmetic overflows.
MAX_INTERVAL_S = 366 * 86400.0
MAX_JITTER_S = 86400.0
MAX_CLOCK_TOLERANCE_S = 86400.0
MAX_DAYS = 36500


class ConfigError(UsageError):
    """The configuration cannot be used; the message names the file, the entry and what is accepted."""


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    format: str = "json"  # "json" or "slack"
    timeout_s: float = 5.0


@dataclass(frozen=True)
class ReportConfig:
    name: str
    targets: tuple[str, ...]
    agents: str | None = None
    include_local: bool = False
    schedule: str | None = None  # a cron expression (UTC) ...
    interval_s: float | None = None  # ... or a fixed interval
    jitter_s: float = 0.0
    deadline_s: float = 120.0
    probe_timeout_s: float = 10.0
    formats: tuple[str, ...] = FORMATS
    expiry_warning_days: float = 30.0
    expiry_critical_days: float = 7.0
    clock_tolerance_s: float = 2.0
    notify_min_severity: Severity = Severity.CRITICAL
    webhooks: tuple[str, ...] = ()
    starttls: str | None = None  # smtp, postgres, ..., "none"; None: inferred from each target's port


@dataclass(frozen=True)
class StorageConfig:
    backend: str  # one of STORAGE_BACKENDS
    path: Path  # the SQLite file
    retention_days: float = 30.0
    # Per-run report files: a fleet of 200 targets x 10 agents writes some 18 MB a run, 1.7 GB a day at a
    # 15-minute schedule; the history keeps every run for retention_days and `report show` renders any of them.
    report_files_days: float = 7.0
    url: str | None = field(default=None, repr=False)  # PostgreSQL's; it may hold a password
    lease_expiry_s: float = 30.0  # a slot lease not renewed for this long marks its run interrupted

    @property
    def location(self) -> str:
        """The history as logs and errors name it: the SQLite file, or the URL without its password."""
        return redact_url(self.url) if self.backend == "postgresql" and self.url else str(self.path)


@dataclass(frozen=True)
class AgentLinkConfig:
    listen: str
    allow: tuple[str, ...] = ()
    min_agent_version: str | None = None
    heartbeat_interval_s: float = 5.0
    stale_after: int = 3
    query_allow: tuple[str, ...] = ("coordinator",)
    max_agents: int = 10_000
    # The agents' backoff reaches 30 s while a coordinator is down; a heartbeat on top.
    wait_at_start_s: float = 35.0


@dataclass(frozen=True)
class ProbeEndpointConfig:
    """`/probe` on the metrics address. Off unless configured: the HTTP listener has no authentication, so
    anyone who reaches it could make the agents dial any target their policy allows."""

    max_concurrent: int = 4
    max_timeout_s: float = 10.0


@dataclass(frozen=True)
class ServiceConfig:
    path: Path
    inventory: Path | None
    reports_dir: Path
    metrics_listen: str | None
    max_probes_in_flight: int
    storage: StorageConfig
    reports: tuple[ReportConfig, ...]
    webhooks: tuple[WebhookConfig, ...]
    shutdown_grace_s: float = 10.0
    agent_link: AgentLinkConfig | None = None
    probe_endpoint: ProbeEndpointConfig | None = None

    def report(self, name: str) -> ReportConfig:
        for report in self.reports:
            if report.name == name:
                return report
        accepted = ", ".join(r.name for r in self.reports) or "none are defined"
        raise ConfigError(f"report {name!r} is not defined in {self.path}; defined: {accepted}")

    def webhook(self, name: str) -> WebhookConfig:
        return next(w for w in self.webhooks if w.name == name)


def parse_duration(text: object, where: str) -> float:
    """'90s', '15m', '2h', '1d', '250ms' or a bare number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ConfigError(f"{where}: {text!r} is not a duration; accepted: a number with ms, s, m, h or d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ConfigError(f"{where}: {text!r} is not a finite duration; accepted: a number with ms, s, m, h or d")
    if seconds < 0:
        raise ConfigError(f"{where}: a duration cannot be negative")
    return seconds


def load_config(path: Path) -> ServiceConfig:
    path = path.expanduser()
    try:
        data = tomllib.loads(read_capped_text(path, MAX_CONFIG_BYTES))
    except FileNotFoundError:
        raise ConfigError(f"config {path} does not exist") from None
    except FileTooLarge:
        raise ConfigError(f"config {path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"config {path} nests arrays or tables too deeply to be a coordinator config") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config {path} cannot be read: {error}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> ServiceConfig:
    _only(data, {"coordinator", "storage", "report", "webhook", "agent_link", "probe_endpoint"}, f"config {path}")
    base = path.parent
    coordinator = _table(data, "coordinator", f"config {path}")
    where = f"config {path}: [coordinator]"
    _only(coordinator, {"inventory", "reports_dir", "metrics_listen", "max_probes_in_flight", "shutdown_grace"}, where)
    shutdown_grace = parse_duration(
        coordinator.get("shutdown_grace", ServiceConfig.shutdown_grace_s), f"{where}: shutdown_grace"
    )
    if shutdown_grace > 600:
        raise ConfigError(f"{where}: shutdown_grace must be at most 600 s")
    inventory = coordinator.get("inventory")
    metrics_listen = coordinator.get("metrics_listen")
    if metrics_listen is not None:
        try:
            split_host_port(str(metrics_listen), allow_port_zero=True)
        except EndpointError as error:
            raise ConfigError(f"{where}: metrics_listen: {error}") from None
    in_flight = coordinator.get("max_probes_in_flight", 200)
    if not isinstance(in_flight, int) or isinstance(in_flight, bool) or not 1 <= in_flight <= 100_000:
        raise ConfigError(f"{where}: max_probes_in_flight must be a whole number from 1 to 100000")

    storage = _storage(_table(data, "storage", f"config {path}"), f"config {path}: [storage]", base)
    webhooks = tuple(_webhook(raw, f"config {path}: webhook #{i}") for i, raw in enumerate(_list(data, "webhook"), 1))
    _unique([w.name for w in webhooks], f"config {path}: webhook")
    reports = tuple(
        _report(raw, f"config {path}: report #{i}", {w.name for w in webhooks})
        for i, raw in enumerate(_list(data, "report"), 1)
    )
    _unique([r.name for r in reports], f"config {path}: report")
    probe_endpoint = None
    if "probe_endpoint" in data:
        probe_endpoint = _probe_endpoint(data["probe_endpoint"], f"config {path}: [probe_endpoint]")
        if metrics_listen is None:
            raise ConfigError(
                f"config {path}: [probe_endpoint] serves /probe at [coordinator] metrics_listen, which is not set"
            )
    return ServiceConfig(
        path=path,
        inventory=_path(inventory, base) if inventory is not None else None,
        reports_dir=_path(coordinator.get("reports_dir", "reports"), base),
        metrics_listen=str(metrics_listen) if metrics_listen is not None else None,
        max_probes_in_flight=in_flight,
        storage=storage,
        reports=reports,
        webhooks=webhooks,
        shutdown_grace_s=shutdown_grace,
        agent_link=_agent_link(data["agent_link"], f"config {path}: [agent_link]") if "agent_link" in data else None,
        probe_endpoint=probe_endpoint,
    )


def _probe_endpoint(raw: Any, where: str) -> ProbeEndpointConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    _only(raw, {"max_concurrent", "max_timeout"}, where)
    concurrent = raw.get("max_concurrent", ProbeEndpointConfig.max_concurrent)
    if not isinstance(concurrent, int) or isinstance(concurrent, bool) or not 1 <= concurrent <= 64:
        raise ConfigError(f"{where}: max_concurrent must be a whole number from 1 to 64")
    timeout = parse_duration(raw.get("max_timeout", ProbeEndpointConfig.max_timeout_s), f"{where}: max_timeout")
    if not 1 <= timeout <= 120:
        raise ConfigError(f"{where}: max_timeout must be 1-120 s")
    return ProbeEndpointConfig(max_concurrent=concurrent, max_timeout_s=timeout)


def _agent_link(raw: Any, where: str) -> AgentLinkConfig:
    from ...agent.pki.fleet_ca import FleetPkiError, normalize_name
    from ..fleet.link_registry import parse_version

    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    keys = {
        "listen",
        "allow",
        "min_agent_version",
        "heartbeat_interval",
        "stale_after",
        "query_allow",
        "max_agents",
        "wait_at_start",
    }
    _only(raw, keys, where)
    listen = _string(raw, "listen", where)
    try:
        split_host_port(listen, allow_port_zero=True)
    except EndpointError as error:
        raise ConfigError(f"{where}: listen: {error}") from None
    lists: dict[str, tuple[str, ...]] = {}
    for key, default in (("allow", ()), ("query_allow", AgentLinkConfig.query_allow)):
        value = raw.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(value) > 1000:
            raise ConfigError(f"{where}: {key} must be a list of at most 1000 names or patterns (strings)")
        lists[key] = tuple(value)
    for name in lists["query_allow"]:
        try:
            normalize_name(name)
        except FleetPkiError as error:
            raise ConfigError(f"{where}: query_allow: {error}") from None
    version = raw.get("min_agent_version")
    if version is not None and (not isinstance(version, str) or parse_version(version) is None):
        raise ConfigError(f'{where}: min_agent_version {version!r} is not accepted; a version such as "0.1.0"')
    interval = parse_duration(
        raw.get("heartbeat_interval", AgentLinkConfig.heartbeat_interval_s), f"{where}: heartbeat_interval"
    )
    if not 0.1 <= interval <= 300:
        raise ConfigError(f"{where}: heartbeat_interval must be 0.1-300 s")
    wait_at_start = parse_duration(raw.get("wait_at_start", AgentLinkConfig.wait_at_start_s), f"{where}: wait_at_start")
    if not 0 <= wait_at_start <= 600:
        raise ConfigError(f"{where}: wait_at_start must be 0-600 s")
    whole: dict[str, int] = {}
    for key, low, high in (("stale_after", 1, 100), ("max_agents", 1, 100_000)):
        value = raw.get(key, getattr(AgentLinkConfig, key))
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{where}: {key} must be a whole number from {low} to {high}")
        whole[key] = value
    return AgentLinkConfig(
        listen=listen,
        allow=lists["allow"],
        min_agent_version=version,
        heartbeat_interval_s=interval,
        stale_after=whole["stale_after"],
        query_allow=lists["query_allow"],
        max_agents=whole["max_agents"],
        wait_at_start_s=wait_at_start,
    )


def _storage(raw: dict[str, Any], where: str, base: Path) -> StorageConfig:
    _only(raw, {"backend", "path", "url", "retention_days", "report_files_days", "lease_expiry"}, where)
    url = raw.get("url")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{where}: url must be a string; accepted: {POSTGRESQL_URL}")
    backend = raw.get("backend", "postgresql" if url is not None else "sqlite")
    if backend not in STORAGE_BACKENDS:
        raise ConfigError(f"{where}: backend {backend!r} is not available; accepted: {', '.join(STORAGE_BACKENDS)}")
    if backend == "postgresql":
        if url is None:
            raise ConfigError(f"{where}: backend postgresql needs url = {POSTGRESQL_URL!r}")
        if "path" in raw:
            raise ConfigError(f"{where}: path is the SQLite file; with url (postgresql) leave it out")
        _check_postgresql_url(url, where)
    elif url is not None:
        raise ConfigError(f"{where}: url is for backend postgresql; the sqlite backend takes path")
    retention = raw.get("retention_days", StorageConfig.retention_days)
    if not isinstance(retention, int | float) or isinstance(retention, bool) or not 0 < retention <= MAX_DAYS:
        raise ConfigError(f"{where}: retention_days must be a number above 0 and at most {MAX_DAYS}")
    files_days = raw.get("report_files_days", min(StorageConfig.report_files_days, retention))
    if not isinstance(files_days, int | float) or isinstance(files_days, bool) or not 0 < files_days <= retention:
        raise ConfigError(
            f"{where}: report_files_days must be a number above 0 and at most retention_days ({retention:g}): "
            "a run's report files go at the latest with the run"
        )
    lease_expiry = parse_duration(raw.get("lease_expiry", StorageConfig.lease_expiry_s), f"{where}: lease_expiry")
    if not MIN_LEASE_EXPIRY_S <= lease_expiry <= MAX_LEASE_EXPIRY_S:
        raise ConfigError(
            f"{where}: lease_expiry {lease_expiry:g} s is out of range; accepted: "
            f'{MIN_LEASE_EXPIRY_S:g} s to {MAX_LEASE_EXPIRY_S // 60:g} m (e.g. "30s")'
        )
    return StorageConfig(
        backend=backend,
        path=_path(raw.get("path", "history.sqlite"), base),
        retention_days=retention,
        report_files_days=files_days,
        url=url,
        lease_expiry_s=lease_expiry,
    )


def _check_postgresql_url(url: str, where: str) -> None:
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (it raises on a port that is not a number)
    except ValueError as error:
        raise ConfigError(f"{where}: url {shown!r} is not accepted ({error}); accepted: {POSTGRESQL_URL}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{where}: url {shown!r} is not accepted; accepted: {POSTGRESQL_URL}")
    query = urllib.parse.parse_qs(parts.query)
    if not (parts.hostname or "host" in query) or not (parts.path.strip("/") or "dbname" in query):
        raise ConfigError(f"{where}: url {shown!r} names no host or no database; accepted: {POSTGRESQL_URL}")


def redact_url(url: str) -> str:
    """A libpq URL without its password (in the user part or as ?password=), for logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}@{host}"
        query = urllib.parse.urlencode(
            [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
        )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(a URL that cannot be parsed)"


def _webhook(raw: Any, where: str) -> WebhookConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    if "retries" in raw:
        raise ConfigError(
            f"{where} ({raw.get('name', '?')}): retries is no longer read: alerts wait in the history's outbox and "
            "the service retries each until it is delivered or a day old; remove the line"
        )
    _only(raw, {"name", "url", "format", "timeout"}, where)
    name = _string(raw, "name", where)
    url = _string(raw, "url", where)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where} ({name}): url {url!r} is not accepted; http:// or https:// only")
    fmt = raw.get("format", WebhookConfig.format)
    if fmt not in ("json", "slack"):
        raise ConfigError(f"{where} ({name}): format {fmt!r} is not accepted; json or slack")
    timeout = parse_duration(raw.get("timeout", WebhookConfig.timeout_s), f"{where} ({name}): timeout")
    if not 0 < timeout <= 60:
        raise ConfigError(f"{where} ({name}): timeout must be above 0 and at most 60 s")
    return WebhookConfig(name=name, url=url, format=fmt, timeout_s=timeout)


_REPORT_KEYS = {
    "name",
    "targets",
    "agents",
    "include_local",
    "schedule",
    "interval",
    "jitter",
    "deadline",
    "probe_timeout",
    "formats",
    "expiry_warning_days",
    "expiry_critical_days",
    "clock_tolerance",
    "notify_min_severity",
    "webhooks",
    "starttls",
}


def _report(raw: Any, where: str, webhook_names: set[str]) -> ReportConfig:
    from ...agent.probe.targets import TargetError, parse_target
    from .schedule import ScheduleError, check_cron, default_jitter_s

    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table ([[report]])")
    _only(raw, _REPORT_KEYS, where)
    name = _string(raw, "name", where)
    if not REPORT_NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} is not accepted; 1-63 characters of a-z, 0-9 and '-'")
    where = f"{where} ({name})"
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f"{where}: targets must be a non-empty list of HOST[:PORT] strings")
    if len(targets) > MAX_TARGETS_PER_REPORT:
        raise ConfigError(f"{where}: {len(targets)} targets; at most {MAX_TARGETS_PER_REPORT} are accepted")
    for target in targets:
        try:
            parse_target(target)
        except TargetError as error:
            raise ConfigError(f"{where}: {error}") from None
    _unique(targets, f"{where}: target")
    agents = raw.get("agents")
    if agents is not None:
        if not isinstance(agents, str):
            raise ConfigError(f'{where}: agents must be a selector string, e.g. agents = "env=prod"')
        try:
            parse_selector(str(agents))
        except SelectorError as error:
            raise ConfigError(f"{where}: agents: {error}") from None
    schedule, interval = raw.get("schedule"), raw.get("interval")
    if (schedule is None) == (interval is None):
        raise ConfigError(f"{where}: give exactly one of schedule (a cron expression) or interval (e.g. '15m')")
    interval_s = None
    if schedule is not None:
        try:
            check_cron(str(schedule))
        except ScheduleError as error:
            raise ConfigError(f"{where}: schedule: {error}") from None
    else:
        interval_s = parse_duration(interval, f"{where}: interval")
        if not 1 <= interval_s <= MAX_INTERVAL_S:
            raise ConfigError(f"{where}: interval must be 1 s to {MAX_INTERVAL_S / 86400:g} d")
    formats = raw.get("formats", list(ReportConfig.formats))
    if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
        raise ConfigError(f"{where}: formats {formats!r} is not accepted; a list of {', '.join(FORMATS)}")
    hooks = raw.get("webhooks", list(ReportConfig.webhooks))
    if not isinstance(hooks, list) or any(not isinstance(h, str) or h not in webhook_names for h in hooks):
        defined = ", ".join(sorted(webhook_names)) or "none are defined"
        raise ConfigError(f"{where}: webhooks {hooks!r} must name [[webhook]] entries; defined: {defined}")
    severity = ReportConfig.notify_min_severity
    if "notify_min_severity" in raw:
        try:
            severity = Severity.parse(str(raw["notify_min_severity"]))
        except ValueError as error:
            raise ConfigError(f"{where}: notify_min_severity: {error}") from None
    warning_days = _number(raw, "expiry_warning_days", where, ReportConfig.expiry_warning_days)
    critical_days = _number(raw, "expiry_critical_days", where, ReportConfig.expiry_critical_days)
    if not 0 <= critical_days <= warning_days:
        raise ConfigError(f"{where}: expiry_critical_days must be between 0 and expiry_warning_days")
    deadline = parse_duration(raw.get("deadline", ReportConfig.deadline_s), f"{where}: deadline")
    probe_timeout = parse_duration(raw.get("probe_timeout", ReportConfig.probe_timeout_s), f"{where}: probe_timeout")
    if not 0.1 <= probe_timeout <= 300 or not probe_timeout <= deadline <= 86_400:
        raise ConfigError(f"{where}: probe_timeout must be 0.1-300 s and no longer than deadline (at most 1 d)")
    include_local = raw.get("include_local", ReportConfig.include_local)
    if not isinstance(include_local, bool):
        raise ConfigError(f"{where}: include_local must be true or false")
    jitter = (
        parse_duration(raw["jitter"], f"{where}: jitter")
        if "jitter" in raw
        else default_jitter_s(str(schedule) if schedule is not None else None, interval_s)
    )
    if jitter > MAX_JITTER_S:
        raise ConfigError(f"{where}: jitter must be at most {MAX_JITTER_S / 86400:g} d")
    clock_tolerance = parse_duration(
        raw.get("clock_tolerance", ReportConfig.clock_tolerance_s), f"{where}: clock_tolerance"
    )
    if clock_tolerance > MAX_CLOCK_TOLERANCE_S:
        raise ConfigError(f"{where}: clock_tolerance must be at most {MAX_CLOCK_TOLERANCE_S:g} s")
    starttls = raw.get("starttls")
    accepted = tuple(p.value for p in Starttls)
    if starttls is not None and starttls not in accepted:
        raise ConfigError(f"{where}: starttls {starttls!r} is not accepted; one of {', '.join(accepted)}")
    return ReportConfig(
        name=name,
        targets=tuple(targets),
        agents=agents,
        include_local=include_local,
        schedule=str(schedule) if schedule is not None else None,
        interval_s=interval_s,
        jitter_s=jitter,
        deadline_s=deadline,
        probe_timeout_s=probe_timeout,
        formats=tuple(dict.fromkeys(formats)),
        expiry_warning_days=warning_days,
        expiry_critical_days=critical_days,
        clock_tolerance_s=clock_tolerance,
        notify_min_severity=severity,
        webhooks=tuple(hooks),
        starttls=starttls,
    )


def _only(raw: dict[str, Any], accepted: set[str], where: str) -> None:
    unknown = set(raw) - accepted
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; accepted: {', '.join(sorted(accepted))}")


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"'{key}' must be an array of tables ([[{key}]])")
    return value


def _string(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def _number(raw: dict[str, Any], key: str, where: str, default: float) -> float:
    value = raw.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_DAYS:
        raise ConfigError(f"{where}: {key} must be a number from 0 to {MAX_DAYS}")
    return float(value)


def _path(value: Any, base: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{what} {name!r} is given twice; names must be unique")
        seen.add(name)
