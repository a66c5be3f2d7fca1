"""`tlsfleet CMD ...` builds only CMD when it is a command of its own (not a group): the same help, parsing
and errors as in the whole tree."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tlsfleet.coordinator.cli.app import _only_the_command_asked, app

runner = CliRunner()
COMMANDS = ("probe", "diagnose", "agents", "chain", "demo")


@pytest.mark.parametrize(
    "args",
    [
        *([name, "--help"] for name in COMMANDS),
        ["probe"],
        ["probe", "--bogus"],
        ["probe", "--json"],
        ["chain", "a.test", "--pem", "--text"],
        ["diagnose", "/nonexistent/recording.json"],
    ],
)
def test_a_command_alone_answers_as_in_the_whole_tree(args: list[str]) -> None:
    trimmed = _only_the_command_asked(app, args)
    assert trimmed is not app and [c.callback for c in trimmed.registered_commands] == [
        c.callback for c in app.registered_commands if (c.name or c.callback.__name__) == args[0]
    ]
    alone, whole = runner.invoke(trimmed, args, prog_name="tlsfleet"), runner.invoke(app, args, prog_name="tlsfleet")
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)
    assert app.registered_groups  # the whole tree is left as it was


@pytest.mark.parametrize("args", [[], ["--help"], ["--version"], ["agent", "serve", "--help"], ["prob"], ["pki"]])
def test_anything_else_gets_the_whole_tree(args: list[str]) -> None:
    assert _only_the_command_asked(app, args) is app
