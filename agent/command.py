"""What every tlsfleet command line shares: one line per error, the exit codes, no traceback for users."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from . import exit_codes
from .errors import UsageError


def fail(message: str, code: int = exit_codes.USAGE) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class CommandGroup(TyperGroup):
    """A command group in which a UsageError raised by any command becomes one line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as error:
            raise fail(str(error)) from None


def run_main(app: typer.Typer) -> None:
    """Run a console entry point: Ctrl-C exits 130, and no traceback reaches a user unless TLSFLEET_DEBUG
    is set."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    except Exception as error:
        if os.environ.get("TLSFLEET_DEBUG"):
            raise
        typer.echo(
            f"error: internal error: {type(error).__name__}: {error} (set TLSFLEET_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(exit_codes.INTERNAL)
