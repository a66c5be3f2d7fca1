"""The start-up cache of dataclasses' generated code (coordinator/cli/dataclass_code.py): cached code is the code
compiling would give, a fresh process compiles nothing it has seen, and a file that is not a good cache of
this interpreter's, or not this user's alone, is ignored whole and replaced; the console entry point keeps
it and pattern_code's for short commands only."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tlsfleet.coordinator.cli import dataclass_code

CLASSES = """
import dataclasses
from dataclasses import InitVar, field
from typing import ClassVar

@dataclasses.dataclass(frozen=True)
class Plain:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()

@dataclasses.dataclass(frozen=True, order=True, kw_only=True)
class Ordered:
    z: float
    y: list[int] = field(default_factory=list)
    hidden: str = field(default="", repr=False, compare=False)

@dataclasses.dataclass(slots=True)
class Slotted:
    n: int
    seed: InitVar[int] = 0
    LIMIT: ClassVar[int] = 3

    def __post_init__(self, seed: int) -> None:
        self.n += seed

@dataclasses.dataclass(frozen=True)
class Child(Plain):
    d: bytes = b""
"""
METHODS = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__lt__", "__ge__")


def build() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "sample"}
    exec(compile(CLASSES, "sample.py", "exec", dont_inherit=True), namespace)
    return namespace


def methods(cls: type) -> dict[str, Any]:
    found = {}
    for name in METHODS:
        method = cls.__dict__.get(name)
        code = getattr(getattr(method, "__wrapped__", method), "__code__", None)
        if code is not None:
            found[name] = code
    return found


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cache installed in this process with $XDG_CACHE_HOME under tmp_path, and taken out afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(dataclass_code.KEPT, "entries", {})
    monkeypatch.setattr(dataclass_code.KEPT, "added", 0)
    dataclass_code.install()
    try:
        yield tmp_path / "tlsfleet"
    finally:
        dataclass_code.uninstall()


def test_cached_code_is_the_code_compiling_gives(installed: Path) -> None:
    cached_miss = build()  # compiled by the cache and kept
    added = dataclass_code.KEPT.added
    assert added >= 20
    cached_hit = build()  # every text seen: nothing compiled
    assert dataclass_code.KEPT.added == added
    dataclass_code.uninstall()
    assert "exec" not in vars(dataclasses)
    plain = build()
    for name in ("Plain", "Ordered", "Slotted", "Child"):
        want = methods(plain[name])
        assert want, name
        assert methods(cached_miss[name]) == want, name
        assert methods(cached_hit[name]) == want, name
    one, two = cached_hit["Plain"](1), plain["Plain"](1)
    assert repr(one) == repr(two) == "Plain(a=1, b='x', c=())"
    assert hash(one) == hash(two)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    assert cached_hit["Ordered"](z=1.0) < cached_hit["Ordered"](z=2.0)
    assert cached_hit["Slotted"](1, seed=2).n == 3


def _exec_from(module_source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"run": dataclass_code._exec}
    exec(compile(module_source, "caller.py", "exec", dont_inherit=True), namespace)
    return namespace


def test_the_callers_future_imports_are_honoured_as_exec_honours_them(installed: Path) -> None:
    text = "def f(a: int) -> None: pass"
    call = "ns = {}\nrun(" + repr(text) + ", {'int': int}, ns)\nf = ns['f']\n"
    postponed = _exec_from("from __future__ import annotations\n" + call)["f"]
    evaluated = _exec_from(call)["f"]
    assert postponed.__annotations__ == {"a": "int", "return": "None"}
    assert evaluated.__annotations__ == {"a": int, "return": None}


PROCESS = """
import sys
from tlsfleet.coordinator.cli import dataclass_code as cache
cache.install()
at_start = len(cache.KEPT.entries)
import tlsfleet.agent.model, tlsfleet.coordinator.outcomes
print(at_start, cache.KEPT.added)
cache.save()
"""


def run_process(cache_home: Path) -> tuple[int, int]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run(
        [sys.executable, "-c", PROCESS], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    at_start, added = done.stdout.split()
    return int(at_start), int(added)


def cache_file(cache_home: Path) -> Path:
    (found,) = (cache_home / "tlsfleet").glob("dataclass-code.*")
    return found


@pytest.mark.e2e  # fresh interpreter processes
def test_a_fresh_process_compiles_nothing_an_earlier_one_kept(tmp_path: Path) -> None:
    at_start, added = run_process(tmp_path)
    assert (at_start, added > 50) == (0, True)  # the first process: an empty cache, everything compiled
    path = cache_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    kept = path.read_bytes()
    at_start, added = run_process(tmp_path)
    assert at_start > 50
    assert added == 0
    assert path.read_bytes() == kept  # nothing new: not written again


@pytest.mark.e2e  # fresh interpreter processes
@pytest.mark.parametrize(
    "damage",
    ["garbage", "another interpreter", "truncated", "not a mapping", "writable by others"],
)
def test_a_file_that_is_not_a_good_cache_is_ignored_and_replaced(tmp_path: Path, damage: str) -> None:
    run_process(tmp_path)
    path = cache_file(tmp_path)
    good = path.read_bytes()
    header_end = good.index(b"\n") + 1
    if damage == "garbage":
        path.write_bytes(b"\x00\xff" * 500)
    elif damage == "another interpreter":
        path.write_bytes(good.replace(sys.version.encode(), b"3.99.0 (other build)", 1))
    elif damage == "truncated":
        path.write_bytes(good[: header_end + (len(good) - header_end) // 2])
    elif damage == "not a mapping":
        import marshal

        path.write_bytes(good[:header_end] + marshal.dumps([1, 2, 3]))
    else:
        path.chmod(0o622)
    at_start, added = run_process(tmp_path)
    assert at_start == 0
    assert added > 50
    assert path.read_bytes() == good  # replaced by a good one
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.e2e  # fresh interpreter processes
def test_the_console_entry_point_keeps_the_cache(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    # Port 1 of loopback refuses at once: a whole probe from this machine, with its findings, in a moment.
    command = [sys.executable, "-m", "tlsfleet.coordinator.cli", "probe", "127.0.0.1:1", "--agents", "local"]
    command += ["--json", "--timeout", "5"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 1, first.stderr
    assert '"refused"' in first.stdout
    paths = [cache_file(tmp_path), *(tmp_path / "tlsfleet").glob("pattern-code.*")]
    assert len(paths) == 2  # regular expressions' code is kept beside dataclasses' (pattern_code.py)
    written = [path.stat().st_mtime_ns for path in paths]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 1, again.stderr
    assert [path.stat().st_mtime_ns for path in paths] == written


@pytest.mark.e2e  # fresh interpreter processes
def test_a_service_runs_without_the_cache(tmp_path: Path) -> None:
    """`agent serve` runs until stopped: no start-up cache is read or kept for it."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "tlsfleet.coordinator.cli", "agent", "serve", "--name", "x", "--listen", "nowhere"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr  # refused at once: --listen names no host:port
    assert not list((tmp_path / "tlsfleet").glob("dataclass-code.*"))
    assert not list((tmp_path / "tlsfleet").glob("pattern-code.*"))
