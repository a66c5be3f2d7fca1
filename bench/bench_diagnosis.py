"""The diagnosis engine's time on a recorded fleet of 100 agents, and its time and memory on 5,000.

Real handshakes first: the probe engine (in this process) probes two lab TLS servers behind one name,
with and without the private root in its trust store. Those results are then recorded for 100 vantages
(a tenth lacking the root, a few with skewed clocks, one silent), saved with `recording.save`, read back
with `recording.load`, and diagnosed repeatedly. Prints the median and p95 time of one diagnosis.

Then 5,000 outcomes: two more lab servers behind the name serve another leaf from the same CA, and the
four real results (two leaves, with and without the root) are recorded for 5,000 vantages in 100 regions,
each region resolving the name to addresses of its own (the results' addresses renamed per region,
their chains and verdicts as probed): per-region certificates behind geo-DNS, a tenth lacking the root,
one in 25 with its clock two days off, one in 100 silent. A fresh process loads that recording and
diagnoses it once; it prints the diagnosis time and its peak RSS (VmHWM: interpreter, imports, the
loaded recording and the diagnosis together).

Then 5,000 distinct leaves: the two real results of one server pair (with and without the root) recorded
for 5,000 vantages that each were served a leaf of their own from the same CA (the served leaf and the
stores' verified paths carry that vantage's leaf; a tenth lacking the root, one in 100 silent), loaded and
diagnosed once in a fresh process, as above.

    .venv/bin/python bench/bench_diagnosis.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common import Report, percentile, quick_argument_parser

from tlsfleet.agent.model import AddressResult, ProbeOptions, ProbeRequest, ProbeResult, Target
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.hosts_override import with_overrides
from tlsfleet.agent.probe.resolve import resolve
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageState
from tlsfleet.coordinator.recording import load, save

AGENTS = 100
TARGET_MS = 1000.0  # a fleet-wide diagnosis should never be what a person waits for
LARGE_AGENTS = 5000
LARGE_REGIONS = 100
LARGE_TARGET_MS = 2000.0
LARGE_TARGET_MIB = 300.0
CHILD_TIMEOUT_S = 600.0

# Run in a fresh process: load the recording, diagnose it once, report time and peak RSS as JSON.
_CHILD = """
import json, sys, time
from pathlib import Path
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.observation import DiagnosisSettings
from tlsfleet.coordinator.recording import load
started = time.perf_counter()
observation = load(Path(sys.argv[1]))
loaded = time.perf_counter()
findings = diagnose(observation, DiagnosisSettings.for_request(observation.request))
done = time.perf_counter()
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
print(json.dumps({
    "load_ms": (loaded - started) * 1000,
    "diagnose_ms": (done - loaded) * 1000,
    "peak_kib": int(status["VmHWM"].split()[0]),
    "rows": len(observation.rows),
    "findings": [f"{f.severity} {f.cause} ({len(f.agents)} agents)" for f in findings],
}))
"""


def probe_once(root_bundle: Path | None, port: int) -> ProbeResult:
    return probe_on({"api.bench.test": ("127.0.0.1", "127.0.0.2")}, root_bundle, port)


def recorded_fleet(workdir: Path) -> Path:
    pki = LabPKI("Bench")
    leaf = pki.issue_leaf("api.bench.test")
    identity = ServedIdentity.of(leaf, pki.intermediate)
    root = write_pem(workdir / "root.pem", pki.root_pem())
    with TlsServer(identity, host="127.0.0.1") as first, TlsServer(identity, host="127.0.0.2", port=first.port):
        trusting = probe_once(root, first.port)
        lacking = probe_once(None, first.port)
    request = ProbeRequest(Target("api.bench.test", first.port), ProbeOptions(reference_time_ns=time.time_ns()))
    outcomes = []
    for n in range(AGENTS):
        name = f"agent-{n:03d}"
        info = VantageInfo(name=name, address=f"10.0.{n // 250}.{n % 250}:7443", labels=(("env", "prod"),))
        if n == AGENTS - 1:
            outcomes.append(ProbeOutcome(info, VantageState.TIMEOUT, error="no answer within 10 s"))
            continue
        result = lacking if n % 10 == 3 else trusting
        offset = 172_800_000.0 if n % 25 == 7 else float(n % 7)
        outcomes.append(
            ProbeOutcome(
                info,
                VantageState.OK,
                result=replace(result),
                agent_version="0.1.0",
                clock=ClockEstimate(offset, 2.0),
                duration_ms=12.0,
            )
        )
    path = workdir / "fleet-100.json"
    save(path, Observation(request=request, outcomes=tuple(outcomes)))
    return path


def _regional(result: ProbeResult, region: int) -> ProbeResult:
    """The same handshakes, as a host in `region` sees them: that region's own addresses behind the name."""
    renamed = {a.address: f"10.{region // 250}.{region % 250}.{i + 1}" for i, a in enumerate(result.addresses)}
    return replace(
        result,
        resolution=replace(result.resolution, addresses=tuple(renamed[a] for a in result.resolution.addresses)),
        addresses=tuple(replace(a, address=renamed[a.address]) for a in result.addresses),
    )


