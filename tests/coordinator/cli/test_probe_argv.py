"""`tlsfleet probe` read without typer (probe_argv.py): the same options as app.py declares, the same values
typer would pass, and typer's own reading wherever the reader is not sure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer.models import TyperPath
from typer.testing import CliRunner

from tlsfleet.coordinator.cli import probe_command as probe_module
from tlsfleet.coordinator.cli.app import app
from tlsfleet.coordinator.cli.probe_argv import OPTIONS, POSITIONAL, read_probe_argv

_KIND_OF_TYPE = {"int": "int", "float": "float", "str": "str"}


def _kind(parameter: TyperOption) -> str:
    if parameter.is_flag:
        return "flag"
    if isinstance(parameter.type, TyperPath):
        return "path"
    kind = _KIND_OF_TYPE[parameter.type.name]
    return "strs" if parameter.multiple else kind


def test_every_option_is_the_one_app_declares() -> None:
    """Names, kind, default and environment variable of each option, and no option on either side alone."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    declared = {}
    for parameter in group.commands["probe"].params:
        if isinstance(parameter, TyperArgument):
            assert (parameter.name, parameter.nargs, parameter.type.name) == (POSITIONAL, -1, "str")
            continue
        assert isinstance(parameter, TyperOption) and not parameter.secondary_opts, parameter.name
        default = None if parameter.multiple else parameter.default
        declared[parameter.name] = (tuple(parameter.opts), _kind(parameter), default, parameter.envvar)
    here = {o.parameter: (o.names, o.kind, o.default, o.envvar) for o in OPTIONS}
    assert here == declared


def _as_typer_reads(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    seen: list[dict[str, object]] = []

    def probe_command(**options: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(probe_module, "probe_command", probe_command)
    result = CliRunner().invoke(app, ["probe", *args], env=env, prog_name="tlsfleet")
    assert result.exit_code == 0, result.output
    [options] = seen
    return options


READ_FOR_CERTAIN = [
    ["api.test"],
    ["api.test:8443", "--address", "127.0.0.1", "--agents", "local", "--json", "--timeout", "10"],
    ["a.test", "b.test", "--targets-file", "more.txt", "--no-local", "-a", "env=prod", "-t", "2.5"],
    ["--sni", "www.a.test", "a.test", "--no-sni", "--alpn", "h2", "--alpn", "http/1.1"],
    ["a.test", "--tls-min", "1.2", "--tls-max=1.3", "--max-addresses", "3", "--client-cert", "ops"],
    ["a.test", "--starttls", "smtp", "--via-proxy", "--inventory", "fleet.toml", "-i", "other.toml"],
    ["a.test", "--sni-variants", "none,www.a.test", "--fail-on", "critical", "--clock-tolerance", "0.5"],
    ["a.test", "--notes", "--save", "out.json", "--coordinator", "c.test:7443", "--timeout=1e1"],
    ["a.test", "--timeout", "3", "--timeout", "4", "-"],
    [],
]


@pytest.mark.parametrize("args", READ_FOR_CERTAIN)
@pytest.mark.parametrize("env", [{}, {"TLSFLEET_COORDINATOR": "relay.test:7443"}, {"TLSFLEET_COORDINATOR": ""}])
def test_what_it_reads_is_what_typer_passes(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TLSFLEET_COORDINATOR", raising=False)
    read = read_probe_argv(args, env)
    assert read is not None
    assert read == _as_typer_reads(args, env, monkeypatch)


@pytest.mark.parametrize(
    "args",
    [
        ["-h"],
        ["a.test", "--help"],
        ["a.test", "--bogus"],
        ["a.test", "--tim", "3"],  # an abbreviation
        ["a.test", "-t5"],
        ["a.test", "-t=5"],
        ["a.test", "--timeout", "soon"],
        ["a.test", "--max-addresses", "2.5"],
        ["a.test", "--json=yes"],
        ["a.test", "--agents"],
        ["a.test", "--agents", "-x"],
        ["a.test", "--save", ""],
        ["--", "a.test"],
        ["a.test", "-aj"],
    ],
)
def test_anything_unsure_is_left_to_typer(args: list[str]) -> None:
    assert read_probe_argv(args, {}) is None


# Loopback port 9 (discard) is closed here: the probe completes with a connect failure, exit code 1.
PROBE_WITHOUT_TYPER = """
import atexit, sys
atexit.register(lambda: print("typer imported:", "typer" in sys.modules, file=sys.stderr))
sys.argv = ["tlsfleet", "probe", "127.0.0.1:9", "--agents", "local", "--json", "--timeout", "5"]
from tlsfleet.coordinator.cli.launch import main
main()
"""


@pytest.mark.e2e
def test_a_probe_runs_without_importing_typer(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TLSFLEET_COORDINATOR"} | {"XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE_WITHOUT_TYPER], capture_output=True, text=True, timeout=60, env=env
    )
    assert '"kind": "tlsfleet-probe"' in done.stdout, done.stderr
    assert done.returncode == 1, done.stderr
    assert "typer imported: False" in done.stderr


@pytest.mark.e2e
def test_a_reader_that_goes_away_ends_the_probe_quietly(tmp_path: Path) -> None:
    """`tlsfleet probe ... --json | head -0`: exit 1 as typer's commands do, no internal error, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "TLSFLEET_COORDINATOR"} | {"XDG_CACHE_HOME": str(tmp_path)}
    args = ["probe", "127.0.0.1:9", "--agents", "local", "--json", "--timeout", "5"]
    script = "import sys; sys.argv[0] = 'tlsfleet'; from tlsfleet.coordinator.cli.launch import main; main()"
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the probe's result is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr
