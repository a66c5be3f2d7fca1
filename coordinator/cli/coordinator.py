"""`tlsfleet coordinator serve`: run every report on its schedule until SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ...agent.command import epilog, fail
from ...agent.command_group import CommandGroup
from .service_options import ConfigOption, load_service_config

coordinator_app = typer.Typer(help="Run the coordinator as a service.", no_args_is_help=True, cls=CommandGroup)


def _check_fleet(config) -> None:  # ServiceConfig
    """Fail at start, not at the first scheduled run: the inventory and every report's selector."""
    from ..fleet.choose import FleetError, select_vantages

    async def check() -> None:
        for report in config.reports:
            try:
                fleet = select_vantages(
                    inventory_path=config.inventory, selector_text=report.agents, include_local=report.include_local
                )
            except FleetError:
                if config.agent_link is None:
                    raise
                continue  # the agents it selects may dial in once the service runs
            await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)

    asyncio.run(check())


@coordinator_app.command(
    "serve",
    epilog=epilog(
        "tlsfleet coordinator serve --config /etc/tlsfleet/coordinator.toml",
        "tlsfleet coordinator serve --config coordinator.toml --log-format console",
        exits="0 stopped by SIGTERM after its runs in flight",
    ),
)
def coordinator_serve(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str, typer.Option("--log-format", help="json (one JSON object per line) or console (for a terminal).")
    ] = "json",
) -> None:
    """Run every report on its schedule, keep the history, write reports, alert, serve /metrics."""
    from ...agent.logs import configure_service_logging
    from ..service.reports.writer import check_reports_dir
    from ..service.scheduler import CoordinatorService

    configure_service_logging(log_level, log_format=log_format)
    loaded = load_service_config(config)
    if not loaded.reports:
        raise fail(f"config {loaded.path} defines no [[report]]; nothing to schedule")
    check_reports_dir(loaded.reports_dir)
    _check_fleet(loaded)
    try:
        asyncio.run(CoordinatorService(loaded).serve())
    except OSError as error:
        raise fail(str(error)) from None
