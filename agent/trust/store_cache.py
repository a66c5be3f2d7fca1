"""What trust-store discovery learnt in earlier processes, kept on disk so that a fresh CLI process need not
learn it again: the certificates a store file parses into, what an interpreter answered about its certifi,
what issuer lookup read of each store certificate's names, and the judgements of served chains.

A store file's entry is found by the file's identity (path, device, inode, mtime, size) and used only when
the sha256 of the bytes read now equals the one recorded: the file is still read every time, only its
parsing is saved. Each certificate's DER comes back with its sha256, which is checked again, and is then
parsed as usual, so a verdict always rests on the bytes of the store itself. An interpreter's answer is
found by its command line and used only when its stamp (the interpreter's identity and its site-packages
directories' mtimes, as runtimes.py checks in process) is unchanged; answers that failed are not kept. A
certificate's names are found by the sha256 of its DER and a stamp of the code that read them (the caller's),
and checked for shape by the caller; a judgement likewise, by the whole of what it depends on (verify.py says
what that is) and a stamp of the code and libraries that made it.

It is used only by a process that enables it: the CLI, whose every run discovers the stores afresh (a
long-running agent discovers once and keeps what it read). The files live in $XDG_CACHE_HOME/tlsfleet
(else ~/.cache/tlsfleet), are written whole to a temporary file and renamed into place, and are read
defensively: a file that is not this format and version, not owned by this user, writable by others,
larger than its cap or malformed anywhere is ignored whole (and replaced at the next save). Entries of
files that changed or went away are dropped at each save. Failing to read or write the cache never fails
discovery.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import sys
import threading
from collections.abc import Callable, Mapping

from ..cache_files import MAX_CACHE_BYTES, cache_dir, read_owned, write_owned

__all__ = [
    "FileKey",
    "ParsedFile",
    "enable",
    "enabled",
    "forget",
    "load_answer",
    "load_judgement",
    "load_names",
    "load_parsed",
    "save",
    "store_answer",
    "store_judgement",
    "store_names",
    "store_parsed",
]

MAX_ENTRIES = 8192
MAX_ANSWERS = 256
MAX_NAMES = 16384
MAX_JUDGEMENTS = 4096
_STORES_FILE = "store-files.v2"
_ANSWERS_FILE = "interpreter-answers.v1.json"
_NAMES_FILE = f"certificate-names.{sys.implementation.cache_tag}.v1"
_JUDGEMENTS_FILE = f"judgements.{sys.implementation.cache_tag}.v1"
_MAGIC = f"tlsfleet store-file cache 2 {sys.version}\n".encode()

FileKey = tuple[str, int, int, int, int]  # path, st_dev, st_ino, st_mtime_ns, st_size
# (sha256 hex of the file's bytes, (sha256 hex, DER) of each certificate in order, blocks seen, unreadable)
ParsedFile = tuple[str, tuple[tuple[str, bytes], ...], int, int]

_lock = threading.Lock()
_enabled = False
_parsed: dict[FileKey, ParsedFile] | None = None  # None: not read from disk yet
_answers: dict[str, dict[str, object]] | None = None
_dirty = False
_touched: set[FileKey] = set()  # entries this process looked up or parsed: kept at the next save


def enable() -> None:
    """Use the cache in this process from now on."""
    global _enabled
    _enabled = True


def _decode_parsed(data: bytes) -> dict[FileKey, ParsedFile]:
    """The entries after the magic, as marshal wrote them, each checked for shape. Raises ValueError (or
    EOFError, TypeError) on anything malformed."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a store-file cache of this version")
    loaded = marshal.loads(data[len(_MAGIC) :])
    if not isinstance(loaded, dict) or len(loaded) > MAX_ENTRIES:
        raise ValueError("not a mapping within the cap")
    for key, entry in loaded.items():
        if not (_is_file_key(key) and _is_parsed_file(entry)):
            raise ValueError("an entry of another shape")
    return loaded


def _is_file_key(key: object) -> bool:
    return (
        isinstance(key, tuple)
        and len(key) == 5
        and isinstance(key[0], str)
        and all(isinstance(n, int) for n in key[1:])
    )


def _is_parsed_file(entry: object) -> bool:
    if not (isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[0], str)):
        return False
    certs, blocks, bad = entry[1:]
    return (
        isinstance(certs, tuple)
        and len(certs) <= MAX_ENTRIES
        and all(
            isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], bytes) for c in certs
        )
        and isinstance(blocks, int)
        and isinstance(bad, int)
    )


