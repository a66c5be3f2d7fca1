"""Files this user keeps in $XDG_CACHE_HOME/tlsfleet (else ~/.cache/tlsfleet), so that a fresh process need not
redo work an earlier one did: read only when they are this user's own and nobody else can write them, written
whole and renamed into place. What they hold is each caller's business (agent/trust/store_cache.py,
coordinator/cli/dataclass_code.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

MAX_CACHE_BYTES = 64 * 1024 * 1024


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """$XDG_CACHE_HOME/tlsfleet, else ~/.cache/tlsfleet; None when neither can be named, or when the home
    directory does not exist (a service user's /nonexistent): a cache never makes a home."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if base and os.path.isabs(base):
        return Path(base) / "tlsfleet"
    home = env.get("HOME", "")
    return Path(home) / ".cache" / "tlsfleet" if home and os.path.isabs(home) and os.path.isdir(home) else None


def read_owned(path: Path, cap: int = MAX_CACHE_BYTES) -> bytes | None:
    """The file's bytes when it is ours to trust: a regular file of this user, not writable by others, at
    most `cap` bytes; None otherwise or when it cannot be read."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_uid != os.getuid()
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                or st.st_size > cap
            ):
                return None
            data = f.read(cap + 1)
    except OSError:
        return None
    return data if len(data) <= cap else None


def write_owned(where: Path, name: str, data: bytes) -> None:
    """`data` as the file `name` in `where` (made 0700 if missing), written whole to a temporary file and
    renamed into place. Raises OSError."""
    import tempfile  # only when there is something to write

    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=where, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, where / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
