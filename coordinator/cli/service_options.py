"""What the service-side commands (`coordinator serve`, `report ...`) share: the config option and the
history it names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

ENV_CONFIG = "TLSFLEET_CONFIG"

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Coordinator config (TOML). Default: $TLSFLEET_CONFIG or ~/.config/tlsfleet/coordinator.toml.",
    ),
]


def load_service_config(path: Path | None):  # -> ServiceConfig
    """The config at `path`, $TLSFLEET_CONFIG or the default place; ConfigError names what is wrong."""
    from ..service.config import load_config

    return load_config(path or Path(os.environ.get(ENV_CONFIG) or "~/.config/tlsfleet/coordinator.toml").expanduser())


def open_history(config):  # -> HistoryStore
    from ..service.history import open_history as open_store

    return open_store(config.storage)
