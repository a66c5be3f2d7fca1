"""Headless Chromium for tests that look at a page as a browser renders it (Debian's `chromium`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1366, 900  # a laptop screen
DEADLINE_S = 60

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)"
)


def chromium(page: Path, *mode: str) -> bytes:
    """Run headless Chromium on the page with a throwaway profile; its stdout. Killed and cleaned up in any case."""
    profile = Path(tempfile.mkdtemp(prefix="tlsfleet-chromium-"))
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        # Nothing resolves: the page must render from the file alone.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *mode,
        page.as_uri(),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=page.parent
    )
    try:
        out, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 0, err.decode(errors="replace")[-2000:]
        return out
    finally:
        # Its own session: the renderer and zygote children go with the browser's process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
