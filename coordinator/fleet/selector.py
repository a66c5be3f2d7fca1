"""Agent selectors for `--agents`: which vantages a command concerns.

A selector is a comma-separated list of terms. `key=value` and `key!=value` test labels (all must
hold); a bare word is an agent name, shell-style wildcards allowed (any one must match). `local` names
the machine the CLI runs on. Examples: `env=prod`, `web-*`, `env=prod,region!=us-east`, `local,db-1`.

A name term that matches no vantage at all is an error (a typo must not silently shrink the fleet), with
the close names. Labels are those the inventory lists, merged with those an agent reports.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ...agent.errors import UsageError

_TERM = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P<op>!=|=)(?P<value>[^,=!]*)$")
_NAME = re.compile(r"^[a-z0-9*?\[\]-]+$")
MAX_CLOSE_NAMES = 3
MAX_KNOWN_SHOWN = 5


class SelectorError(UsageError):
    """A selector that does not parse; the message shows the accepted forms."""


@dataclass(frozen=True)
class Selector:
    """Which vantages an --agents expression picks: name patterns and label conditions."""

    names: tuple[str, ...] = ()  # patterns; empty means any name
    equal: tuple[tuple[str, str], ...] = ()
    not_equal: tuple[tuple[str, str], ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names):
            return False
        if any(labels.get(key) != value for key, value in self.equal):
            return False
        return all(labels.get(key) != value for key, value in self.not_equal)

    def rules_out(self, name: str, listed: Mapping[str, str]) -> bool:
        """True when the name or the listed labels fail already, whatever labels the agent reports (the
        listed ones win): such an agent need not be asked."""
        if self.names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names):
            return True
        if any(key in listed and listed[key] != value for key, value in self.equal):
            return True
        return any(listed.get(key) == value for key, value in self.not_equal)

    def names_text(self) -> str | None:
        """The name terms alone, as selector text; None when there are none."""
        return ",".join(self.names) or None


def check_names_exist(selector: Selector, known: Collection[str], where: str) -> None:
    """Refuse a name term that matches none of the `known` vantage names, naming the close ones."""
    names = sorted(set(known))
    for pattern in selector.names:
        if any(fnmatch.fnmatchcase(name, pattern) for name in names):
            continue
        import difflib  # only to word this error

        close = difflib.get_close_matches(pattern, names, n=MAX_CLOSE_NAMES, cutoff=0.6)
        if close:
            hint = "close names: " + ", ".join(close)
        else:
            shown = names[:MAX_KNOWN_SHOWN]
            more = len(names) - len(shown)
            hint = "known: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
        raise SelectorError(f"selector term {pattern!r} matches no vantage in {where}; {hint}")


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
