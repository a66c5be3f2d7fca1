"""What every tlsfleet command line shares: one line per error (also a JSON object on stdout under
--json), the exit codes, no traceback for users. typer is imported only where it is used: `tlsfleet probe`
runs without it (coordinator/cli/probe_argv.py); the command group it shares is in command_group.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import exit_codes, startup_collection
from .documents import document
from .errors import UsageError

if TYPE_CHECKING:
    import typer

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
    import typer

    typer.echo(f"error: {message}", err=True)
    if _json_errors.get():
        typer.echo(json.dumps(document("error", {"error": message, "exit_code": code}), indent=2))
    return typer.Exit(code)


def asks_for_json(args: list[str]) -> bool:
    """Whether `args` ask for JSON output: then errors are JSON documents on stdout as well."""
    return "--json" in args or any(a == "--format" and b == "json" for a, b in pairwise(args))


def errors_as_json(wanted: bool) -> Any:
    """Make fail() also write JSON (when `wanted`) until the token returned is passed to errors_reset()."""
    return _json_errors.set(wanted or _json_errors.get())


def errors_reset(token: Any) -> None:
    _json_errors.reset(token)


def run_coroutine(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), its result kept out of the main task. At exit asyncio.Runner puts SIGINT's
    handler back, and signal.signal builds an error message with repr() of the handler it replaces, which
    holds the main task and with it the result: a report run's whole ReportRun, 0.4 s of repr()."""
    import asyncio  # not at the top: --help needs no event loop

    startup_collection.resume()
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


def run_main(app: typer.Typer | Callable[[], object]) -> None:
    """Run a console entry point (a typer app, or a command run without typer): gRPC's C core quiet,
    Ctrl-C exits 130, and no traceback reaches a user unless TLSFLEET_DEBUG is set."""
    quiet_grpc_core()
    try:
        app()
    except BrokenPipeError:
        # The reader of stdout went away (`tlsfleet probe ... --json | head`): exit as click does, without the
        # second error that flushing stdout at exit would print.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(exit_codes.PROBLEM)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(exit_codes.INTERRUPTED)
    except Exception as error:
        if os.environ.get("TLSFLEET_DEBUG"):
            raise
        message = f"internal error: {type(error).__name__}: {error} (set TLSFLEET_DEBUG=1 for the traceback)"
        if asks_for_json(sys.argv[1:]):
            _json_errors.set(True)
        fail(message, exit_codes.INTERNAL)
        sys.exit(exit_codes.INTERNAL)


def run_without_typer(args: list[str], command: Callable[[], int]) -> NoReturn:
    """Run `command` (its arguments `args` already read) as run_main runs a typer command: a UsageError
    becomes one line (JSON too under --json) and exit code 2, fail()'s Exit its exit code."""

    def entry() -> None:
        token = errors_as_json(asks_for_json(args))
        try:
            code = command()
        except UsageError as error:
            code = fail(str(error)).exit_code
        except Exception as error:
            exit_code = _exit_code_of(error)
            if exit_code is None:
                raise
            code = exit_code
        finally:
            errors_reset(token)
        sys.stdout.flush()
        sys.exit(code)

    run_main(entry)
    raise AssertionError("unreachable: entry() always exits")


def _exit_code_of(error: BaseException) -> int | None:
    """The code of typer's Exit (raised by fail() and by commands), None for any other exception."""
    if "typer" not in sys.modules:  # nothing raised an Exit without importing typer first
        return None
    import typer

    return error.exit_code if isinstance(error, typer.Exit) else None
