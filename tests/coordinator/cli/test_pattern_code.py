"""The start-up cache of regular expressions' compiled code (coordinator/cli/pattern_code.py): a pattern made
from kept code is the pattern `re` makes, a fresh process compiles nothing it has seen, and an entry the
engine refuses is dropped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.coordinator.cli import pattern_code

# Inline and given flags, named and numbered groups, classes, look-around, possessive and bytes patterns.
PATTERNS: list[tuple[str | bytes, int]] = [
    (r"(?P<key>[A-Za-z]+)=(?P<value>[^,]*)(?:,|$)", 0),
    (r"(?i)^CN=(.+?)\s*$", 0),
    (
        r"""
        (?P<major>\d+) \. (?P<minor>\d+)   # a version
        (?: \. (?P<patch>\d+) )?
    """,
        re.VERBOSE,
    ),
    (r"(?<=@)[\w.-]+(?!\.)\b", re.ASCII),
    (r"(a)?(?(1)b|c)", 0),
    (r"\d++[^\W\d_]*+", re.UNICODE),
    (rb"\x16\x03[\x00-\x04]..", re.DOTALL),
    (r"^\s*#.*$", re.MULTILINE),
]
SAMPLES: list[str | bytes] = [
    "CN=host.example , ",
    "ab c a=1,b=2",
    "mail@host.example. 1.2.3 x",
    "\u00e912 45",
    b"\x16\x03\x01\x02\x00",
]


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cache installed in this process with $XDG_CACHE_HOME under tmp_path, and taken out afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(pattern_code.KEPT, "entries", {})
    monkeypatch.setattr(pattern_code.KEPT, "added", 0)
    pattern_code.install()
    re.purge()
    try:
        yield tmp_path / "tlsfleet"
    finally:
        pattern_code.uninstall()
        re.purge()


def behaviour(pattern: re.Pattern) -> list[object]:
    seen: list[object] = [pattern.flags, pattern.groups, dict(pattern.groupindex)]
    for sample in SAMPLES:
        if isinstance(sample, bytes) == isinstance(pattern.pattern, bytes):
            seen.append([m.groupdict() or m.groups() or m.group() for m in pattern.finditer(sample)])  # type: ignore[arg-type]
    return seen


def test_a_pattern_from_kept_code_is_the_pattern_re_makes(installed: Path) -> None:
    if pattern_code._original is None:
        pytest.skip(f"pattern_code knows no re of Python {sys.version_info[:2]}: nothing is installed")
    missed = [re.compile(text, flags) for text, flags in PATTERNS]
    assert pattern_code.KEPT.added == len(PATTERNS)
    re.purge()
    hit = [re.compile(text, flags) for text, flags in PATTERNS]
    assert pattern_code.KEPT.added == len(PATTERNS)  # every text seen: nothing compiled
    pattern_code.uninstall()
    re.purge()
    plain = [re.compile(text, flags) for text, flags in PATTERNS]
    for want, one, two in zip(plain, missed, hit, strict=True):
        assert want == one == two, want.pattern
        assert behaviour(want) == behaviour(one) == behaviour(two), want.pattern


def test_an_entry_the_engine_refuses_is_dropped_and_compiled_again(installed: Path) -> None:
    if pattern_code._original is None:
        pytest.skip(f"pattern_code knows no re of Python {sys.version_info[:2]}: nothing is installed")
    text = r"(?P<x>a+)b"
    pattern_code.KEPT.entries[(text, 0)] = (32, [1, 2, 3], 1, {"x": 1}, (None, "x"))
    made = re.compile(text)
    assert made.fullmatch("aab") and made.groupindex == {"x": 1}
    good = pattern_code.KEPT.entries[(text, 0)]
    assert good[1] != [1, 2, 3]  # replaced by the code re made
    re.purge()
    assert re.compile(text) == made


def test_debug_and_parsed_patterns_are_left_to_re(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    re.compile("ab+", re.DEBUG)
    assert "LITERAL" in capsys.readouterr().out  # it still prints as it compiles
    scanner = re.Scanner([(r"\d+", lambda s, t: int(t)), (r"\s+", None)])  # type: ignore[attr-defined]
    assert scanner.scan("12 34") == ([12, 34], "")
    assert ("ab+", re.DEBUG) not in pattern_code.KEPT.entries


PROCESS = """
from tlsfleet.coordinator.cli import pattern_code as cache
cache.install()
at_start = len(cache.KEPT.entries)
import cryptography.x509, tomllib
print(at_start, cache.KEPT.added)
cache.save()
"""


@pytest.mark.e2e  # fresh interpreter processes
def test_a_fresh_process_compiles_nothing_an_earlier_one_kept(tmp_path: Path) -> None:
    if sys.version_info[:2] not in pattern_code._KNOWN_VERSIONS:
        pytest.skip(f"pattern_code knows no re of Python {sys.version_info[:2]}: nothing is installed")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}

    def run() -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-c", PROCESS], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        at_start, added = done.stdout.split()
        return int(at_start), int(added)

    at_start, added = run()
    assert (at_start, added > 10) == (0, True)  # cryptography's name parser and tomllib compile patterns
    (path,) = (tmp_path / "tlsfleet").glob("pattern-code.*")
    assert path.stat().st_mode & 0o777 == 0o600
    kept = path.read_bytes()
    at_start, added = run()
    assert at_start > 10
    assert added == 0
    assert path.read_bytes() == kept  # nothing new: not written again
