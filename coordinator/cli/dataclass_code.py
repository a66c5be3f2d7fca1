"""The compiled code of the methods that `dataclasses` generates, kept across CLI processes.

Every dataclass makes `dataclasses` compile the source of its __init__, __repr__, __eq__, __hash__ and, when
frozen, __setattr__ and __delattr__ afresh in each process: some 540 compilations and about 45 ms of a 270 ms
`tlsfleet probe` from this machine. The text compiled is the whole of what the code depends on, so code
compiled once from the same text, with the same compiler flags, by the same interpreter, is what compiling it
again would give: the cache maps (flags, text) to that code and hands it to `exec` in place of the text. It is
installed only on the `dataclasses` module (its global `exec`), by the console entry point before anything
else is imported; a text seen for the first time is compiled as before and kept (startup_cache.py keeps the
file). What the cache cannot spare: a dataclass without a docstring gets one made from `inspect.signature`
(some 85 us a class at every start-up), so the classes a probe loads have docstrings of their own.
"""

from __future__ import annotations
import __future__

import builtins
import dataclasses
import sys
from types import CodeType
from typing import Any

from .startup_cache import StartupCache

MAX_ENTRIES = 4096
MAX_FILE_BYTES = 16 * 1024 * 1024
# The flags an `exec` of source text inherits from the frame that calls it (its module's future imports).
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


def _entry_ok(key: object, code: object) -> bool:
    return (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], int)
        and isinstance(key[1], str)
        and isinstance(code, CodeType)
    )


KEPT: StartupCache[tuple[int, str], CodeType] = StartupCache(
    "dataclass-code", 2, MAX_ENTRIES, MAX_FILE_BYTES, _entry_ok
)
_installed = False


def install() -> None:
    """Read the cache and have `dataclasses` run cached code for the source it would compile."""
    global _installed
    if _installed:
        return
    KEPT.read()
    dataclasses.exec = _exec  # type: ignore[attr-defined]  # shadows the builtin for that module alone
    _installed = True


def uninstall() -> None:
    """`dataclasses` compiles as before (the entries read stay in memory until `save`)."""
    global _installed
    if _installed:
        del dataclasses.exec  # type: ignore[attr-defined]
        _installed = False


def save() -> None:
    """Write the cache when this process compiled something new."""
    KEPT.save()


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    if isinstance(source, str):
        flags = sys._getframe(1).f_code.co_flags & _FUTURE_FLAGS
        key = (flags, source)
        code = KEPT.get(key)
        if code is None:
            code = compile(source, "<string>", "exec", flags, dont_inherit=True)
            KEPT.add(key, code)
        source = code
    builtins.exec(source, globals, locals)
