"""The one reader for files with a size limit: the limit itself is accepted, one byte more is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsfleet.agent.bounded_read import FileTooLarge, read_capped, read_capped_text


def test_a_file_under_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"abc")
    assert read_capped(path, 10) == b"abc"


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "exact"
    path.write_bytes(b"x" * 10)
    assert read_capped(path, 10) == b"x" * 10


def test_a_file_over_the_limit_is_refused_naming_path_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 11)
    with pytest.raises(FileTooLarge) as raised:
        read_capped(path, 10)
    assert str(raised.value) == f"{path} is larger than 10 bytes"
    assert (raised.value.limit, raised.value.size) == (10, 11)
    # An OSError, so that code handling only "cannot read" still refuses it.
    assert isinstance(raised.value, OSError)


def test_a_file_that_reports_no_size_is_still_capped() -> None:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no /proc")
    assert status.stat().st_size == 0
    with pytest.raises(FileTooLarge) as raised:
        read_capped(status, 10)
    assert raised.value.size is None  # refused by the bytes read, not by the reported size
    assert b"Name:" in read_capped(status, 1 << 20)


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_capped(tmp_path / "absent", 10)


def test_a_directory_raises_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_capped(tmp_path, 10)


def test_text_is_utf8_with_universal_newlines_as_read_text_gives(tmp_path: Path) -> None:
    path = tmp_path / "text"
    path.write_bytes("a\r\nb\rc\né\n".encode())
    assert read_capped_text(path, 100) == path.read_text(encoding="utf-8") == "a\nb\nc\né\n"
    path.write_bytes(b"\xff")
    with pytest.raises(UnicodeDecodeError):
        read_capped_text(path, 100)
