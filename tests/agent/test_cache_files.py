"""Where the CLI keeps its caches: under $XDG_CACHE_HOME or an existing home, never in a home it would make."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlsfleet.agent.cache_files import cache_dir


def test_the_cache_goes_under_xdg_cache_home_or_an_existing_home(tmp_path: Path) -> None:
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": "/nowhere"}) == tmp_path / "xdg" / "tlsfleet"
    assert cache_dir({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "tlsfleet"
    assert cache_dir({"HOME": str(tmp_path / "missing")}) is None  # as a service user's /nonexistent
    assert cache_dir({"HOME": "relative"}) is None
    assert cache_dir({}) is None


@pytest.mark.e2e
def test_a_command_with_a_missing_home_makes_no_home(tmp_path: Path) -> None:
    home = tmp_path / "nonexistent"
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"} | {"HOME": str(home)}
    script = "import sys; sys.argv[0] = 'tlsfleet'; from tlsfleet.coordinator.cli.launch import main; main()"
    done = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not home.exists()
