"""The typer command group every tlsfleet command line uses (agent/command.py holds what they share)."""

from __future__ import annotations

from typing import Any

from typer._click.exceptions import UsageError as ParserError
from typer.core import TyperGroup

from .command import asks_for_json, errors_as_json, errors_reset, fail
from .errors import UsageError


class CommandGroup(TyperGroup):
    """A command group in which a UsageError raised by any command becomes one line and exit code 2 (under
    --json, a parser error such as an unknown option too)."""

    def invoke(self, ctx: Any) -> Any:
        wants_json = asks_for_json([*ctx._protected_args, *ctx.args])
        token = errors_as_json(wants_json)
        try:
            return super().invoke(ctx)
        except UsageError as error:
            raise fail(str(error)) from None
        except ParserError as error:
            if not wants_json:
                raise
            raise fail(error.format_message()) from None
        finally:
            errors_reset(token)
