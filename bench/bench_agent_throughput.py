"""One agent's probes per second with 200 probes in flight, over the real gRPC wire path, beside raw
handshakes against the same target in the same run.

The client is this process: a `GrpcVantage` (the coordinator's own gRPC client, one channel) keeps
200 probes in flight until a fixed count has completed, first as the messages of `ProbeStream` calls (as
report runs send them), then as a unary `Probe` call each (as `tlsfleet probe` does). The agent and the
lab TLS server each run as their own process. All three share this machine's cores, so the CPU time
each used is reported too.
The yardstick is a raw asyncio loop in a process of its own: CERT_REQUIRED handshakes with the chain
captured, 200 in flight, against the same server, run just before and just after the agent (the faster
counts); the ratio of the two rates is the agent's overhead.
Beside both, the floor: the same handshakes behind a bare grpc.aio server (`grpc_floor.py`, bytes
in and out, nothing else), driven from here with 200 in flight, first a unary call each (as `Probe` is) and
then as the messages of one stream. What the floor reaches against the raw loop is the most that any agent
answering over gRPC could reach on this machine.

    .venv/bin/python bench/bench_agent_throughput.py [--quick] [--probes N] [--in-flight N]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from common import (
    LOOPBACK,
    Lab,
    Report,
    cpu_seconds,
    install_sigterm_exit,
    machine_busy_seconds,
    memory_kib,
    percentile,
    quick_argument_parser,
    raw_handshakes,
)
from grpc_floor import FloorRun, floor_servers, measure_floor

from tlsfleet.agent.model import Failure, ProbeOptions, ProbeRequest, Target, Verdict
from tlsfleet.coordinator.fleet.grpc_vantage import GrpcVantage
from tlsfleet.coordinator.fleet.inventory import AgentEntry
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageState

PROBES = 3000
QUICK_PROBES = 1000
IN_FLIGHT = 200
WARMUP_PROBES = 50
PROBE_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 300.0
TARGET_PROBES_PER_S = 400.0
TARGET_RATIO_TO_RAW = 0.8


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    address_failures: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: ProbeOutcome) -> None:
        self.states[outcome.state.value] += 1
        if outcome.state is not VantageState.OK or outcome.result is None:
            return
        self.latencies_ms.append(outcome.duration_ms)
        for address in outcome.result.addresses:
            failure = address.connect_failure if address.connect_failure is not Failure.NONE else None
            failure = failure or address.handshake.failure
            if failure is not Failure.NONE:
                self.address_failures[failure.value] += 1
            self.verdicts[address.native.verdict.value] += 1


def probe_request(port: int) -> ProbeRequest:
    # SNI and the name check use "localhost"; the pinned address keeps every connection on 127.0.0.1.
    options = ProbeOptions(pin_address=LOOPBACK, reference_time_ns=time.time_ns())
    return ProbeRequest(target=Target("localhost", port), options=options)


async def drive(vantage: GrpcVantage, request: ProbeRequest, total: int, in_flight: int, tally: Tally) -> float:
    """Run `total` probes with `in_flight` of them outstanding at all times; returns the elapsed seconds."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            tally.add(await vantage.probe(request, PROBE_TIMEOUT_S))

    started = time.perf_counter()
    async with asyncio.timeout(RUN_TIMEOUT_S):
        await asyncio.gather(*(worker() for _ in range(min(in_flight, total))))
    return time.perf_counter() - started


async def measure(
    address: str, name: str, port: int, probes: int, in_flight: int, pids: dict[str, int], *, streamed: bool
) -> dict:
    vantage = GrpcVantage(AgentEntry(name=name, address=address, insecure=True), None, streamed=streamed)
    try:
        request = probe_request(port)
        await drive(vantage, request, WARMUP_PROBES, min(in_flight, WARMUP_PROBES), Tally())
        machine_before = machine_busy_seconds()
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        tally = Tally()
        elapsed = await drive(vantage, request, probes, in_flight, tally)
        cpu_after = {role: cpu_seconds(pid) for role, pid in pids.items()}
        machine = machine_busy_seconds() - machine_before
    finally:
        await vantage.close()
    cpu = {role: cpu_after[role] - cpu_before[role] for role in pids}
    return {"elapsed": elapsed, "tally": tally, "cpu": cpu, "other_cpu": machine - sum(cpu.values())}


