"""`tlsfleet report list|show|run`: the runs kept in the history, one shown, one run now."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ...agent import exit_codes
from ...agent.command import epilog, fail, run_coroutine
from ...agent.command_group import CommandGroup
from ..diagnosis.model import Severity
from .service_options import ConfigOption, load_service_config, open_history

report_app = typer.Typer(
    help="Scheduled comparison reports: list, show, run now.", no_args_is_help=True, cls=CommandGroup
)


@report_app.command(
    "list",
    epilog=epilog(
        "tlsfleet report list --config /etc/tlsfleet/coordinator.toml",
        "tlsfleet report list --report prod-edge --limit 5 --json",
        exits="0 listed",
    ),
)
def report_list(
    config: ConfigOption = None,
    report: Annotated[str | None, typer.Option("--report", help="Only this report's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first (1-1000).")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """The runs kept in the history, newest first."""
    if not 1 <= limit <= 1000:
        raise fail(f"--limit {limit} is out of range; accepted: 1-1000")
    loaded = load_service_config(config)
    history = open_history(loaded)
    try:
        runs = history.list_runs(report, limit=limit)
    finally:
        history.close()
    configured = [r.name for r in loaded.reports]
    # A report taken out of the configuration keeps its runs in the history; those are still listed.
    if report is not None and not runs and report not in configured:
        import difflib

        close = difflib.get_close_matches(report, configured, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise fail(
            f"--report {report!r} is not a report in {loaded.path} and has no runs in the history; configured "
            f"reports: {', '.join(configured) or 'none'}{hint}"
        )
    if json_output:
        from ...agent.documents import document

        typer.echo(json.dumps(document("runs", {"runs": [_summary_json(r) for r in runs]}), indent=2))
        return
    if not runs:
        typer.echo("no runs yet")
        return
    typer.echo(f"{'run':>6}  {'report':20}  {'started (UTC)':19}  {'critical':>8}  {'warning':>7}  {'info':>4}")
    for r in runs:
        flag = (f"  (abandoned: {r.note})" if r.note else "  (abandoned)") if r.abandoned else ""
        typer.echo(
            f"{r.run_id:>6}  {r.report:20}  {r.started_at:%Y-%m-%d %H:%M:%S}  "
            f"{r.critical:>8}  {r.warning:>7}  {r.info:>4}{flag}"
        )


@report_app.command(
    "show",
    epilog=epilog(
        "tlsfleet report show latest --config /etc/tlsfleet/coordinator.toml",
        "tlsfleet report show prod-edge --format json",
        "tlsfleet report show 42",
        exits="0 shown",
    ),
)
def report_show(
    which: Annotated[
        str,
        typer.Argument(
            help="A run id from `tlsfleet report list`, a report's name (its latest run) or 'latest' (the newest run).",
            show_default=False,
        ),
    ],
    config: ConfigOption = None,
    output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
) -> None:
    """A stored run as a report, with what changed since the run before it."""
    from ..service.changes import changes_between
    from ..service.history.store import first_seen_lookup
    from ..service.reports.json_report import render_json
    from ..service.reports.markdown import render_markdown

    if output_format not in ("markdown", "json"):
        raise fail(f"--format {output_format!r} is not accepted; markdown or json")
    loaded = load_service_config(config)
    history = open_history(loaded)
    try:
        run = _chosen_run(history, which, loaded)
        previous = history.run_to_compare(run.report, run.run_id)
        changes = changes_between(previous, run, first_seen_lookup(history))
    finally:
        history.close()
    if output_format == "json":
        typer.echo(json.dumps(render_json(run, changes), indent=2))
    else:
        typer.echo(render_markdown(run, changes))


@report_app.command(
    "run",
    epilog=epilog(
        "tlsfleet report run prod-edge --config /etc/tlsfleet/coordinator.toml",
        exits="0 the run finished with no critical finding; 1 a critical finding",
    ),
)
def report_run(
    name: Annotated[str, typer.Argument(help="A report defined in the config.")],
    config: ConfigOption = None,
) -> None:
    """Run one report now (the service need not be running): history, reports, alerts as scheduled."""
    from ..service.pipeline import Pipeline
    from ..service.reports.writer import check_reports_dir
    from .cli_logging import configure_cli_logging

    configure_cli_logging()
    loaded = load_service_config(config)
    report = loaded.report(name)
    check_reports_dir(loaded.reports_dir)
    history = open_history(loaded)

    async def once():  # -> (CompletedRun, outcomes of the one delivery pass)
        pipeline = Pipeline(loaded, history, runs_in_metrics=False)
        try:
            completed = await pipeline.run(report)
            if not completed.queued:
                return completed, []
            typer.echo(
                f"delivering {completed.queued} queued alerts once (at most {pipeline.delivery.longest_pass_s:g} s: "
                "each webhook's timeout per alert); what fails stays queued for the service to retry",
                err=True,
            )
            try:
                return completed, await pipeline.delivery.deliver_due()
            finally:
                await pipeline.delivery.aclose()
        finally:
            await pipeline.close()

    from .progress import TargetProgress, showing

    probed = TargetProgress(len(report.targets))
    try:
        with showing(probed):
            done, outcomes = run_coroutine(once())
    except KeyboardInterrupt:
        typer.echo(probed.interrupted(), err=True)  # nothing is saved: a run is kept whole or not at all
        raise typer.Exit(exit_codes.INTERRUPTED) from None
    finally:
        history.close()
    run = done.run
    findings = [f for t in run.targets for f in t.findings]
    from ..diagnosis.wording import count

    typer.echo(
        f"run {run.run_id} of {run.report}: {count(len(run.targets), 'target')} in {run.duration_s:.1f} s, "
        f"{sum(1 for f in findings if f.severity is Severity.CRITICAL)} critical and "
        f"{sum(1 for f in findings if f.severity is Severity.WARNING)} warning findings, "
        f"{count(len(done.changes), 'change')} since the previous run, {count(len(done.alerts), 'alert')}"
        + ("" if report.webhooks else " (no webhook configured)")
        + (f" (abandoned: {run.note})" if run.abandoned else "")
    )
    from ..matrix import visible

    for change in done.changes:
        typer.echo(f"  changed: {visible(change.summary)}")  # its words quote what agents sent
    if done.queued:
        sent = sum(1 for o in outcomes if o.result == "delivered")
        given_up = sum(1 for o in outcomes if o.result == "given_up")
        typer.echo(
            f"  webhooks: {sent} delivered, {given_up} given up, "
            f"{len(outcomes) - sent - given_up} left queued for the service to retry"
        )
    for path in done.written:
        typer.echo(f"  wrote {path}")
    critical = any(f.severity is Severity.CRITICAL for f in findings)
    raise typer.Exit(exit_codes.PROBLEM if critical else exit_codes.OK)


def _summary_json(r) -> dict:  # RunSummary
    return {
        "run_id": r.run_id,
        "report": r.report,
        "started_at": r.started_at.isoformat(),
        "finished_at": r.finished_at.isoformat(),
        "abandoned": r.abandoned,
        "note": r.note,
        "findings": {"critical": r.critical, "warning": r.warning, "info": r.info},
    }


def _chosen_run(history, which: str, loaded):  # (HistoryStore, str, ServiceConfig) -> ReportRun
    """The run `report show WHICH` means: a run id, a report's latest run, or the newest run of all."""
    where = f"the history {loaded.storage.location}"
    if which.isdigit() and len(which) <= 18:  # a run id fits in SQLite's and PostgreSQL's 64-bit integers
        run = history.get_run(int(which))
        if run is None:
            raise fail(f"run {which} is not in {where}; see `tlsfleet report list`")
        return run
    if which == "latest":
        newest = history.list_runs(None, limit=1)
        if not newest:
            raise fail(f"{where} holds no run yet; `tlsfleet report run NAME` makes one")
        return history.get_run(newest[0].run_id)
    run = history.latest_run(which)
    if run is None:
        import difflib

        names = [r.name for r in loaded.reports]
        close = difflib.get_close_matches(which, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"reports: {', '.join(names) or 'none'}"
        raise fail(f"{which!r} is neither a run id nor 'latest' nor a report with runs in {where}; {hint}")
    return run
