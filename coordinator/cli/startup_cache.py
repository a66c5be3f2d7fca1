"""One dictionary kept across CLI processes in a file of tlsfleet's cache directory: what a start-up cache
(dataclass_code.py, pattern_code.py) hands a fresh process instead of work an earlier one did.

The file lives with tlsfleet's other caches (agent/cache_files.py: this user's own, writable by nobody else,
or ignored), is named by the interpreter's cache tag and begins with its full version, so another interpreter
never loads it. A file that is malformed, of another version, over its caps or holding one entry of the wrong
shape is ignored whole and replaced at the next save. When the entries outgrow their cap (other commands,
other versions of tlsfleet), a save keeps only those this process used.
"""

from __future__ import annotations

import contextlib
import marshal
import sys
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ...agent.cache_files import cache_dir, read_owned, write_owned

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class StartupCache(Generic[K, V]):
    """Entries of one kind, read whole from their file and written whole when this process added some."""

    def __init__(
        self, name: str, version: int, max_entries: int, max_bytes: int, entry_ok: Callable[[object, object], bool]
    ) -> None:
        self.file = f"{name}.{sys.implementation.cache_tag}.v{version}"
        self.header = f"tlsfleet {name} {version} {sys.version}\n".encode()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entry_ok = entry_ok
        self.entries: dict[K, V] = {}
        self.used: set[K] = set()
        self.added = 0  # entries this process added
        self._dropped = False

    def read(self) -> None:
        """Take in the file's entries, when it is a good one."""
        where = cache_dir()
        data = read_owned(where / self.file, self.max_bytes) if where is not None else None
        if data is None or not data.startswith(self.header):
            return
        try:
            loaded = marshal.loads(data[len(self.header) :])
        except (EOFError, ValueError, TypeError):
            return
        if not isinstance(loaded, dict) or len(loaded) > self.max_entries:
            return
        if all(self._entry_ok(key, value) for key, value in loaded.items()):
            self.entries.update(loaded)

    def get(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.used.add(key)
        return value

    def add(self, key: K, value: V) -> None:
        self.entries[key] = value
        self.used.add(key)
        self.added += 1

    def drop(self, key: K) -> None:
        """Forget an entry that proved unusable; the next save leaves it out."""
        self.entries.pop(key, None)
        self.used.discard(key)
        self._dropped = True

    def save(self) -> None:
        """Write the file when this process changed something; a failure leaves the file as it was."""
        where = cache_dir()
        if not (self.added or self._dropped) or where is None:
            return
        self.added, self._dropped = 0, False
        entries = self.entries
        if len(entries) > self.max_entries:
            entries = {key: value for key, value in entries.items() if key in self.used}
            if len(entries) > self.max_entries:
                return
        try:
            data = self.header + marshal.dumps(entries)
        except ValueError:
            return  # an unmarshallable value: keep nothing rather than part
        if len(data) <= self.max_bytes:
            with contextlib.suppress(OSError):  # a read-only or full home: the next process works, as before
                write_owned(where, self.file, data)
