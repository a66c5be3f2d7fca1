"""Small helpers for findings' sentences, so every rule words lists and counts the same way."""

from __future__ import annotations

from collections.abc import Sequence

MAX_NAMED = 5


def name_list(names: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`, `a, b, c, d, e and 3 more`."""
    names = list(dict.fromkeys(names))
    if len(names) > MAX_NAMED:
        return ", ".join(names[:MAX_NAMED]) + f" and {len(names) - MAX_NAMED} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