def recorded_large_fleet(workdir: Path) -> Path:
    """5,000 vantages in 100 regions (see the module's docstring), saved as a recording."""
    pki = LabPKI("Bench")
    root = write_pem(workdir / "root.pem", pki.root_pem())
    identities = [ServedIdentity.of(pki.issue_leaf("api.bench.test"), pki.intermediate) for _ in range(2)]
    results: list[tuple[ProbeResult, ProbeResult]] = []
    for first_host, identity in zip(("127.0.0.1", "127.0.0.3"), identities, strict=True):
        second_host = first_host[:-1] + str(int(first_host[-1]) + 1)
        with TlsServer(identity, host=first_host) as first, TlsServer(identity, host=second_host, port=first.port):
            table = {"api.bench.test": (first_host, second_host)}
            results.append((probe_on(table, root, first.port), probe_on(table, None, first.port)))
    request = ProbeRequest(Target("api.bench.test", 443), ProbeOptions(reference_time_ns=time.time_ns()))
    regional = {
        (region, lacking): _regional(results[region % 2][lacking], region)
        for region in range(LARGE_REGIONS)
        for lacking in (0, 1)
    }
    outcomes = []
    for n in range(LARGE_AGENTS):
        info = VantageInfo(name=f"agent-{n:04d}", address=f"10.9.{n // 250}.{n % 250}:7443", labels=(("env", "prod"),))
        if n % 100 == 99:
            outcomes.append(ProbeOutcome(info, VantageState.TIMEOUT, error="no answer within 10 s"))
            continue
        offset = 172_800_000.0 if n % 25 == 7 else float(n % 7)
        outcomes.append(
            ProbeOutcome(
                info,
                VantageState.OK,
                result=regional[(n % LARGE_REGIONS, int(n % 10 == 3))],
                agent_version="0.1.0",
                clock=ClockEstimate(offset, 2.0),
                duration_ms=12.0,
            )
        )
    path = workdir / f"fleet-{LARGE_AGENTS}.json"
    save(path, Observation(request=request, outcomes=tuple(outcomes)))
    return path


def _own_leaf(result: ProbeResult, leaf: bytes) -> ProbeResult:
    """The same handshakes, with `leaf` served in place of the probed leaf (and verified in its place)."""
    fp = fingerprint(leaf)

    def swapped(address: AddressResult) -> AddressResult:
        stores = tuple(
            replace(s, verified_path=(fp, *s.verified_path[1:])) if s.verified_path else s for s in address.stores
        )
        return replace(address, chain=(leaf, *address.chain[1:]), stores=stores)

    return replace(result, addresses=tuple(swapped(a) for a in result.addresses))


def recorded_distinct_leaves(workdir: Path) -> Path:
    """5,000 vantages, each served a leaf of its own from one CA (see the module's docstring)."""
    pki = LabPKI("Bench")
    root = write_pem(workdir / "root.pem", pki.root_pem())
    identity = ServedIdentity.of(pki.issue_leaf("api.bench.test"), pki.intermediate)
    with TlsServer(identity, host="127.0.0.1") as first, TlsServer(identity, host="127.0.0.2", port=first.port):
        table = {"api.bench.test": ("127.0.0.1", "127.0.0.2")}
        probed = (probe_on(table, root, first.port), probe_on(table, None, first.port))
    request = ProbeRequest(Target("api.bench.test", first.port), ProbeOptions(reference_time_ns=time.time_ns()))
    outcomes = []
    for n in range(LARGE_AGENTS):
        info = VantageInfo(name=f"agent-{n:04d}", address=f"10.9.{n // 250}.{n % 250}:7443", labels=(("env", "prod"),))
        if n % 100 == 99:
            outcomes.append(ProbeOutcome(info, VantageState.TIMEOUT, error="no answer within 10 s"))
            continue
        leaf = pki.issue_leaf("api.bench.test").der
        outcomes.append(
            ProbeOutcome(
                info,
                VantageState.OK,
                result=_own_leaf(probed[int(n % 10 == 3)], leaf),
                agent_version="0.1.0",
                clock=ClockEstimate(float(n % 7), 2.0),
                duration_ms=12.0,
            )
        )
    path = workdir / f"fleet-{LARGE_AGENTS}-leaves.json"
    save(path, Observation(request=request, outcomes=tuple(outcomes)))
    return path


