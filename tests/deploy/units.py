"""Reading systemd unit files as systemd does for what the tests check: sections, repeated keys,
backslash-continued lines, Environment= assignments and ${VAR} expansion in command lines."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path: Path) -> dict[str, list[str]]:
    return read_unit(path)["Service"]


def last(values: Mapping[str, list[str]], key: str) -> str:
    return values[key][-1]


def environment(values: Mapping[str, list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for assignment in values.get("Environment", []):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            out[key] = value
    return out


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def variables(command: str) -> set[str]:
    return set(_VARIABLE.findall(command))


def expand(command: str, env: Mapping[str, str]) -> list[str]:
    """ExecStart= as systemd runs it: ${VAR} replaced by the variable's value, then split into words."""
    return shlex.split(_VARIABLE.sub(lambda m: env[m.group(1)], command))
