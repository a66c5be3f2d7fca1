"""The SRE code of the regular expressions a CLI process compiles, kept across CLI processes.

`re` turns a pattern's text into the code its C engine runs in Python (parse, then code generation), afresh
in each process: some 75 patterns and 13 ms of a `tlsfleet probe` from this machine, most of it
cryptography's RFC 4514 name parser compiled as `cryptography.x509` is imported. That code depends only on
the text, the flags and the interpreter, so the cache maps (text, flags) to what `re._compiler.compile` gives
the engine (`_sre.compile`'s arguments) and hands the engine that instead of compiling again. A text seen
for the first time is compiled as before, and kept only when the engine given the kept arguments makes a
pattern equal to the one `re` made (same code, flags and groups); the engine checks any code it is given,
and a kept entry it refuses is dropped and compiled as before. Installed by the console entry point in place
of `re._compiler.compile`, whose body this mirrors, on the interpreters where that body is known; elsewhere
nothing is installed. startup_cache.py keeps the file.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from .startup_cache import StartupCache

MAX_ENTRIES = 2048
MAX_FILE_BYTES = 8 * 1024 * 1024
# `re._compiler.compile` parses, generates code and hands `_sre.compile` these arguments alike in 3.11-3.14.
_KNOWN_VERSIONS = ((3, 11), (3, 12), (3, 13), (3, 14))

Key = tuple[str | bytes, int]  # the pattern's text and flags, as `re._compiler.compile` is given them
# `_sre.compile`'s arguments after the text: flags with the inline ones, code, groups, groupindex, indexgroup.
Entry = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]


def _entry_ok(key: object, entry: object) -> bool:
    return (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str | bytes)
        and isinstance(key[1], int)
        and isinstance(entry, tuple)
        and len(entry) == 5
        and isinstance(entry[0], int)
        and isinstance(entry[1], list)
        and isinstance(entry[2], int)
        and isinstance(entry[3], dict)
        and isinstance(entry[4], tuple)
    )


KEPT: StartupCache[Key, Entry] = StartupCache("pattern-code", 1, MAX_ENTRIES, MAX_FILE_BYTES, _entry_ok)
_original: Any = None


def install() -> None:
    """Read the cache and have `re` take kept code for the patterns it compiles (where the interpreter's `re`
    is one this module knows)."""
    global _original
    compiler = getattr(re, "_compiler", None)
    if _original is not None or sys.version_info[:2] not in _KNOWN_VERSIONS or compiler is None:
        return
    if not all(hasattr(compiler, name) for name in ("compile", "_code", "_parser", "_sre", "SRE_FLAG_DEBUG")):
        return
    KEPT.read()
    _original = compiler.compile
    compiler.compile = _compile


def uninstall() -> None:
    """`re` compiles as before (the entries read stay in memory until `save`)."""
    global _original
    if _original is not None:
        re._compiler.compile = _original  # type: ignore[attr-defined]
        _original = None


def save() -> None:
    """Write the cache when this process compiled something new."""
    KEPT.save()


def _compile(p: Any, flags: int = 0) -> Any:
    compiler = re._compiler  # type: ignore[attr-defined]
    if not isinstance(p, str | bytes) or type(flags) is not int or flags & compiler.SRE_FLAG_DEBUG:
        return _original(p, flags)  # a parsed pattern (re.Scanner), or one that prints as it compiles
    key = (p, flags)
    entry = KEPT.get(key)
    if entry is not None:
        try:
            return compiler._sre.compile(p, *entry)
        except Exception:  # the engine refused the code: not a good entry
            KEPT.drop(key)
    made = _original(p, flags)
    parsed = compiler._parser.parse(p, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    code = list(map(int, compiler._code(parsed, flags)))  # opcodes are int subclasses, which marshal refuses
    entry = (flags | parsed.state.flags, code, parsed.state.groups - 1, groupindex, tuple(indexgroup))
    try:
        again = compiler._sre.compile(p, *entry)
    except Exception:
        return made
    if again == made and again.groups == made.groups and again.groupindex == made.groupindex:
        KEPT.add(key, entry)
    return made