def _encode_parsed(entries: Mapping[FileKey, ParsedFile]) -> bytes:
    return _MAGIC + marshal.dumps(dict(entries))


def _loaded_parsed() -> dict[FileKey, ParsedFile]:
    global _parsed
    if _parsed is None:
        _parsed = {}
        where = cache_dir()
        data = read_owned(where / _STORES_FILE) if where is not None else None
        if data is not None:
            try:
                _parsed = _decode_parsed(data)
            except (ValueError, EOFError, TypeError):
                _parsed = {}  # corrupt or foreign: parse everything, and replace it at the next save
    return _parsed


def load_parsed(key: FileKey, data: bytes) -> tuple[tuple[tuple[str, bytes], ...], int, int] | None:
    """(certificates as (sha256, DER), blocks, unreadable) recorded for the file `key` whose bytes are `data`;
    None unless the bytes are the ones recorded and every DER still has its recorded sha256."""
    if not _enabled:
        return None
    with _lock:
        entry = _loaded_parsed().get(key)
        _touched.add(key)
    if entry is None:
        return None
    digest, certs, blocks, bad = entry
    if hashlib.sha256(data).hexdigest() != digest:
        return None
    if any(hashlib.sha256(der).hexdigest() != fp for fp, der in certs):
        return None
    return certs, blocks, bad


def store_parsed(key: FileKey, data: bytes, certs: tuple[tuple[str, bytes], ...], blocks: int, bad: int) -> None:
    """Record what the file `key` with bytes `data` parsed into, for `save` to write."""
    global _dirty
    if not _enabled:
        return
    entry: ParsedFile = (hashlib.sha256(data).hexdigest(), certs, blocks, bad)
    with _lock:
        _touched.add(key)
        parsed = _loaded_parsed()
        if parsed.get(key) != entry:
            parsed.pop(key, None)
            parsed[key] = entry  # newest last: the oldest are dropped first at the cap
            while len(parsed) > MAX_ENTRIES:
                del parsed[next(iter(parsed))]
            _dirty = True


