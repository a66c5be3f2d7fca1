"""Console entry point `tlsfleet`: the start-up caches (dataclasses' generated code, regular expressions'
compiled code) first, then the CLI."""

from __future__ import annotations

import sys

# Commands that run until stopped: their start-up is paid once, and the cache's entries for every other
# command's classes (about a megabyte once many commands have run) would stay resident for nothing.
_LONG_RUNNING = (("agent", "serve"), ("coordinator", "serve"))


def main() -> None:
    """Run the `tlsfleet` command line (coordinator/cli/app.py) with dataclass_code and pattern_code installed
    before the imports that define dataclasses and compile patterns, and their new entries saved as the
    process ends."""
    from ...agent import startup_collection

    # Collection resumes when the work begins: run_coroutine, or a server's startup_collection.serving().
    startup_collection.pause()
    try:
        _run()
    finally:
        # The process ends here. Interpreter shutdown's garbage collections would walk every object the
        # imports made (about 30 ms of a 270 ms probe) to free what the exit frees anyway; frozen, they
        # are left to it. Objects are still released by reference counting and streams flushed as before.
        import gc

        gc.freeze()


def _run() -> None:
    """The command asked: a server, `probe` without typer, or typer with the start-up caches."""
    words = tuple(a for a in sys.argv[1:] if not a.startswith("-"))[:2]
    if words in _LONG_RUNNING:
        from .app import main as run

        run()
        return
    from . import dataclass_code, pattern_code

    dataclass_code.install()
    pattern_code.install()
    try:
        if sys.argv[1:2] == ["probe"]:
            _probe_without_typer(sys.argv[2:])  # returns only when typer should read the command line
        from .app import main as run

        run()
    finally:
        dataclass_code.save()
        pattern_code.save()


def _probe_without_typer(args: list[str]) -> None:
    """Run `tlsfleet probe ARGS` without importing typer when probe_argv reads ARGS for certain (it exits);
    otherwise return."""
    import os

    from .probe_argv import read_probe_argv

    options = read_probe_argv(args, os.environ)
    if options is None:
        return
    from ...agent.command import run_without_typer
    from .probe_command import probe_command

    run_without_typer(args, lambda: probe_command(**options))  # type: ignore[arg-type]
