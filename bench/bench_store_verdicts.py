"""Offline store verdicts through OpenSSL (X509_verify_cert over ctypes): judgements per second and memory.

A 3-certificate chain (leaf, intermediate, root, all served) judged against 5 stores of 140 roots each
(the chain's root in two of them), at the agent's time and a reference time, as one probe does:

- fully cold: every cache dropped before each probe (the 5 X509_STOREs are made again, each reading the
  roots the chain reaches);
- judgement-cold: the stores are built, the verdicts, the judgements and the chain as libcrypto read it are
  dropped before each probe (a new chain);
- warm: the same probe again (what repeated probes of an unchanged endpoint cost);
- identical stores: 5 stores with one root set, judged once.

Then 20,000 uncached X509_verify_cert runs, with the resident set size before, in between and after:
a leak of one X509 per run would show as megabytes.

    .venv/bin/python bench/bench_store_verdicts.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import Report, memory_kib, quick_argument_parser

from tlsfleet.agent.model import StoreVerdict
from tlsfleet.agent.trust import libcrypto, verify
from tlsfleet.agent.trust.stores import LoadedStore
from tlsfleet.agent.trust.verify import clear_caches, judge_against_stores, verify_chain

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.agent.trust.chains import Cert, issue, loaded_store

STORES = 5
ROOTS_PER_STORE = 140
LEAK_RUNS = 20_000


def rate(fn: Callable[[], object], seconds: float, floor: int = 5) -> tuple[float, int]:
    """Calls per second of `fn` over about `seconds` (at least `floor` calls)."""
    n = 0
    start = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if n >= floor and elapsed >= seconds:
            return n / elapsed, n


def main() -> None:
    args = quick_argument_parser(__doc__ or "").parse_args()
    report = Report()
    seconds = 0.5 if args.quick else 2.0
    report.say(f"OpenSSL: {libcrypto.library_version()}, security level {libcrypto.security_level()}")

    root = issue("Bench Root", ca=True)
    inter = issue("Bench Intermediate", root, ca=True)
    leaf = issue("svc.bench.test", inter)
    chain = (leaf.der, inter.der, root.der)
    fillers = [issue(f"Bench Filler Root {i}", ca=True) for i in range(STORES * ROOTS_PER_STORE)]
    stores = []
    for s in range(STORES):
        roots: list[Cert] = fillers[s * ROOTS_PER_STORE : (s + 1) * ROOTS_PER_STORE]
        if s in (0, 3):
            roots = [*roots[:-1], root]
        stores.append(loaded_store(roots, name=f"store{s}"))
    same = [loaded_store([*fillers[: ROOTS_PER_STORE - 1], root], name=f"same{s}") for s in range(STORES)]
    now = datetime.now(UTC)
    ref = now + timedelta(days=3)

    def probe(which: list[LoadedStore] = stores) -> tuple[StoreVerdict, ...]:
        return judge_against_stores(chain, which, "svc.bench.test", now, ref)

    verdicts = probe()
    report.say("verdicts: " + ", ".join(f"{v.store}={v.at_agent_time.value}({v.verify_code})" for v in verdicts))

    def cold() -> None:
        clear_caches()
        probe()

    def judgement_cold() -> None:
        verify._verdicts_cache.clear()
        verify._judgement_cache.clear()
        verify._read_chains.clear()
        verify._chain_cache.clear()
        probe()

    def identical() -> None:
        verify._verdicts_cache.clear()
        verify._judgement_cache.clear()
        verify._read_chains.clear()
        verify._chain_cache.clear()
        probe(same)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("cold", cold),
        ("judgement_cold", judgement_cold),
        ("warm", probe),
        ("identical_cold", identical),
    ]
    for name, fn in cases:
        clear_caches()
        probe(same if name == "identical_cold" else stores)
        per_s, n = rate(fn, seconds)
        report.figure(f"store_verdicts_{name}_probes_per_s", per_s, "probes/s")
        report.figure(f"store_verdicts_{name}_judgements_per_s", per_s * STORES * 2, "judgements/s")
        report.say(f"{name}: {n} probes of {STORES} stores x 2 times")

    # Memory: uncached X509_verify_cert runs, and uncached verify_chain runs with their strict check.
    x509_store = libcrypto.X509Store([c.der for c in [*fillers[:139], root]])
    at = int(now.timestamp())
    runs = LEAK_RUNS // 10 if args.quick else LEAK_RUNS
    for _ in range(500):
        libcrypto.verify(x509_store, leaf.der, [inter.der], at=at, host="svc.bench.test")
    pid = os.getpid()
    before = memory_kib(pid)["VmRSS"]
    middle = before
    start = time.perf_counter()
    for i in range(runs):
        libcrypto.verify(x509_store, leaf.der, [inter.der], at=at + i, host="svc.bench.test")
        if i == runs // 2:
            middle = memory_kib(pid)["VmRSS"]
    elapsed = time.perf_counter() - start
    after = memory_kib(pid)["VmRSS"]
    report.figure("x509_verify_cert_per_s", runs / elapsed, "verifications/s")
    report.figure("x509_verify_cert_rss_before", before, "KiB")
    report.figure("x509_verify_cert_rss_half", middle, "KiB")
    report.figure("x509_verify_cert_rss_after", after, "KiB")
    report.target("x509_verify_cert_rss_growth", after - before, "<=", 1024, "KiB")

    judged = loaded_store([*fillers[:139], root], name="leak")
    verify_chain(chain, judged, "svc.bench.test", now)
    before = memory_kib(pid)["VmRSS"]
    for i in range(runs):
        verify._judgement_cache.clear()
        verify_chain(chain, judged, "svc.bench.test", now + timedelta(seconds=i))
    after = memory_kib(pid)["VmRSS"]
    report.figure("verify_chain_uncached_rss_before", before, "KiB")
    report.figure("verify_chain_uncached_rss_after", after, "KiB")
    report.target("verify_chain_uncached_rss_growth", after - before, "<=", 2048, "KiB")


if __name__ == "__main__":
    main()
