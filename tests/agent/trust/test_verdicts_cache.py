"""A probe's whole set of store verdicts is kept between probes: the same chain, stores, name and hour
give the very same verdicts without judging again, and nothing that names a probe's own seconds is kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust.verify import clear_caches, judge_against_stores

from .chains import NOW, count_verifications, issue, loaded_store

ROOT = issue("Cache Root", ca=True)
INTERMEDIATE = issue("Cache Intermediate", ROOT, ca=True)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts X509_verify_cert runs, from cold caches."""
    clear_caches()
    yield count_verifications(monkeypatch)
    clear_caches()


def test_the_same_probe_again_is_answered_from_the_cache(calls: list[int]) -> None:
    leaf = issue("svc.test", INTERMEDIATE)
    chain = (leaf.der, INTERMEDIATE.der)
    stores = (loaded_store((ROOT,), "a"), loaded_store((ROOT,), "b"), loaded_store((), "empty"))
    first = judge_against_stores(chain, stores, "svc.test", NOW, NOW + timedelta(seconds=5))
    judged = len(calls)
    again = judge_against_stores(chain, stores, "svc.test", NOW + timedelta(seconds=1), NOW + timedelta(seconds=7))
    assert again is first
    assert len(calls) == judged, "no store was judged again"
    assert [v.store for v in first] == ["a", "empty"] and first[0].same_as == ("b",)
    other_name = judge_against_stores(chain, stores, "other.test", NOW, NOW)
    assert other_name[0].at_agent_time is Verdict.HOSTNAME_MISMATCH


def test_verdicts_that_differ_between_the_two_times_name_each_probes_seconds(calls: list[int]) -> None:
    """Expired at the agent's (fast) clock, valid at the reference time: the detail names both seconds."""
    leaf = issue("svc.test", INTERMEDIATE, not_before=NOW - timedelta(days=2), not_after=NOW + timedelta(hours=2))
    chain = (leaf.der, INTERMEDIATE.der)
    stores = (loaded_store((ROOT,), "system"),)
    agent_time = NOW + timedelta(days=1)
    first = judge_against_stores(chain, stores, "svc.test", agent_time, NOW)
    later = judge_against_stores(chain, stores, "svc.test", agent_time + timedelta(seconds=3), NOW)
    assert first[0].at_agent_time is Verdict.EXPIRED and first[0].at_reference_time is Verdict.OK
    assert agent_time.isoformat() in first[0].detail
    assert (agent_time + timedelta(seconds=3)).isoformat() in later[0].detail
