"""The diagnosis engine's time on a recorded fleet of 100 agents.

Real handshakes first: the probe engine (in this process) probes two lab TLS servers behind one name,
with and without the private root in its trust store. Those results are then recorded for 100 vantages
(a tenth lacking the root, a few with skewed clocks, one silent), saved with `recording.save`, read back
with `recording.load`, and diagnosed repeatedly. Prints the median and p95 time of one diagnosis.

    .venv/bin/python bench/bench_diagnosis.py [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import Report, percentile, quick_argument_parser

from tlsfleet.agent.model import ProbeOptions, ProbeRequest, ProbeResult, Target
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.hosts_override import with_overrides
from tlsfleet.agent.probe.resolve import resolve
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageState
from tlsfleet.coordinator.recording import load, save

AGENTS = 100
TARGET_MS = 1000.0  # a fleet-wide diagnosis should never be what a person waits for


def probe_once(root_bundle: Path | None, port: int) -> ProbeResult:
    table = {"api.bench.test": ("127.0.0.1", "127.0.0.2")}
    env = {"SSL_CERT_FILE": str(root_bundle)} if root_bundle else {}
    engine = ProbeEngine(
        environ=env, native_cafile=str(root_bundle) if root_bundle else None, resolver=with_overrides(table, resolve)
    )
    request = ProbeRequest(Target("api.bench.test", port), ProbeOptions(reference_time_ns=time.time_ns()))
    return asyncio.run(engine.probe(request))


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


if __name__ == "__main__":
    main()
