"""What every tlsfleet command line shares: one line per error (also a JSON object on stdout under
--json), the exit codes, no traceback for users."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Coroutine
from contextvars import ContextVar
from itertools import pairwise
from typing import Any, TypeVar

import typer
from typer._click.exceptions import UsageError as ParserError
from typer.core import TyperGroup

from . import exit_codes
from .documents import document
from .errors import UsageError

# Whether the command being run was asked for --json: then its errors are JSON on stdout as well.
_json_errors: ContextVar[bool] = ContextVar("json_errors", default=False)

T = TypeVar("T")

# Every tlsfleet command answers -h as well as --help.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


# The exit codes most verbs share, after their own.
COMMON_EXITS = "2 bad input or configuration; 70 an internal error; 130 interrupted (Ctrl-C)"


def epilog(*examples: str, exits: str) -> str:
    """The end of a verb's --help: examples, printed as written (never re-wrapped), then its exit codes."""
    shown = "\n".join(f"  $ {example}" for example in examples)
    return f"\b\nExamples:\n{shown}\n\nExit codes: {exits}; {COMMON_EXITS}."


def fail(message: str, code: int = exit_codes.USAGE) -> typer.Exit:
    """Print one line to stderr (and, under --json, an error document to stdout); return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    if _json_errors.get():
        typer.echo(json.dumps(document("error", {"error": message, "exit_code": code}), indent=2))
    return typer.Exit(code)


def _asks_for_json(args: list[str]) -> bool:
    return "--json" in args or any(a == "--format" and b == "json" for a, b in pairwise(args))


class CommandGroup(TyperGroup):
    """A command group in which a UsageError raised by any command becomes one line and exit code 2 (under
    --json, a parser error such as an unknown option too)."""

    def invoke(self, ctx: Any) -> Any:
        wants_json = _asks_for_json([*ctx._protected_args, *ctx.args])
        token = _json_errors.set(wants_json or _json_errors.get())
        try:
            return super().invoke(ctx)
        except UsageError as error:
            raise fail(str(error)) from None
        except ParserError as error:
            if not wants_json:
                raise
            raise fail(error.format_message()) from None
        finally:
            _json_errors.reset(token)


def run_coroutine(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), its result kept out of the main task. At exit asyncio.Runner puts SIGINT's
    handler back, and signal.signal builds an error message with repr() of the handler it replaces, which
    holds the main task and with it the result: a report run's whole ReportRun, 0.4 s of repr()."""
    import asyncio  # not at the top: --help needs no event loop

    kept: list[T] = []

    async def keeping() -> None:
        kept.append(await main)

    asyncio.run(keeping())
    return kept[0]


def quiet_grpc_core() -> None:
    """Keep gRPC's C core from writing lines of its own (it reads this when grpc is first imported)."""
    # Its lines ("I1201 12:06:24.068291 24479 ssl_transport_security.cc:2563] Handshake failed ...") are
    # neither JSON nor meant for a CLI user; each failure they describe reaches tlsfleet as a status that
    # it words itself. GRPC_VERBOSITY=INFO brings them back for debugging.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def run_main(app: typer.Typer) -> None:
    """Run a console entry point: gRPC's C core quiet, Ctrl-C exits 130, and no traceback reaches a user
    unless TLSFLEET_DEBUG is set."""
    quiet_grpc_core()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(exit_codes.INTERRUPTED)
    except Exception as error:
        if os.environ.get("TLSFLEET_DEBUG"):
            raise
        message = f"internal error: {type(error).__name__}: {error} (set TLSFLEET_DEBUG=1 for the traceback)"
        if _asks_for_json(sys.argv[1:]):
            _json_errors.set(True)
        fail(message, exit_codes.INTERNAL)
        sys.exit(exit_codes.INTERNAL)
