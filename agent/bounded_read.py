"""Reading a whole file that must not be larger than a limit: configuration, inventories, hosts files,
PEM files, trust stores, recordings.

The limit holds for the bytes read, not only for the size the file system reports: a file may grow
after it is measured, and pipes and /proc files report a size of 0.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["FileTooLarge", "read_capped", "read_capped_text"]


class FileTooLarge(OSError):
    """The file holds more than the limit; its message names the path and the limit.

    An OSError, so that a caller that only handles "cannot read" still refuses the file."""

    def __init__(self, path: Path, limit: int, size: int | None) -> None:
        super().__init__(errno.EFBIG, f"larger than {limit} bytes", str(path))
        self.limit = limit
        self.size = size  # what the file system reported; None when it reported the limit or less

    def __str__(self) -> str:
        return f"{self.filename} is larger than {self.limit} bytes"


def read_capped(path: Path, limit: int) -> bytes:
    """The file's bytes; FileTooLarge when there are more than `limit`.

    Any other failure to open or read (missing file, directory, permission) raises its own OSError."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        # The reported size refuses a large file without reading any of it.
        if size > limit:
            raise FileTooLarge(path, limit, size)
        # One byte past the reported size shows whether there is more (a file that grew, or a pipe or
        # /proc file that reports 0); only then is the read, and its buffer, sized by the limit.
        data = f.read(size + 1)
        if len(data) > size:
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise FileTooLarge(path, limit, None)
    return data


def read_capped_text(path: Path, limit: int) -> str:
    """The file as UTF-8 text with universal newlines, as `Path.read_text` reads it; the limit is in bytes.

    UnicodeDecodeError when it is not UTF-8."""
    return read_capped(path, limit).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
