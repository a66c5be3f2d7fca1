"""A target's stored observation in two parts: what an unchanged fleet repeats run after run (addresses,
chains by sha256, verdicts, trust stores, errors), kept once by the digest of its JSON, and what differs in
every run (timings, clock estimates, the agents' times, request ids), packed for all of a run's targets
into one small blob.

The split is driven by the JSON of recording.observation_to_dict: a value under one of the keys below, of
that key's type, goes to the run's blob and leaves a placeholder of the same type in the shared part, so
that joining finds exactly the slots splitting emptied. Timings (milliseconds) are kept to the
microsecond, which no network timing resolves; times in nanoseconds and request ids are kept exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The kind of each key's value; any other key, or a value of another type, is shared.
_MS, _NS, _TEXT, _CLOCK = "ms", "ns", "text", "clock"
_KINDS = {
    "duration_ms": _MS,  # an outcome's fan-out time
    "clock_offset_ms": _MS,  # an agent's, in the run's agents part
    "clock_error_ms": _MS,
    "durationMs": _MS,  # resolution and handshake
    "connectMs": _MS,
    "referenceTimeNs": _NS,  # int64 as text, as protobuf's JSON writes it
    "agentReceivedNs": _NS,
    "agentRepliedNs": _NS,
    "requestId": _TEXT,
    "clock": _CLOCK,  # [offset_ms, error_ms]
}
_PLACEHOLDERS: dict[str, Any] = {_MS: 0, _NS: "0", _TEXT: "", _CLOCK: [0, 0]}
_PLAN_CODES = {_MS: "m", _NS: "n", _TEXT: "t", _CLOCK: "c"}
_INTEGER = re.compile(r"0|-?[1-9][0-9]{0,18}")  # as int() and str() give it back
# A finding's command to reproduce names the reference time, in seconds: `openssl verify -attime N`. Any such
# N (written without leading zeros) is volatile, and "-attime 0" its placeholder; an original "-attime 0" is
# a slot like any other, so joining finds exactly the slots splitting emptied.
_ATTIME = re.compile(r"(-attime )(0|[1-9][0-9]{0,18})(?![0-9])")
# Milliseconds beyond this (about 285 years) keep their exact double rather than whole microseconds.
_MAX_MS = 2**53 / 1000


class PartsError(ValueError):
    """The run's blob does not fit the observations it belongs to."""


def _kind(key: str, value: Any) -> str | None:
    kind = _KINDS.get(key)
    if kind == _MS:
        return kind if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == _NS:
        return kind if isinstance(value, str) and _INTEGER.fullmatch(value) else None
    if kind == _TEXT:
        return kind if isinstance(value, str) else None
    if kind == _CLOCK:
        ok = isinstance(value, list) and len(value) == 2 and all(_kind("connectMs", v) for v in value)
        return kind if ok else None
    return None


# Both walks run over every run's documents: one list filled by plain recursion into containers only
# costs a fraction of nested generators over every value.


def _slots(node: Any) -> list[tuple[dict[str, Any], str, str]]:
    """(container, key, kind) of every volatile value, in document order."""
    found: list[tuple[dict[str, Any], str, str]] = []
    _add_slots(node, found)
    return found