def _answer_key(argv: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()


def _loaded_answers() -> dict[str, dict[str, object]]:
    global _answers
    if _answers is None:
        _answers = {}
        where = cache_dir()
        data = read_owned(where / _ANSWERS_FILE) if where is not None else None
        if data is not None:
            try:
                raw = json.loads(data)
                if isinstance(raw, dict) and raw.get("version") == 1 and isinstance(raw.get("answers"), dict):
                    _answers = {str(k): v for k, v in raw["answers"].items() if isinstance(v, dict)}
            except (ValueError, RecursionError):
                _answers = {}
    return _answers


def load_answer(argv: tuple[str, ...]) -> tuple[object, dict[str, object]] | None:
    """(stamp, answer) recorded for `argv`, JSON-shaped; the caller compares the stamp with today's."""
    if not _enabled:
        return None
    with _lock:
        entry = _loaded_answers().get(_answer_key(argv))
    if entry is None or not isinstance(entry.get("answer"), dict):
        return None
    answer = entry["answer"]
    assert isinstance(answer, dict)
    return entry.get("stamp"), answer


def store_answer(argv: tuple[str, ...], stamp: object, answer: dict[str, object]) -> None:
    """Record the answer of `argv` under `stamp` (JSON-shaped), for `save` to write."""
    global _dirty
    if not _enabled:
        return
    entry = {"stamp": stamp, "answer": answer}
    with _lock:
        answers = _loaded_answers()
        key = _answer_key(argv)
        if answers.get(key) != entry:
            answers.pop(key, None)
            answers[key] = entry
            while len(answers) > MAX_ANSWERS:
                del answers[next(iter(answers))]
            _dirty = True


class _Stamped:
    """Values found by a string key, made by code whose stamp the caller gives: one file per kind, its header
    holding the stamp, so that a file another code made is ignored whole (and replaced at the next save)."""

    def __init__(self, file: str, kind: str, max_entries: Callable[[], int]) -> None:
        self.file = file
        self.kind = kind
        self.max_entries = max_entries  # read when used: tests lower the caps
        self.entries: dict[str, object] | None = None  # None: not read from disk yet
        self.stamp = ""
        self.used: set[str] = set()
        self.dirty = False

    def _header(self, stamp: str) -> bytes:
        return f"tlsfleet {self.kind} 1 {stamp} {sys.version}\n".encode()

    def _loaded(self, stamp: str) -> dict[str, object]:
        if self.entries is None or self.stamp != stamp:
            self.entries, self.stamp, self.dirty = {}, stamp, False
            self.used.clear()
            where = cache_dir()
            data = read_owned(where / self.file) if where is not None else None
            header = self._header(stamp)
            if data is not None and data.startswith(header):
                try:
                    loaded = marshal.loads(data[len(header) :])
                except (EOFError, ValueError, TypeError):
                    loaded = None
                if (
                    isinstance(loaded, dict)
                    and len(loaded) <= self.max_entries()
                    and all(isinstance(k, str) for k in loaded)
                ):
                    self.entries = loaded
        return self.entries

    def load(self, key: str, stamp: str) -> object | None:
        value = self._loaded(stamp).get(key)
        if value is not None:
            self.used.add(key)
        return value

    def store(self, key: str, stamp: str, value: object) -> None:
        entries = self._loaded(stamp)
        self.used.add(key)
        if entries.get(key) != value:
            entries[key] = value
            self.dirty = True

    def encoded(self) -> bytes | None:
        entries = self.entries or {}
        if len(entries) > self.max_entries():  # other hosts' or versions' entries: keep what this process used
            entries = {key: v for key, v in entries.items() if key in self.used}
        try:
            return self._header(self.stamp) + marshal.dumps(entries)
        except ValueError:
            return None

    def forget(self) -> None:
        self.entries, self.dirty = None, False
        self.used.clear()


_names = _Stamped(_NAMES_FILE, "certificate names", lambda: MAX_NAMES)  # by certificate sha256
_judgements = _Stamped(_JUDGEMENTS_FILE, "judgements", lambda: MAX_JUDGEMENTS)


def load_names(fp: str, stamp: str) -> object | None:
    """What was recorded of the names of the certificate whose DER has the sha256 `fp`, by code whose stamp is
    `stamp`; None when nothing was. The caller checks its shape."""
    if not _enabled:
        return None
    with _lock:
        return _names.load(fp, stamp)


def store_names(fp: str, stamp: str, value: object) -> None:
    """Record what code stamped `stamp` read of the names of the certificate `fp` (marshal's types only)."""
    if not _enabled:
        return
    with _lock:
        _names.store(fp, stamp, value)


def load_judgement(key: str, stamp: str) -> object | None:
    """The judgement recorded under `key` by code (and libraries) whose stamp is `stamp`; None when there is
    none. The caller checks its shape."""
    if not _enabled:
        return None
    with _lock:
        return _judgements.load(key, stamp)


def store_judgement(key: str, stamp: str, value: object) -> None:
    """Record a judgement (marshal's types only) made by code stamped `stamp`."""
    if not _enabled:
        return
    with _lock:
        _judgements.store(key, stamp, value)


def enabled() -> bool:
    """Whether this process uses the cache (the CLI does, a long-running agent does not)."""
    return _enabled


def save() -> None:
    """Write what changed since the cache was read, atomically; any failure leaves the cache as it was."""
    global _dirty
    where = cache_dir()
    with _lock:
        stamped = [kept for kept in (_names, _judgements) if kept.dirty]
        if not (_dirty or stamped) or where is None:
            return
        files: list[tuple[str, bytes]] = []
        if _dirty:
            parsed = {k: v for k, v in _loaded_parsed().items() if _current(k)}
            files.append((_STORES_FILE, _encode_parsed(parsed)))
            files.append((_ANSWERS_FILE, json.dumps({"version": 1, "answers": _loaded_answers()}).encode()))
        for kept in stamped:
            if (data := kept.encoded()) is not None:
                files.append((kept.file, data))
            kept.dirty = False
        _dirty = False
    try:
        for name, data in files:
            if len(data) <= MAX_CACHE_BYTES:
                write_owned(where, name, data)
    except OSError:
        return  # a read-only or full home: discovery works the same, only slower next time


def _current(key: FileKey) -> bool:
    """Whether an entry is worth keeping: used by this process, or its file is still the one recorded
    (entries of files that changed or went away are dropped, so the cache holds what the host has)."""
    if key in _touched:
        return True
    try:
        st = os.stat(key[0])
    except OSError:
        return False
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) == key[1:]


def forget() -> None:
    """Drop what this process holds and read the disk again when next asked (after a forced re-read, or a
    test that changed $XDG_CACHE_HOME)."""
    global _parsed, _answers, _dirty
    with _lock:
        _parsed, _answers, _dirty = None, None, False
        _touched.clear()
        _names.forget()
        _judgements.forget()
