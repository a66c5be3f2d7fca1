"""`tlsfleet probe`'s command line read without typer, when it can be read for certain.

Importing typer and building the command from its signature take about a sixth of a local `tlsfleet probe`.
The options here are the ones app.py declares for `probe` (tests/coordinator/test_probe_argv.py holds the
two to the same names, flags, types, defaults and values read); anything this reader is not sure of, such
as --help, an unknown option, a value typer would refuse or an abbreviation, returns None, and typer reads
the command line as always, errors and help included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["flag", "str", "int", "float", "path", "strs"]


@dataclass(frozen=True)
class Option:
    """One option of `tlsfleet probe`: its parameter, its names on the command line, what it holds."""

    parameter: str
    names: tuple[str, ...]
    kind: Kind
    default: object = None
    envvar: str | None = None


POSITIONAL = "target"  # HOST[:PORT] ..., zero or more

OPTIONS = (
    Option("targets_file", ("--targets-file",), "path"),
    Option("sni", ("--sni",), "str"),
    Option("no_sni", ("--no-sni",), "flag", False),
    Option("alpn", ("--alpn",), "strs"),
    Option("tls_min", ("--tls-min",), "str"),
    Option("tls_max", ("--tls-max",), "str"),
    Option("address", ("--address",), "str"),
    Option("max_addresses", ("--max-addresses",), "int", 8),
    Option("client_cert", ("--client-cert",), "str"),
    Option("starttls", ("--starttls",), "str"),
    Option("via_proxy", ("--via-proxy",), "flag", False),
    Option("coordinator", ("--coordinator",), "str", None, "TLSFLEET_COORDINATOR"),
    Option("agents", ("--agents", "-a"), "str"),
    Option("inventory", ("--inventory", "-i"), "path"),
    Option("no_local", ("--no-local",), "flag", False),
    Option("timeout", ("--timeout", "-t"), "float", 10.0),
    Option("json_output", ("--json",), "flag", False),
    Option("sni_variants", ("--sni-variants",), "str"),
    Option("fail_on", ("--fail-on",), "str", "warning"),
    Option("clock_tolerance", ("--clock-tolerance",), "float", 2.0),
    Option("notes", ("--notes",), "flag", False),
    Option("save", ("--save",), "path"),
)

_BY_NAME = {name: option for option in OPTIONS for name in option.names}


class _Unsure(Exception):
    """What typer should read instead."""


def read_probe_argv(args: Sequence[str], environ: Mapping[str, str]) -> dict[str, object] | None:
    """probe_command's keyword arguments from the words after `probe`, as typer would pass them; None when
    typer should read them (help, anything unusual, anything it would refuse)."""
    try:
        return _read(list(args), environ)
    except _Unsure:
        return None


def _read(args: list[str], environ: Mapping[str, str]) -> dict[str, object]:
    given: dict[str, object] = {}
    targets: list[str] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-") or word == "-":
            targets.append(word)
            continue
        name, equals, attached = word.partition("=")
        option = _BY_NAME.get(name)
        if option is None or (equals and not name.startswith("--")):
            raise _Unsure  # --help, -h, --, an unknown or abbreviated option, -tVALUE
        if option.kind == "flag":
            if equals:
                raise _Unsure
            given[option.parameter] = True
            continue
        value = attached if equals else next(words, None)
        if value is None or (not equals and value.startswith("-")):
            raise _Unsure  # a missing value, or one typer might read as an option
        converted = _convert(option.kind, value)
        if option.kind == "strs":
            previous = given.get(option.parameter)
            given[option.parameter] = [*(previous if isinstance(previous, list) else []), value]
        else:
            given[option.parameter] = converted
    read: dict[str, object] = {POSITIONAL: targets or None}
    for option in OPTIONS:
        if option.parameter in given:
            read[option.parameter] = given[option.parameter]
        elif option.envvar and environ.get(option.envvar):
            read[option.parameter] = environ[option.envvar]
        else:
            read[option.parameter] = option.default
    return read


def _convert(kind: Kind, value: str) -> object:
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise _Unsure from None
    if kind == "path":
        if not value:
            raise _Unsure
        return Path(value)
    return value