def _add_slots(node: Any, found: list[tuple[dict[str, Any], str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            kind = _kind(key, value) if key in _KINDS else None
            if kind is not None:
                found.append((node, key, kind))
            elif isinstance(value, dict | list):
                _add_slots(value, found)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _add_slots(item, found)


def _strings(node: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every string, in document order."""
    found: list[tuple[Any, Any]] = []
    _add_strings(node, found)
    return found


def _add_strings(node: Any, found: list[tuple[Any, Any]]) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, str):
            found.append((node, key))
        elif isinstance(value, dict | list):
            _add_strings(value, found)


def canonical(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest_of(shared: bytes) -> str:
    return hashlib.sha256(shared).hexdigest()


class VolatileWriter:
    """Packs the volatile values of a run's targets, one target after another, into bytes."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._base = 0  # the first time of the latest document: the next document's times lie close to it
        self._texts: list[str] = []

    def duration(self, ms: float) -> None:
        self._ms(ms)

    def take(self, document: Any) -> str:
        """Take the document's volatile values, leaving placeholders in it; the kinds taken (SlotPlan's)."""
        self._texts = []
        base: int | None = None
        slots = _slots(document)
        for container, key, kind in slots:
            value = container[key]
            container[key] = _PLACEHOLDERS[kind]
            if kind == _MS:
                self._ms(value)
            elif kind == _CLOCK:
                self._ms(value[0])
                self._ms(value[1])
            elif kind == _NS:
                number = int(value)
                if base is None:
                    _varint(self._out, _zigzag(number - self._base))
                    base = self._base = number
                else:
                    _varint(self._out, _zigzag(number - base))
            else:
                self._text(value)
        return "".join(_PLAN_CODES[kind] for _container, _key, kind in slots)

    def take_times(self, node: Any) -> int:
        """Take the reference times that texts in `node` name (_ATTIME), leaving placeholders; after `take`
        of the document they belong with, whose first time they lie close to. Returns how many."""
        seconds = self._base // 10**9
        taken = 0

        def keep(match: re.Match[str]) -> str:
            nonlocal taken
            taken += 1
            _varint(self._out, _zigzag(int(match[2]) - seconds))
            return f"{match[1]}0"

        for container, key in _strings(node):
            container[key] = _ATTIME.sub(keep, container[key])
        return taken

    def finish(self) -> bytes:
        return zlib.compress(bytes(self._out), 9)

    def _ms(self, value: float) -> None:
        if math.isfinite(value) and abs(value) < _MAX_MS:
            _varint(self._out, _zigzag(round(value * 1000)) << 1)
        else:
            _varint(self._out, 1)
            self._out += struct.pack("<d", value)

    def _text(self, value: str) -> None:
        # Results repeat their request's id: a repeat costs one byte.
        if value in self._texts:
            _varint(self._out, self._texts.index(value) + 1)
            return
        self._texts.append(value)
        data = value.encode("utf-8")
        _varint(self._out, 0)
        _varint(self._out, len(data))
        self._out += data


class VolatileReader:
    """The inverse of VolatileWriter, target by target in the same order."""

    def __init__(self, blob: bytes) -> None:
        try:
            self._data = zlib.decompress(blob)
        except zlib.error as error:
            raise PartsError(f"the run's timings are damaged: {error}") from None
        self._at = 0
        self._base = 0
        self._texts: list[str] = []

    def duration(self) -> float:
        return self._ms()

    def fill(self, document: Any) -> None:
        """Fill the document's placeholders in place, with the values `take` took from it."""
        self._texts = []
        base: int | None = None
        for container, key, kind in _slots(document):
            if kind == _MS:
                container[key] = self._ms()
            elif kind == _CLOCK:
                container[key] = [self._ms(), self._ms()]
            elif kind == _NS:
                delta = _unzigzag(self.varint())
                if base is None:
                    base = self._base = self._base + delta
                    container[key] = str(base)
                else:
                    container[key] = str(base + delta)
            else:
                container[key] = self._text()

    def fill_times(self, node: Any) -> None:
        """The inverse of VolatileWriter.take_times."""
        seconds = self._base // 10**9

        def put(match: re.Match[str]) -> str:
            return f"{match[1]}{seconds + _unzigzag(self.varint())}"

        for container, key in _strings(node):
            container[key] = _ATTIME.sub(put, container[key])

    def skip(self, plan: SlotPlan) -> None:
        """Step over the values that `fill` and `fill_times` would put into a document of this plan."""
        self._texts = []
        first = True
        for code in plan.kinds:
            if code == "m":
                self._ms()
            elif code == "c":
                self._ms()
                self._ms()
            elif code == "n":
                delta = _unzigzag(self.varint())
                if first:  # as fill: the document's first time is the next document's base
                    self._base += delta
                    first = False
            else:
                self._text()
        for _ in range(plan.times):
            self.varint()

    def at_end(self) -> bool:
        return self._at == len(self._data)

    def finish(self) -> None:
        if self._at != len(self._data):
            raise PartsError(f"the run's timings hold {len(self._data) - self._at} bytes more than its targets use")

    def _ms(self) -> float:
        code = self.varint()
        if code & 1 == 0:
            return _unzigzag(code >> 1) / 1000
        value: float = struct.unpack_from("<d", self._take(8))[0]
        return value

    def _text(self) -> str:
        code = self.varint()
        if code:
            if code > len(self._texts):
                raise PartsError("the run's timings refer to a request id they never gave")
            return self._texts[code - 1]
        text = self._take(self.varint()).decode("utf-8")
        self._texts.append(text)
        return text

    def _take(self, n: int) -> bytes:
        if self._at + n > len(self._data):
            raise PartsError("the run's timings end early: they hold fewer values than its targets")
        piece = self._data[self._at : self._at + n]
        self._at += n
        return piece

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise PartsError("the run's timings hold a number too long to be one")


@dataclass(frozen=True)
class SlotPlan:
    """What a shared part's volatile values are, in order: one letter per slot (m: milliseconds, c: a clock,
    n: a time in nanoseconds, t: a text) and how many reference times its findings' texts name. Enough to
    step over a target's values in a run's timings without parsing its part."""

    kinds: str
    times: int


class SlotPlans:
    """Plans by shared part digest, at most `limit` of them, the oldest dropped first. Filled as a run is
    encoded, so that comparing the next run with the one before steps over the timings of the targets that
    came out the same instead of parsing their parts again (a run's parts are mostly the same as the last)."""

    def __init__(self, limit: int = 8192) -> None:
        self._limit = limit
        self._plans: dict[str, SlotPlan] = {}
        self._lock = threading.Lock()  # a store's threads save and read at once

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, digest: str) -> SlotPlan | None:
        return self._plans.get(digest)

    def put(self, digest: str, plan: SlotPlan) -> None:
        with self._lock:
            self._plans.pop(digest, None)
            self._plans[digest] = plan
            while len(self._plans) > self._limit:
                del self._plans[next(iter(self._plans))]


def pack_ids(ids: Iterable[int]) -> bytes:
    """Row ids in order, each as its difference from the one before: a run's parts were mostly made in order."""
    out = bytearray()
    before = 0
    for i in ids:
        _varint(out, _zigzag(i - before))
        before = i
    return zlib.compress(bytes(out), 9)


def unpack_ids(blob: bytes) -> list[int]:
    reader = VolatileReader(blob)
    ids: list[int] = []
    while not reader.at_end():
        ids.append((ids[-1] if ids else 0) + _unzigzag(reader.varint()))
    return ids


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(n: int) -> int:
    return n >> 1 if n % 2 == 0 else -((n + 1) >> 1)


def _varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
