"""Judgements kept across CLI processes (kept_judgements): the next process asks OpenSSL nothing for the same
chain, store, name, rules and hour, and judges again whenever any of those or the judging code differs.

Each "next process" is simulated by saving the cache and dropping everything this process holds in memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from tlsfleet.agent import model
from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import kept_judgements, libcrypto, store_cache, verify
from tlsfleet.agent.trust.stores import forget_cached_reads
from tlsfleet.agent.trust.verify import clear_caches, judge_against_stores

from .chains import NOW, count_verifications, issue, loaded_store

ROOT = issue("Kept Root", ca=True, not_before=NOW - timedelta(days=400), not_after=NOW + timedelta(days=400))
INTERMEDIATE = issue(
    "Kept Intermediate", ROOT, ca=True, not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=300)
)
_STAT_FIELDS = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize")
# Judged at the middle of an hour with no validity edge in it: a judgement that holds for the whole hour.
AT = NOW.replace(minute=30, second=0)


def leaf(cn: str = "svc.test", **validity: object) -> bytes:
    dates = {"not_before": NOW - timedelta(days=10), "not_after": NOW + timedelta(days=10)} | validity
    return issue(cn, INTERMEDIATE, **dates).der  # type: ignore[arg-type]


@pytest.fixture
def verifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The cache enabled under tmp_path, from cold caches; counts X509_verify_cert runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(store_cache, "_enabled", False)  # restored so when the test ends
    next_process()
    store_cache.enable()
    yield count_verifications(monkeypatch)
    store_cache._enabled = False
    next_process()


def next_process() -> None:
    store_cache.save()
    clear_caches()
    forget_cached_reads()


def test_the_next_process_takes_the_judgement_of_the_same_chain_store_name_and_span(
    verifications: list[int], tmp_path: Path
) -> None:
    chain = (leaf(), INTERMEDIATE.der)
    stores = (loaded_store((ROOT,), "system"), loaded_store((), "empty"))
    first = judge_against_stores(chain, stores, "svc.test", AT, AT)
    assert first[0].at_agent_time is Verdict.OK
    judged = len(verifications)
    next_process()
    assert list((tmp_path / "xdg" / "tlsfleet").glob("judgements.*"))
    again = judge_against_stores(chain, stores, "svc.test", AT + timedelta(minutes=5), AT + timedelta(minutes=5))
    assert again == first
    assert len(verifications) == judged, "OpenSSL was not asked again"
    # Hours later, with no validity edge between: the same span, still kept.
    next_process()
    judge_against_stores(chain, stores, "svc.test", AT + timedelta(hours=7), AT + timedelta(hours=7))
    assert len(verifications) == judged
    # Another name, another store content: judged afresh.
    assert judge_against_stores(chain, stores, "other.test", AT, AT)[0].at_agent_time is Verdict.HOSTNAME_MISMATCH
    other_root = issue("Other Root", ca=True)
    refused = judge_against_stores(chain, (loaded_store((other_root,), "system"),), "svc.test", AT, AT)
    assert refused[0].at_agent_time is not Verdict.OK
    assert len(verifications) == judged + 2 + 1  # both stores for the other name, then the other root's


def test_a_refusal_is_kept_as_it_was_made(verifications: list[int]) -> None:
    chain = (leaf(not_after=NOW - timedelta(days=1)), INTERMEDIATE.der)  # expired
    stores = (loaded_store((ROOT,), "system"),)
    first = judge_against_stores(chain, stores, "svc.test", AT, AT)
    next_process()
    again = judge_against_stores(chain, stores, "svc.test", AT, AT)
    assert again == first and again[0].at_agent_time is Verdict.EXPIRED and again[0].verify_code == 10
    assert len(verifications) == 1


def test_a_kept_judgement_ends_at_the_next_validity_edge(verifications: list[int]) -> None:
    """The span ends where a certificate expires: the next process, past that second, judges again."""
    ends = AT + timedelta(minutes=10)
    chain = (leaf(not_after=ends), INTERMEDIATE.der)
    stores = (loaded_store((ROOT,), "system"),)
    assert judge_against_stores(chain, stores, "svc.test", AT, AT)[0].at_agent_time is Verdict.OK
    next_process()
    later = ends - timedelta(seconds=1)
    assert judge_against_stores(chain, stores, "svc.test", later, later)[0].at_agent_time is Verdict.OK
    assert len(verifications) == 1
    next_process()
    assert judge_against_stores(chain, stores, "svc.test", ends, ends)[0].at_agent_time is Verdict.EXPIRED
    assert len(verifications) == 2


def test_other_judging_code_or_libraries_judge_again(verifications: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    chain = (leaf(), INTERMEDIATE.der)
    stores = (loaded_store((ROOT,), "system"),)
    judge_against_stores(chain, stores, "svc.test", AT, AT)
    next_process()
    monkeypatch.setattr(kept_judgements, "_stamp", "another build of the judging code")
    judge_against_stores(chain, stores, "svc.test", AT, AT)
    assert len(verifications) == 2


def test_a_kept_entry_of_the_wrong_shape_is_judged_again(verifications: list[int]) -> None:
    chain = (leaf(), INTERMEDIATE.der)
    stores = (loaded_store((ROOT,), "system"),)
    judge_against_stores(chain, stores, "svc.test", AT, AT)
    stamp = kept_judgements._stamp_now()
    assert stamp is not None
    for key in list(store_cache._judgements.entries or {}):
        if not key.startswith("edges "):
            store_cache.store_judgement(key, stamp, ("ok", "not a path", "", 0, ""))
    next_process()
    assert judge_against_stores(chain, stores, "svc.test", AT, AT)[0].at_agent_time is Verdict.OK
    assert len(verifications) == 2


@pytest.mark.parametrize("module", [verify, libcrypto, kept_judgements, model])
def test_the_stamp_moves_with_every_module_that_judges(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept_judgements, "_stamp", None)
    before = kept_judgements._stamp_now()
    assert before is not None and len(before) == 32
    changed = os.path.realpath(str(module.__file__))
    real_stat = os.stat

    def edited(path: str) -> os.stat_result:
        st = real_stat(path)
        if os.path.realpath(path) != changed:
            return st
        later = {"st_mtime": st.st_mtime + 1, "st_mtime_ns": st.st_mtime_ns + 10**9}  # as an edit leaves it
        return os.stat_result(tuple(st), {name: getattr(st, name) for name in _STAT_FIELDS} | later)

    monkeypatch.setattr(kept_judgements.os, "stat", edited)
    monkeypatch.setattr(kept_judgements, "_stamp", None)
    assert kept_judgements._stamp_now() not in (None, before)


def test_a_process_that_does_not_enable_the_cache_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    next_process()
    judge_against_stores((leaf(), INTERMEDIATE.der), (loaded_store((ROOT,), "system"),), "svc.test", AT, AT)
    next_process()
    assert not (tmp_path / "xdg").exists()


@pytest.mark.e2e  # interpreters of their own
def test_the_key_of_a_judgement_is_the_same_in_every_process() -> None:
    """Java's rules hold sets, whose order follows each process's string hashing: the key sorts them."""
    code = (
        "from tlsfleet.agent.trust import kept_judgements, runtimes\n"
        "rules = runtimes.VerifyRules(runtime='java', java=runtimes.JavaRules(certpath=(runtimes.JavaConstraint("
        "'SHA1', usage=frozenset({'TLSServer', 'SignedJAR', 'x', 'y', 'z'})),), tls=(), source='test'))\n"
        "print(kept_judgements.key_text(('chain', 'store', 'svc.test', 3600, False, rules)))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(keys) == 1 and len(keys.pop().strip()) == 64