def probe_on(table: dict[str, tuple[str, ...]], root_bundle: Path | None, port: int) -> ProbeResult:
    env = {"SSL_CERT_FILE": str(root_bundle)} if root_bundle else {}
    engine = ProbeEngine(
        environ=env, native_cafile=str(root_bundle) if root_bundle else None, resolver=with_overrides(table, resolve)
    )
    request = ProbeRequest(Target("api.bench.test", port), ProbeOptions(reference_time_ns=time.time_ns()))
    return asyncio.run(engine.probe(request))


def diagnose_in_child(path: Path) -> dict[str, object]:
    """Load and diagnose the recording in a fresh interpreter; its figures as the child printed them."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the diagnosis process failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    figures: dict[str, object] = json.loads(done.stdout)
    return figures


def main() -> None:
    args = quick_argument_parser(__doc__.splitlines()[0]).parse_args()
    report = Report()
    runs = 5 if args.quick else 30
    with tempfile.TemporaryDirectory(prefix="tlsfleet-bench-diagnosis-") as directory:
        path = recorded_fleet(Path(directory))
        report.figure("diagnosis_recording_bytes", path.stat().st_size, "bytes")
        started = time.perf_counter()
        observation = load(path)
        report.figure("diagnosis_recording_load_ms", (time.perf_counter() - started) * 1000, "ms")
    settings = DiagnosisSettings.for_request(observation.request)
    times = []
    findings = ()
    for _ in range(runs):
        started = time.perf_counter()
        findings = diagnose(observation, settings)
        times.append((time.perf_counter() - started) * 1000)
    report.say(
        f"{len(observation.outcomes)} vantages, {len(observation.rows)} rows; findings: "
        + ", ".join(f"{f.severity} {f.cause} ({len(f.agents)} agents)" for f in findings)
    )
    report.figure("diagnosis_100_agents_first_ms", times[0], "ms")
    report.figure("diagnosis_100_agents_p50_ms", statistics.median(times), "ms")
    report.figure("diagnosis_100_agents_p95_ms", percentile(times, 95), "ms")
    report.target("diagnosis_100_agents_p50_ms", statistics.median(times), "<=", TARGET_MS, "ms")

    large = f"diagnosis_{LARGE_AGENTS}"
    large_figures(report, recorded_large_fleet, large, f"{large}_outcomes", "4 results")
    leaves = f"{large}_distinct_leaves"
    large_figures(report, recorded_distinct_leaves, leaves, leaves, "a leaf each")


def large_figures(report: Report, record: Callable[[Path], Path], recording: str, prefix: str, what: str) -> None:
    """Record a large fleet with `record`, diagnose it in a fresh process, and report its figures (the
    recording's under `recording`, the diagnosis's under `prefix`)."""
    with tempfile.TemporaryDirectory(prefix="tlsfleet-bench-diagnosis-") as directory:
        path = record(Path(directory))
        report.figure(f"{recording}_recording_bytes", path.stat().st_size, "bytes")
        large = diagnose_in_child(path)
    findings_seen = large["findings"]
    assert isinstance(findings_seen, list)
    seen = ", ".join(str(f) for f in findings_seen)
    report.say(f"{LARGE_AGENTS} vantages ({what}), {large['rows']} rows; {len(findings_seen)} findings: {seen}")
    diagnose_ms, peak_kib, load_ms = large["diagnose_ms"], large["peak_kib"], large["load_ms"]
    assert isinstance(diagnose_ms, float) and isinstance(peak_kib, int) and isinstance(load_ms, float)
    report.figure(f"{recording}_recording_load_ms", load_ms, "ms")
    report.figure(f"{prefix}_ms", diagnose_ms, "ms")
    report.figure(f"{prefix}_peak_rss_mib", peak_kib / 1024, "MiB")
    report.target(f"{prefix}_ms", diagnose_ms, "<=", LARGE_TARGET_MS, "ms")
    report.target(f"{prefix}_peak_rss_mib", peak_kib / 1024, "<=", LARGE_TARGET_MIB, "MiB")


if __name__ == "__main__":
    main()
