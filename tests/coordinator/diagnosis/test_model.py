"""The closed set of causes: each has a title beside it, and a cause added without one cannot crash a run."""

from __future__ import annotations

from enum import StrEnum

from tlsfleet.coordinator.diagnosis import model
from tlsfleet.coordinator.diagnosis.model import CAUSE_TITLES, Cause, cause_title


def test_every_cause_has_a_title() -> None:
    missing = sorted(c.value for c in Cause if not CAUSE_TITLES.get(c))
    assert missing == [], f"add a title to CAUSE_TITLES for {missing}"


def test_a_cause_without_a_title_still_reads_as_words(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class Later(StrEnum):
        NEW_KIND_OF_FAULT = "new_kind_of_fault"

    monkeypatch.setattr(model, "CAUSE_TITLES", {})
    assert cause_title(Later.NEW_KIND_OF_FAULT) == "New kind of fault"  # type: ignore[arg-type]
    assert cause_title(Cause.EXPIRED) == "Expired"
