"""The split of a stored observation into what runs share and what each run keeps (observation_parts): every
volatile value comes back into the slot it left, timings to the microsecond, times and ids exactly, and a
value that only looks volatile stays in the shared part."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tlsfleet.coordinator.service.history.observation_parts import (
    PartsError,
    SlotPlan,
    SlotPlans,
    VolatileReader,
    VolatileWriter,
    canonical,
    pack_ids,
    unpack_ids,
)

DOCUMENTS: list[dict[str, Any]] = [
    {
        "request": {"options": {"referenceTimeNs": "1700000000000000001"}, "requestId": "9f3a"},
        "outcomes": [
            {"duration_ms": 12.5, "clock": [-250.0, 0.5], "result": {"requestId": "9f3a", "agentReceivedNs": "-5"}},
            {"duration_ms": 1e20, "clock": None, "result": {"resolution": {"durationMs": 0.25}, "connectMs": 0.0}},
        ],
        "findings": [["clock_skew", "openssl verify -attime 1700000000 -CAfile s.pem", "-attime 0 and -attime 0123"]],
    },
    {
        # Under a volatile key but not of its kind, or not written as int() writes it: shared as it is.
        "request": {"options": {"referenceTimeNs": "007"}, "requestId": 5},
        "outcomes": [{"durationMs": "fast", "clock": [1, 2, 3], "agentRepliedNs": "1700000000500000000"}],
        "findings": [],
    },
]


def _split(documents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bytes]:
    writer = VolatileWriter()
    shared = []
    for document in copy.deepcopy(documents):
        writer.duration(812.25)
        writer.take(document)
        writer.take_times(document["findings"])
        shared.append(json.loads(canonical(document)))
    return shared, writer.finish()


def test_every_volatile_value_comes_back_into_its_slot() -> None:
    shared, blob = _split(DOCUMENTS)
    reader = VolatileReader(blob)
    for document, original in zip(shared, DOCUMENTS, strict=True):
        assert reader.duration() == 812.25
        reader.fill(document)
        reader.fill_times(document["findings"])
        assert document == original
    reader.finish()


def test_the_shared_part_of_another_run_is_the_same() -> None:
    later = copy.deepcopy(DOCUMENTS)
    later[0]["request"]["options"]["referenceTimeNs"] = "1700000900000000001"
    later[0]["outcomes"][0].update(duration_ms=13.75, clock=[-251.0, 0.75])
    later[0]["findings"][0][1] = "openssl verify -attime 1700000900 -CAfile s.pem"
    assert _split(later)[0] == _split(DOCUMENTS)[0]
    assert _split(later)[1] != _split(DOCUMENTS)[1]


def test_timings_are_kept_to_the_microsecond() -> None:
    document = {"outcomes": [{"duration_ms": 1.2345678}], "findings": []}
    shared, blob = _split([document])
    reader = VolatileReader(blob)
    reader.duration()
    reader.fill(shared[0])
    assert shared[0]["outcomes"][0]["duration_ms"] == 1.235


def test_timings_that_do_not_fit_the_documents_are_refused() -> None:
    shared, blob = _split(DOCUMENTS)
    reader = VolatileReader(blob)
    reader.duration()
    reader.fill(shared[0])
    with pytest.raises(PartsError, match=r"hold \d+ bytes more than its targets use"):
        reader.finish()
    with pytest.raises(PartsError, match="end early"):
        reader = VolatileReader(_split(DOCUMENTS[:1])[1])
        for document in copy.deepcopy(shared):
            reader.duration()
            reader.fill(document)
            reader.fill_times(document["findings"])
    with pytest.raises(PartsError, match="damaged"):
        VolatileReader(b"not zlib")


def test_a_plan_steps_over_exactly_what_filling_reads() -> None:
    writer = VolatileWriter()
    shared, plans = [], []
    for document in copy.deepcopy(DOCUMENTS):
        writer.duration(812.25)
        plans.append(SlotPlan(writer.take(document), writer.take_times(document["findings"])))
        shared.append(json.loads(canonical(document)))
    assert plans[0] == SlotPlan("ntmctnmmm", 2) and plans[1] == SlotPlan("n", 0)
    reader = VolatileReader(writer.finish())
    reader.duration()
    reader.skip(plans[0])  # its first time is the next document's base: stepping over keeps it
    assert reader.duration() == 812.25
    reader.fill(shared[1])
    reader.fill_times(shared[1]["findings"])
    assert shared[1] == DOCUMENTS[1]
    reader.finish()
    with pytest.raises(PartsError, match="end early"):
        reader.skip(plans[0])


def test_slot_plans_keep_the_latest_within_their_bound() -> None:
    plans = SlotPlans(limit=2)
    for digest in ("a", "b", "a", "c"):
        plans.put(digest, SlotPlan(digest, 0))
    assert len(plans) == 2 and plans.get("b") is None
    assert plans.get("a") == SlotPlan("a", 0) and plans.get("c") == SlotPlan("c", 0)


def test_part_ids_come_back_in_order() -> None:
    ids = [5, 6, 7, 3, 10**12, 10**12 + 1]
    assert unpack_ids(pack_ids(ids)) == ids
    assert unpack_ids(pack_ids([])) == []
