"""The compiled code of the methods that `dataclasses` generates, kept across CLI processes.

Every dataclass makes `dataclasses` compile the source of its __init__, __repr__, __eq__, __hash__ and, when
frozen, __setattr__ and __delattr__ afresh in each process: some 540 compilations and about 45 ms of a 270 ms
`tlsfleet probe` from this machine. The text compiled is the whole of what the code depends on, so code
compiled once from the same text, with the same compiler flags, by the same interpreter, is what compiling it
again would give: the cache maps (flags, text) to that code and hands it to `exec` in place of the text. It is
installed only on the `dataclasses` module (its global `exec`), by the console entry point before anything
else is imported; a text seen for the first time is compiled as before and kept.

The file (coordinator/cli/launch.py saves it as the process ends) lives with tlsfleet's other caches
(agent/cache_files.py: this user's own, writable by nobody else, or ignored), is named by the interpreter's
cache tag and begins with its full version, so another interpreter never loads it. Anything malformed, of
another version or over its caps is ignored whole and replaced at the next save.
"""

from __future__ import annotations
import __future__

import builtins
import contextlib
import dataclasses
import marshal
import sys
from types import CodeType
from typing import Any

from ...agent.cache_files import cache_dir, read_owned, write_owned

MAX_ENTRIES = 4096
MAX_FILE_BYTES = 16 * 1024 * 1024
_FILE = f"dataclass-code.{sys.implementation.cache_tag}.v1"
_HEADER = f"tlsfleet dataclass code 1 {sys.version}\n".encode()
# The flags an `exec` of source text inherits from the frame that calls it (its module's future imports).
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag

_codes: dict[tuple[int, str], CodeType] = {}
_added = 0
_installed = False


def install() -> None:
    """Read the cache and have `dataclasses` run cached code for the source it would compile."""
    global _installed
    if _installed:
        return
    _codes.update(_read())
    dataclasses.exec = _exec  # type: ignore[attr-defined]  # shadows the builtin for that module alone
    _installed = True


def uninstall() -> None:
    """`dataclasses` compiles as before (the entries read stay in memory until `save`)."""
    global _installed
    if _installed:
        del dataclasses.exec  # type: ignore[attr-defined]
        _installed = False


def save() -> None:
    """Write the cache when this process compiled something new; a failure leaves the file as it was."""
    global _added
    where = cache_dir()
    if not _added or where is None or len(_codes) > MAX_ENTRIES:
        return
    _added = 0
    try:
        data = _HEADER + marshal.dumps(_codes)
    except ValueError:
        return  # an unmarshallable constant in some generated code: keep nothing rather than part
    if len(data) <= MAX_FILE_BYTES:
        with contextlib.suppress(OSError):  # a read-only or full home: the next process compiles, as before
            write_owned(where, _FILE, data)


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    global _added
    if isinstance(source, str):
        flags = sys._getframe(1).f_code.co_flags & _FUTURE_FLAGS
        key = (flags, source)
        code = _codes.get(key)
        if code is None:
            code = compile(source, "<string>", "exec", flags, dont_inherit=True)
            if len(_codes) < MAX_ENTRIES:
                _codes[key] = code
                _added += 1
        source = code
    builtins.exec(source, globals, locals)


def _read() -> dict[tuple[int, str], CodeType]:
    where = cache_dir()
    data = read_owned(where / _FILE, MAX_FILE_BYTES) if where is not None else None
    if data is None or not data.startswith(_HEADER):
        return {}
    try:
        loaded = marshal.loads(data[len(_HEADER) :])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(loaded, dict) or len(loaded) > MAX_ENTRIES:
        return {}
    entries: dict[tuple[int, str], CodeType] = {}
    for key, code in loaded.items():
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and isinstance(key[0], int)
            and isinstance(key[1], str)
            and isinstance(code, CodeType)
        ):
            return {}
        entries[key] = code
    return entries