def main() -> int:
    parser = quick_argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, help=f"probes to complete (default {PROBES}, {QUICK_PROBES} quick)")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT, help=f"probes outstanding (default {IN_FLIGHT})")
    args = parser.parse_args()
    probes = args.probes or (QUICK_PROBES if args.quick else PROBES)
    if not 1 <= probes <= 100_000:
        parser.error(f"--probes {probes} is out of range; accepted: 1-100000")
    if not 1 <= args.in_flight <= 1000:
        parser.error(f"--in-flight {args.in_flight} is out of range; accepted: 1-1000")
    install_sigterm_exit()
    report = Report()
    with Lab() as lab:
        server = lab.start_server()
        # The usual five stores: system file and dir, SSL_CERT_FILE, certifi (this interpreter's, named as a
        # runtime in use) and Java's cacerts where a JRE is on PATH.
        [agent] = lab.start_agents(1, extra_args=("--runtime", f"python={sys.executable}"))
        pids = {"agent": agent.pid, "target_server": server.pid, "client": os.getpid()}
        report.say(
            f"{probes} probes of localhost:{server.port} (pinned to {LOOPBACK}), {args.in_flight} in flight, "
            f"through agent {agent.name} at {agent.address} (pid {agent.pid}); target server pid {server.pid}"
        )
        # The host's speed drifts within minutes: the raw loop runs just before and just after the agent,
        # and the faster of the two is the yardstick; before, once the agent has finished starting (it reads
        # its stores and asks the runtimes it found), so that the first raw loop shares the cores with nobody.
        settle(agent.pid)
        raw_before = raw_handshakes(server.port, str(lab.root_file), ["localhost"], probes, args.in_flight)
        result = asyncio.run(
            measure(agent.address, agent.name, server.port, probes, args.in_flight, pids, streamed=True)
        )
        raw_after = raw_handshakes(server.port, str(lab.root_file), ["localhost"], probes, args.in_flight)
        unary = asyncio.run(
            measure(agent.address, agent.name, server.port, probes, args.in_flight, pids, streamed=False)
        )
        agent_memory = memory_kib(agent.pid)
        stores = asyncio.run(describe_stores(agent.address, agent.name))
        floors = floor_runs(str(lab.root_file), server.port, server.pid, probes, args.in_flight)
        raw = max(raw_before, raw_after, key=lambda r: r.chains / r.elapsed_s)
        raw_chains, raw_elapsed, raw_cpu = raw.chains, raw.elapsed_s, raw.cpu_s
    tally: Tally = result["tally"]
    elapsed: float = result["elapsed"]
    clean = clean_probes(tally)
    rate = clean_rate(result)
    report.say(
        f"{clean} clean probes of {probes} in {elapsed:.2f} s: {rate:.1f} probes/s; "
        f"vantage states {dict(tally.states)}; address failures {dict(tally.address_failures) or 'none'}; "
        f"native verdicts {dict(tally.verdicts)}"
    )
    report.figure("agent_throughput", rate, "probes/s")
    report.figure("agent_throughput_elapsed", elapsed, "s")
    report.figure("agent_throughput_probes", probes, "probes")
    report.figure("agent_throughput_in_flight", args.in_flight, "probes")
    for state in VantageState:
        report.figure(f"agent_throughput_state_{state.value}", tally.states.get(state.value, 0), "probes")
    for failure, count in sorted(tally.address_failures.items()):
        report.figure(f"agent_throughput_address_failure_{failure}", count, "probes")
    not_ok = sum(n for verdict, n in tally.verdicts.items() if verdict != Verdict.OK.value)
    report.figure("agent_throughput_native_not_ok", not_ok, "probes")
    if tally.latencies_ms:
        p50, p95 = percentile(tally.latencies_ms, 50), percentile(tally.latencies_ms, 95)
        report.say(f"per-probe latency seen by the client: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        report.figure("agent_throughput_latency_p50", p50, "ms")
        report.figure("agent_throughput_latency_p95", p95, "ms")
    cpu: dict[str, float] = result["cpu"]
    shares = ", ".join(f"{role} {seconds:.2f} s ({seconds / elapsed:.0%} of one core)" for role, seconds in cpu.items())
    report.say(f"CPU time during the run ({elapsed:.2f} s wall, {os.cpu_count()} cores): {shares}")
    for role, seconds in cpu.items():
        report.figure(f"agent_throughput_cpu_{role}", seconds, "s")
        report.figure(f"agent_throughput_cpu_{role}_per_probe", seconds / probes * 1000, "ms")
    report.figure("agent_throughput_cpu_total_cores", sum(cpu.values()) / elapsed, "cores")
    report.other_work("agent_throughput", result["other_cpu"], elapsed)
    report.say(f"agent memory after the run: VmRSS {agent_memory['VmRSS']} KiB, VmHWM {agent_memory['VmHWM']} KiB")
    report.figure("agent_throughput_agent_rss_after", agent_memory["VmRSS"] / 1024, "MiB")
    report.figure("agent_throughput_agent_hwm", agent_memory["VmHWM"] / 1024, "MiB")
    report.target("agent_throughput", rate, ">=", TARGET_PROBES_PER_S, "probes/s")
    unary_rate = clean_rate(unary)
    unary_cpu = " + ".join(f"{role} {s / probes * 1000:.2f}" for role, s in unary["cpu"].items())
    report.say(
        f"the same probes as a unary Probe call each: {unary_rate:.1f} probes/s, {unary_rate / rate:.2f}x the "
        f"streamed rate; CPU per probe {unary_cpu} ms"
    )
    report.figure("agent_throughput_unary", unary_rate, "probes/s")
    raw_rate = raw_chains / raw_elapsed
    report.say(
        f"raw asyncio CERT_REQUIRED handshakes with chain capture, same server, {args.in_flight} in flight: "
        f"{raw_chains} in {raw_elapsed:.2f} s = {raw_rate:.1f}/s "
        f"({raw_cpu / max(raw_chains, 1) * 1000:.2f} ms CPU each), the faster of the runs just before and "
        f"after the agent's ({raw_before.chains / raw_before.elapsed_s:.1f} and "
        f"{raw_after.chains / raw_after.elapsed_s:.1f}/s)"
    )
    report.say(f"the agent judged each chain against {len(stores)} trust stores: {', '.join(stores)}")
    report.figure("agent_throughput_stores", len(stores), "stores")
    report.figure("raw_handshakes", raw_rate, "handshakes/s")
    report.target("agent_vs_raw_handshakes", rate / raw_rate, ">=", TARGET_RATIO_TO_RAW, "x")
    report.figure("agent_unary_vs_raw_handshakes", unary_rate / raw_rate, "x")
    for name, floor in floors.items():
        floor_rate = floor.answered / floor.elapsed_s
        floor_cpu = " + ".join(f"{role} {s / probes * 1000:.2f}" for role, s in floor.cpu_s.items())
        report.say(
            f"the floor, the same handshakes behind a bare grpc.aio method ({name}: "
            f"{'a call each' if name == 'unary' else 'messages of one stream'}), {args.in_flight} in flight: "
            f"{floor.answered} in {floor.elapsed_s:.2f} s = {floor_rate:.1f}/s, {floor_rate / raw_rate:.2f}x the raw "
            f"handshakes, the agent at {rate / floor_rate:.2f}x of it; CPU per handshake {floor_cpu} ms"
        )
        report.figure(f"grpc_floor_{name}", floor_rate, "handshakes/s")
        report.figure(f"grpc_floor_{name}_vs_raw_handshakes", floor_rate / raw_rate, "x")
        report.figure(f"agent_vs_grpc_floor_{name}", rate / floor_rate, "x")
    # The three processes share the cores: their CPU per probe bounds the rate whatever the agent does.
    per_probe_ms = sum(cpu.values()) / probes * 1000
    bound = (os.cpu_count() or 1) * 1000 / per_probe_ms
    report.say(
        f"CPU per probe: {' + '.join(f'{role} {s / probes * 1000:.2f}' for role, s in cpu.items())} = "
        f"{per_probe_ms:.2f} ms; {os.cpu_count()} cores allow at most {bound:.0f} probes/s at that cost, "
        f"{bound / raw_rate:.2f}x the raw handshakes"
    )
    return 0


def settle(pid: int, *, quiet_share: float = 0.05, window_s: float = 0.5, most_s: float = 30.0) -> None:
    """Wait until process `pid` uses under `quiet_share` of a core over `window_s` (at most `most_s`)."""
    deadline = time.monotonic() + most_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(window_s)
        if cpu_seconds(pid) - before < quiet_share * window_s:
            return


def clean_probes(tally: Tally) -> int:
    """Probes that came back OK with every address handshaken."""
    return tally.states.get(VantageState.OK.value, 0) - sum(tally.address_failures.values())


def clean_rate(measured: dict) -> float:
    return clean_probes(measured["tally"]) / measured["elapsed"]


def floor_runs(cafile: str, target_port: int, target_pid: int, probes: int, in_flight: int) -> dict[str, FloorRun]:
    """`probes` handshakes through one bare gRPC floor server, a unary call each ("unary") and then as the
    messages of one stream ("stream"), each after its own warm-up."""
    with floor_servers(cafile, target_port, 1) as servers:
        pids = {"floor_server": servers.pids[0], "target_server": target_pid, "client": os.getpid()}
        return asyncio.run(measure_floor(servers.addresses, ["localhost"], probes, in_flight, WARMUP_PROBES, pids))


async def describe_stores(address: str, name: str) -> list[str]:
    vantage = GrpcVantage(AgentEntry(name=name, address=address, insecure=True), None)
    try:
        outcome = await vantage.describe(10.0)
    finally:
        await vantage.close()
    return [s.name for s in outcome.description.trust_stores] if outcome.description else []


if __name__ == "__main__":
    sys.exit(main())
