"""Parse a command line with the real tlsfleet command definitions, without running the command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
import typer.main


def parse_command_line(app: typer.Typer, argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The verbs `argv` names and the parsed options of the last one; raises on what the CLI refuses."""
    command: Any = typer.main.get_command(app)
    context = command.make_context(command.name or "tlsfleet", list(argv))
    verbs: list[str] = []
    while hasattr(command, "commands"):
        rest = [*(getattr(context, "protected_args", None) or context._protected_args), *context.args]
        name, command, rest = command.resolve_command(context, rest)
        verbs.append(name)
        context = command.make_context(name, rest, parent=context)
    return verbs, dict(context.params)
