"""The HTML report as a browser renders it: headless Chromium, offline, no JavaScript needed."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.browser import HEIGHT, WIDTH, chromium, needs_chromium
from tests.coordinator.service.reports.test_reports import CHAIN_CHANGE, CRITICAL_SUMMARY, HOSTILE_CN, sample_run
from tlsfleet.coordinator.service.reports import write_reports

ACCENT = (0x24, 0x3B, 0x6B)  # the page header's background
CRITICAL = (0xB7, 0x1C, 0x1C)  # the critical badge
pytestmark = [needs_chromium, pytest.mark.browser]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, changes = sample_run()
    directory = tmp_path_factory.mktemp("reports")
    (path,) = write_reports(run, changes, directory, ["html"])
    return path


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: Sequence[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def test_rendered_dom_shows_targets_findings_and_changes(report: Path) -> None:
    dom = chromium(report, "--dump-dom").decode("utf-8")
    parser = _Text()
    parser.feed(dom)
    text = " ".join(" ".join(parser.parts).split())
    assert "api.example.test:443" in text and "login.example.test:443" in text
    assert CRITICAL_SUMMARY in text
    assert CHAIN_CHANGE in text
    assert HOSTILE_CN in text  # the hostile subject is text on the page...
    assert "script" not in parser.tags  # ...and never became an element
    assert parser.tags.count("table") >= 6 and "details" in parser.tags


def test_screenshot_is_a_rendered_page(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(report, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert len(data) > 20_000, f"{len(data)} bytes: too small for a rendered report"
    width, height, pixels = _decode_png(data)
    assert (width, height) == (WIDTH, HEIGHT)
    colours = {pixel for row in pixels[::5] for pixel in row[::5]}
    assert len(colours) > 50, f"only {len(colours)} colours: a blank or unstyled page"
    assert pixels[5][5] == ACCENT, "the header is not drawn with the page's own CSS"
    assert any(CRITICAL in row for row in pixels[:150]), "no critical badge in the header"


def _decode_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat = 8, []
    width = height = colour_type = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour_type in (2, 6), (depth, colour_type, interlace)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    assert len(raw) == height * (stride + 1), "truncated image data"
    previous = bytes(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous, bpp)
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, bpp)])
        previous = line
    return width, height, rows  # type: ignore[return-value]


def _unfilter(kind: int, line: bytes, previous: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:
        # Bytewise addition mod 256 of two whole rows at once, on big integers.
        n = len(line)
        a, b = int.from_bytes(line, "big"), int.from_bytes(previous, "big")
        low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
        return (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(n, "big")
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + left) & 255
        elif kind == 3:
            out[i] = (out[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            out[i] = (out[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        else:
            raise AssertionError(f"unknown PNG filter {kind}")
    return bytes(out)
