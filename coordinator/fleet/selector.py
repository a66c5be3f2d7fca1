"""Agent selectors for `--agents`: which vantages a command concerns.

A selector is a comma-separated list of terms. `key=value` and `key!=value` test labels (all must
hold); a bare word is an agent name, shell-style wildcards allowed (any one must match). `local` names
the machine the CLI runs on. Examples: `env=prod`, `web-*`, `env=prod,region!=us-east`, `local,db-1`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ...agent.errors import UsageError

_TERM = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P<op>!=|=)(?P<value>[^,=!]*)$")
_NAME = re.compile(r"^[a-z0-9*?\[\]-]+$")


class SelectorError(UsageError):
    """A selector that does not parse; the message shows the accepted forms."""


@dataclass(frozen=True)
class Selector:
    names: tuple[str, ...] = ()  # patterns; empty means any name
    equal: tuple[tuple[str, str], ...] = ()
    not_equal: tuple[tuple[str, str], ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names):
            return False
        if any(labels.get(key) != value for key, value in self.equal):
            return False
        return all(labels.get(key) != value for key, value in self.not_equal)


def parse_selector(text: str | None) -> Selector:
    if text is None or not text.strip():
        return Selector()
    names: list[str] = []
    equal: list[tuple[str, str]] = []
    not_equal: list[tuple[str, str]] = []
    for raw in text.split(","):
        term = raw.strip()
        match = _TERM.match(term)
        if match and match["key"] == "name" and match["op"] == "=":
            names.append(match["value"])  # agents' names are not labels, but people will write name=web-1
        elif match:
            pair = (match["key"], match["value"])
            (equal if match["op"] == "=" else not_equal).append(pair)
        elif term and _NAME.match(term):
            names.append(term)
        else:
            raise SelectorError(
                f"selector term {term!r} is not accepted; use KEY=VALUE, KEY!=VALUE or an agent name "
                "(wildcards * ? allowed), separated by commas, e.g. 'env=prod,region!=us-east' or 'web-*,local'"
            )
    return Selector(tuple(names), tuple(equal), tuple(not_equal))
