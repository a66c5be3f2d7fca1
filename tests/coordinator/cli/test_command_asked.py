"""`tlsfleet CMD ...` builds only CMD when it is a command of its own (not a group): the same help, parsing
and errors as in the whole tree."""

from __future__ import annotations

import subprocess
import sys

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


GROUPS_WHEN_LISTED = """
import sys
import typer.main
from tlsfleet.coordinator.cli import app
typer.main.get_command(app._only_the_command_asked(app.app, ["probe", "--help"]))
groups = ("tlsfleet.agent.cli", "tlsfleet.coordinator.cli.coordinator", "tlsfleet.coordinator.cli.pki")
print(sorted(set(groups) & set(sys.modules)))
print([group.name for group in app.app.registered_groups], sorted(set(groups) & set(sys.modules)))
"""


def test_the_groups_are_imported_when_the_whole_tree_is_listed() -> None:
    """`tlsfleet probe` builds its command without the groups' modules; the whole tree lists them all."""
    done = subprocess.run([sys.executable, "-c", GROUPS_WHEN_LISTED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    alone, whole = done.stdout.splitlines()
    assert alone == "[]"
    assert whole == (
        "['agent', 'pki', 'coordinator', 'report'] "
        "['tlsfleet.agent.cli', 'tlsfleet.coordinator.cli.coordinator', 'tlsfleet.coordinator.cli.pki']"
    )
