"""A process whose wall clock is off by a fixed amount: libfaketime from PyPI, preloaded.

Only the wall clock moves. Monotonic clocks stay real (asyncio timers, gRPC deadlines and keepalives run
on them; faking them hangs Python), file timestamps stay real (so the interpreter does not rewrite its
bytecode caches), and nothing is cached (each call sees the offset, not a frozen instant).

Debian's libfaketime 0.9.10 hangs Python at start-up; the PyPI wheel ships a build that does not, so
that is the only library this module uses.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path

__all__ = ["FaketimeError", "available", "faketime_env", "library_path", "offset_seconds"]

_OFFSET = re.compile(r"^(?P<sign>[+-])(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdy]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
_CHECK_TIMEOUT_S = 15.0
_CHECK_OFFSET = "+1d"
_CHECK_TOLERANCE_S = 60.0

# What libfaketime needs so that an asyncio/gRPC process keeps working under a moved wall clock.
_SETTINGS = {
    "DONT_FAKE_MONOTONIC": "1",
    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    "FAKETIME_NO_CACHE": "1",
    "NO_FAKE_STAT": "1",
}


class FaketimeError(ValueError):
    """An offset libfaketime would misread, or a library that is not there."""


def offset_seconds(offset: str) -> float:
    """The offset in seconds: '+2d' is 172800.0, '-90m' is -5400.0."""
    match = _OFFSET.match(offset.strip())
    if match is None:
        raise FaketimeError(
            f"clock offset {offset!r} is not accepted; use a sign, a number and an optional unit "
            "s, m, h, d or y, e.g. '+2d', '-36h', '+90'"
        )
    seconds = float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
    return seconds if match["sign"] == "+" else -seconds


def library_path() -> Path | None:
    """The shared library inside the installed `libfaketime` package, or None."""
    if not sys.platform.startswith("linux"):
        return None
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location, "vendor", "libfaketime", "src", "libfaketime.so.1")
        if candidate.is_file():
            return candidate
    return None


def faketime_env(base_env: Mapping[str, str] | None = None, offset: str = "+2d") -> dict[str, str]:
    """`base_env` (default: this process's) plus what makes a child's wall clock run `offset` from true time."""
    offset_seconds(offset)  # refuse what libfaketime would silently misread
    library = library_path()
    if library is None:
        raise FaketimeError("libfaketime is not installed in this environment; pip install libfaketime (Linux only)")
    env = dict(os.environ if base_env is None else base_env)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else str(library)
    env.update(_SETTINGS)
    env["FAKETIME"] = offset.strip()
    # Neither a user's ~/.faketimerc nor a timestamp file may override the offset asked for.
    env["FAKETIME_TIMESTAMP_FILE"] = ""
    env.pop("FAKETIME_SHARED", None)
    return env


@cache
def available() -> str | None:
    """None when a child under libfaketime starts and sees the moved clock; otherwise the reason it does not."""
    if not sys.platform.startswith("linux"):
        return f"libfaketime preloading works on Linux only, not {sys.platform}"
    if library_path() is None:
        return "the PyPI package libfaketime is not installed (pip install libfaketime)"
    check = "import asyncio, time\nasyncio.run(asyncio.sleep(0.01))\nprint(time.time(), time.monotonic())\n"
    try:
        done = subprocess.run(
            [sys.executable, "-c", check],
            env=faketime_env(offset=_CHECK_OFFSET),
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"a Python process under libfaketime did not finish within {_CHECK_TIMEOUT_S:g} s"
    except OSError as error:
        return f"cannot start a process under libfaketime: {error}"
    if done.returncode != 0:
        return f"a Python process under libfaketime failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    try:
        seen = float(done.stdout.split()[0])
    except (IndexError, ValueError):
        return f"a Python process under libfaketime printed {done.stdout.strip()!r} instead of its clock"
    drift = seen - time.time() - offset_seconds(_CHECK_OFFSET)
    if abs(drift) > _CHECK_TOLERANCE_S:
        return f"libfaketime did not move the clock as asked ({drift:+.0f} s from the expected offset)"
    return None
