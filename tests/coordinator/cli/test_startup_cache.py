"""The file behind the start-up caches (coordinator/cli/startup_cache.py): read only when it is a good file of
this interpreter's and this user's alone, replaced whole otherwise, and kept to its cap by what was used."""

from __future__ import annotations

import marshal
import sys
from pathlib import Path

import pytest

from tlsfleet.coordinator.cli.startup_cache import StartupCache


def _ok(key: object, value: object) -> bool:
    return isinstance(key, str) and isinstance(value, int)


def cache(max_entries: int = 8) -> StartupCache[str, int]:
    return StartupCache("test-entries", 1, max_entries, 4096, _ok)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "tlsfleet"


def test_entries_come_back_in_a_fresh_reader_and_are_written_only_when_changed(home: Path) -> None:
    first = cache()
    first.add("a", 1)
    first.add("b", 2)
    first.save()
    path = home / first.file
    assert path.stat().st_mode & 0o777 == 0o600
    written = path.stat().st_mtime_ns
    again = cache()
    again.read()
    assert again.entries == {"a": 1, "b": 2}
    assert again.get("a") == 1 and again.get("zz") is None
    again.save()
    assert path.stat().st_mtime_ns == written  # nothing new: not written
    again.drop("a")
    again.save()
    third = cache()
    third.read()
    assert third.entries == {"b": 2}


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "another interpreter",
        "truncated",
        "not a mapping",
        "an entry of another shape",
        "writable by others",
        "over the cap",
    ],
)
def test_a_file_that_is_not_a_good_one_is_ignored_whole_and_replaced(home: Path, damage: str) -> None:
    first = cache(max_entries=3)
    first.add("a", 1)
    first.add("b", 2)
    first.save()
    path = home / first.file
    good = path.read_bytes()
    header = first.header
    if damage == "garbage":
        path.write_bytes(b"\x00\xff" * 50)
    elif damage == "another interpreter":
        path.write_bytes(good.replace(sys.version.encode(), b"3.99.0 (other build)", 1))
    elif damage == "truncated":
        path.write_bytes(good[: len(header) + (len(good) - len(header)) // 2])
    elif damage == "not a mapping":
        path.write_bytes(header + marshal.dumps([1, 2]))
    elif damage == "an entry of another shape":
        path.write_bytes(header + marshal.dumps({"a": 1, "b": "two"}))
    elif damage == "over the cap":
        path.write_bytes(header + marshal.dumps({"a": 1, "b": 2, "c": 3, "d": 4}))
    else:
        path.chmod(0o622)
    reader = cache(max_entries=3)
    reader.read()
    assert reader.entries == {}
    reader.add("a", 1)
    reader.add("b", 2)
    reader.save()
    assert path.read_bytes() == good
    assert path.stat().st_mode & 0o777 == 0o600


def test_entries_over_the_cap_keep_only_those_this_process_used(home: Path) -> None:
    first = cache(max_entries=3)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        first.add(key, value)
    first.save()
    later = cache(max_entries=3)
    later.read()
    assert later.get("b") == 2
    later.add("d", 4)  # four entries: more than the cap
    later.save()
    last = cache(max_entries=3)
    last.read()
    assert last.entries == {"b": 2, "d": 4}


def test_without_a_cache_directory_nothing_is_read_or_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "relative/home")
    kept = cache()
    kept.read()
    kept.add("a", 1)
    kept.save()  # nowhere to write: no error
    assert kept.entries == {"a": 1}
