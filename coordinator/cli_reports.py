"""`tlsfleet coordinator serve` and `tlsfleet report list|show|run`: the scheduled-report side of the CLI.

Heavy imports happen inside the commands, so `tlsfleet --help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from tlsfleet.coordinator import exit_codes

ENV_CONFIG = "TLSFLEET_CONFIG"

coordinator_app = typer.Typer(help="Run the coordinator as a service.", no_args_is_help=True)
report_app = typer.Typer(help="Scheduled comparison reports: list, show, run now.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Coordinator config (TOML). Default: $TLSFLEET_CONFIG or ~/.config/tlsfleet/coordinator.toml.",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(exit_codes.USAGE)


def _config(path: Path | None):  # -> ServiceConfig
    from tlsfleet.coordinator.service_config import ConfigError, load_config

    chosen = path or Path(os.environ.get(ENV_CONFIG) or "~/.config/tlsfleet/coordinator.toml").expanduser()
    try:
        return load_config(chosen)
    except ConfigError as error:
        raise _fail(str(error)) from None


def _history(config):  # -> SqliteHistory
    from tlsfleet.coordinator.history.sqlite_store import SqliteHistory
    from tlsfleet.coordinator.history.store import HistoryError

    try:
        return SqliteHistory(config.storage.path)
    except HistoryError as error:
        raise _fail(str(error)) from None


def _check_fleet(config) -> None:  # ServiceConfig
    """Fail at start, not at the first scheduled run: the inventory and every report's selector."""
    from tlsfleet.agent.fleet_credentials import CredentialError
    from tlsfleet.coordinator.fleet import FleetError, select_vantages
    from tlsfleet.coordinator.inventory import InventoryError
    from tlsfleet.coordinator.selector import SelectorError

    async def check() -> None:
        for report in config.reports:
            fleet = select_vantages(
                inventory_path=config.inventory, selector_text=report.agents, include_local=report.include_local
            )
            await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)

    try:
        asyncio.run(check())
    except (InventoryError, SelectorError, CredentialError, FleetError) as error:
        raise _fail(str(error)) from None


@coordinator_app.command("serve")
def coordinator_serve(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Run every report on its schedule, keep the history, write reports, alert, serve /metrics."""
    from tlsfleet.agent.logs import configure_service_logging
    from tlsfleet.coordinator.history.store import HistoryError
    from tlsfleet.coordinator.service import CoordinatorService

    try:
        configure_service_logging(log_level)
    except ValueError as error:
        raise _fail(str(error)) from None
    loaded = _config(config)
    if not loaded.reports:
        raise _fail(f"config {loaded.path} defines no [[report]]; nothing to schedule")
    _check_fleet(loaded)
    try:
        asyncio.run(CoordinatorService(loaded).serve())
    except (HistoryError, OSError) as error:
        raise _fail(str(error)) from None


@report_app.command("list")
def report_list(
    config: ConfigOption = None,
    report: Annotated[str | None, typer.Option("--report", help="Only this report's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first (1-1000).")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """The runs kept in the history, newest first."""
    if not 1 <= limit <= 1000:
        raise _fail(f"--limit {limit} is out of range; accepted: 1-1000")
    loaded = _config(config)
    history = _history(loaded)
    try:
        runs = history.list_runs(report, limit=limit)
    finally:
        history.close()
    if json_output:
        typer.echo(json.dumps([_summary_json(r) for r in runs], indent=2))
        return
    if not runs:
        typer.echo("no runs yet")
        return
    for r in runs:
        flag = " (abandoned)" if r.abandoned else ""
        typer.echo(
            f"{r.run_id:>6}  {r.report:20}  {r.started_at:%Y-%m-%d %H:%M:%S}Z  "
            f"critical {r.critical}  warning {r.warning}  info {r.info}{flag}"
        )


@report_app.command("show")
def report_show(
    run_id: Annotated[int, typer.Argument(help="A run id from `tlsfleet report list`.")],
    config: ConfigOption = None,
    output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
) -> None:
    """A stored run as a report, with what changed since the run before it."""
    from tlsfleet.coordinator.changes import changes_between
    from tlsfleet.coordinator.history.store import first_seen_lookup
    from tlsfleet.coordinator.reports.json_report import render_json
    from tlsfleet.coordinator.reports.markdown import render_markdown

    if output_format not in ("markdown", "json"):
        raise _fail(f"--format {output_format!r} is not accepted; markdown or json")
    loaded = _config(config)
    history = _history(loaded)
    try:
        run = history.get_run(run_id)
        if run is None:
            raise _fail(f"run {run_id} is not in the history {loaded.storage.path}; see `tlsfleet report list`")
        previous = history.latest_run(run.report, run_id)
        changes = changes_between(previous, run, first_seen_lookup(history))
    finally:
        history.close()
    if output_format == "json":
        typer.echo(json.dumps(render_json(run, changes), indent=2))
    else:
        typer.echo(render_markdown(run, changes))


@report_app.command("run")
def report_run(
    name: Annotated[str, typer.Argument(help="A report defined in the config.")],
    config: ConfigOption = None,
) -> None:
    """Run one report now (the service need not be running): history, reports, alerts as scheduled."""
    from tlsfleet.agent.fleet_credentials import CredentialError
    from tlsfleet.agent.logs import configure_cli_logging
    from tlsfleet.coordinator.fleet import FleetError
    from tlsfleet.coordinator.history.store import HistoryError
    from tlsfleet.coordinator.inventory import InventoryError
    from tlsfleet.coordinator.report_pipeline import Pipeline
    from tlsfleet.coordinator.selector import SelectorError
    from tlsfleet.coordinator.service_config import ConfigError

    configure_cli_logging()
    loaded = _config(config)
    try:
        report = loaded.report(name)
    except ConfigError as error:
        raise _fail(str(error)) from None
    history = _history(loaded)

    async def once():  # -> CompletedRun
        pipeline = Pipeline(loaded, history)
        try:
            return await pipeline.run(report)
        finally:
            await pipeline.close()

    try:
        done = asyncio.run(once())
    except (InventoryError, SelectorError, CredentialError, FleetError, HistoryError) as error:
        raise _fail(str(error)) from None
    finally:
        history.close()
    run = done.run
    findings = [f for t in run.targets for f in t.findings]
    typer.echo(
        f"run {run.run_id} of {run.report}: {len(run.targets)} targets in {run.duration_s:.1f} s, "
        f"{sum(1 for f in findings if str(f.severity) == 'critical')} critical and "
        f"{sum(1 for f in findings if str(f.severity) == 'warning')} warning findings, "
        f"{len(done.changes)} changes since the previous run, {len(done.alerts)} alerts"
        + ("" if report.webhooks else " (no webhook configured)")
        + (f" (abandoned: {run.note})" if run.abandoned else "")
    )
    for change in done.changes:
        typer.echo(f"  changed: {change.summary}")
    for path in done.written:
        typer.echo(f"  wrote {path}")
    critical = any(str(f.severity) == "critical" for f in findings)
    raise typer.Exit(exit_codes.PROBLEM if critical else exit_codes.OK)


def _summary_json(r) -> dict:  # RunSummary
    return {
        "run_id": r.run_id,
        "report": r.report,
        "started_at": r.started_at.isoformat(),
        "finished_at": r.finished_at.isoformat(),
        "abandoned": r.abandoned,
        "findings": {"critical": r.critical, "warning": r.warning, "info": r.info},
    }
