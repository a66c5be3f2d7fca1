"""The real command trees of `tlsfleet` and `tlsfleet-agent`, walked without running anything: for tests that
check what the docs and the --help texts say against the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer._click.core import Command
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from tlsfleet.agent.cli import app as agent_app
from tlsfleet.coordinator.cli.app import app

PROGRAMS = {"tlsfleet": app, "tlsfleet-agent": agent_app}


def leaf_commands() -> Iterator[tuple[str, Command]]:
    """("tlsfleet report show", its command) for every verb that runs something, of both programs."""

    def walk(command: Command, path: str) -> Iterator[tuple[str, Command]]:
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, command

    for program, typer_app in PROGRAMS.items():
        yield from walk(typer.main.get_command(typer_app), program)


def parse(words: list[str]) -> None:
    """Walk the real command tree to the verb, raising UsageError for a verb or an option it lacks (option
    values are placeholders such as FILE, so they are not converted)."""
    command: Command = typer.main.get_command(PROGRAMS[words[0]])
    args, known = words[1:], {"--help"}
    while True:
        known |= {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        positional = [a for a in args if not a.startswith("-")]
        if not isinstance(command, TyperGroup) or not positional:
            break
        sub = command.commands.get(positional[0])
        if sub is None:
            raise UsageError(f"no such command {positional[0]!r} in `{' '.join(words[: len(words) - len(args)])}`")
        command, args = sub, args[args.index(positional[0]) + 1 :]
    for word in args:
        if word.startswith("-") and word != "-" and word.split("=", 1)[0] not in known:
            raise UsageError(f"no such option {word.split('=', 1)[0]} for `{command.name}`")
