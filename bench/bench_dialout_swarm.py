"""One coordinator service holding many dial-out agents: its memory per connected agent, and the fan-out
time of one probe to 1,000 agents against 10.

A swarm process runs every agent identity, each on its own real stream (its own TCP and TLS connection,
its own fleet certificate) through the agent's own dial-out code (`agent.dialout.AgentLink`). The swarm's
agents answer with one real probe result and one real description, made once at start by a real agent
service against the lab TLS server and replayed under each agent's name, so the figures are the
coordinator's and the streams', not a thousand handshakes on two cores. The fan-out goes the way
`tlsfleet probe --coordinator` goes: this process dials the service's agent link with a coordinator
certificate and asks each selected agent through it (`coordinator.fleet.relay`, `fleet.fanout`).
Beside it, the floor (`grpc_fanout_floor.py`): the same fan-out over bare grpc.aio streams, nothing else.

    .venv/bin/python bench/bench_dialout_swarm.py [--quick] [--agents N]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Lab,
    Report,
    cpu_seconds,
    install_sigterm_exit,
    make_fleet_pki,
    memory_kib,
    percentile,
    quick_argument_parser,
    start_service,
    stop_process,
    wait_for_event,
)
from grpc_fanout_floor import fanout_floor

AGENTS = 1000
QUICK_AGENTS = 200
SMALL_FANOUT = 10
FANOUT_RUNS = 7
QUICK_FANOUT_RUNS = 3
CONNECT_TIMEOUT_S = 180.0
IDLE_S = 3.0
PROBE_TIMEOUT_S = 30.0
START_BATCH = 50  # the swarm dials this many at a time, so registrations do not all time out together
TARGET_KIB_PER_AGENT = 100.0
TARGET_FANOUT_RATIO = 3.0


# --- the swarm process ------------------------------------------------------------------------------


class _Context:
    """The two things AgentService reads of a call context, for the one real probe made at start."""

    def time_remaining(self) -> float:
        return PROBE_TIMEOUT_S

    async def abort(self, code: object, details: str = "") -> None:
        raise RuntimeError(f"the swarm's sample probe was refused: {details}")


class _Canned:
    """An agent service that answers as agent `name` with the sample result and description."""

    def __init__(self, name: str, result: Any, description: Any) -> None:
        self._name = name
        self._result = result
        self._description = description

    async def Probe(self, request: Any, context: Any) -> Any:
        reply = type(self._result)()
        reply.CopyFrom(self._result)
        reply.agent.name = self._name
        reply.request_id = request.request_id
        reply.agent_received_ns = reply.agent_replied_ns = time.time_ns()
        return reply

    async def Describe(self, request: Any, context: Any) -> Any:
        reply = type(self._description)()
        reply.CopyFrom(self._description)
        reply.agent.name = self._name
        reply.agent_time_ns = time.time_ns()
        return reply


async def _swarm(link: str, pki_dir: Path, names: list[str], target_port: int) -> None:
    import signal

    from tlsfleet import __version__
    from tlsfleet.agent.dialout import AgentLink, LinkEndpoint
    from tlsfleet.agent.grpc_service import AgentService
    from tlsfleet.agent.hostfacts import HostFactsCache
    from tlsfleet.agent.model import AgentIdentity
    from tlsfleet.agent.pki.credentials import load_credentials
    from tlsfleet.agent.probe.engine import ProbeEngine
    from tlsfleet.v1 import agent_pb2, probe_pb2

    engine = ProbeEngine()
    service = AgentService(
        engine=engine,
        identity=AgentIdentity("sample", __version__, (("role", "swarm"),)),
        facts=HostFactsCache(__version__, os.environ),
        max_concurrent_probes=4,
        max_waiting_probes=4,
    )
    request = probe_pb2.ProbeRequest(
        target=probe_pb2.Target(host="localhost", port=target_port),
        options=probe_pb2.ProbeOptions(pin_address=LOOPBACK),
    )
    result = await service.Probe(request, _Context())  # type: ignore[arg-type]
    description = await service.Describe(agent_pb2.DescribeRequest(), _Context())  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []
    for start in range(0, len(names), START_BATCH):
        for name in names[start : start + START_BATCH]:
            credentials = load_credentials(
                pki_dir / "ca.pem",
                pki_dir / "agents" / f"{name}.pem",
                pki_dir / "agents" / f"{name}.key",
                expect_role="agent",
            )
            agent_link = AgentLink(
                LinkEndpoint(link, "coordinator"),
                credentials=credentials,
                service=_Canned(name, result, description),  # type: ignore[arg-type]
                max_requests=64,
            )
            tasks.append(asyncio.create_task(agent_link.run(stop)))
        await asyncio.sleep(0.2)
    print(f"DIALLING {len(tasks)}", flush=True)
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)


def swarm_main(argv: list[str]) -> int:
    import structlog

    # Thousands of streams would log every reconnection; the coordinator's log tells what matters.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(int(os.environ.get("SWARM_LOG_LEVEL", "40")))
    )
    link, pki_dir, names_file, port = argv
    names = Path(names_file).read_text().split()
    asyncio.run(_swarm(link, Path(pki_dir), names, int(port)))
    return 0


# --- the benchmark ----------------------------------------------------------------------------------


async def _online(link: str, credentials: Any) -> int:
    from tlsfleet.coordinator.fleet.relay import open_relay

    relay = await open_relay(link, credentials)
    try:
        return sum(1 for _vantage, connected in relay.candidates if connected)
    finally:
        await relay.close()


async def _fanouts(link: str, credentials: Any, port: int, sizes: list[int], runs: int) -> dict[int, list[tuple]]:
    """Per size: (wall ms, answered ok) of each run, sizes alternating."""
    from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target
    from tlsfleet.coordinator.fleet.fanout import probe_all
    from tlsfleet.coordinator.fleet.relay import open_relay
    from tlsfleet.coordinator.outcomes import VantageState

    relay = await open_relay(link, credentials)
    vantages = sorted((v for v, connected in relay.candidates if connected), key=lambda v: v.info.name)
    request = ProbeRequest(Target("localhost", port), ProbeOptions(pin_address=LOOPBACK))
    found: dict[int, list[tuple]] = {size: [] for size in sizes}
    try:
        for _ in range(runs + 1):  # the first round warms the channel and the streams
            for size in sizes:
                started = time.perf_counter()
                outcomes = await probe_all(vantages[:size], request, PROBE_TIMEOUT_S)
                wall_ms = (time.perf_counter() - started) * 1000
                found[size].append((wall_ms, sum(o.state is VantageState.OK for o in outcomes)))
    finally:
        await relay.close()
    return {size: runs_[1:] for size, runs_ in found.items()}


def main() -> int:
    parser = quick_argument_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--agents", type=int, help=f"dial-out agents in the swarm (default {AGENTS}, quick {QUICK_AGENTS})"
    )
    args = parser.parse_args()
    count = args.agents or (QUICK_AGENTS if args.quick else AGENTS)
    if not SMALL_FANOUT <= count <= 5000:
        parser.error(f"--agents {count} is out of range; accepted: {SMALL_FANOUT}-5000")
    runs = QUICK_FANOUT_RUNS if args.quick else FANOUT_RUNS
    install_sigterm_exit()
    report = Report()
    from tlsfleet.agent.pki.credentials import load_credentials

    with Lab(prefix="tlsfleet-bench-swarm-") as lab:
        server = lab.start_server()
        pki_dir = lab.workdir / "fleet"
        names = [f"swarm-{i:04d}" for i in range(count)]
        started = time.perf_counter()
        make_fleet_pki(pki_dir, names)
        report.say(f"issued {count} agent certificates in {time.perf_counter() - started:.1f} s")
        (lab.workdir / "inventory.toml").write_text(f'[coordinator]\npki_dir = "{pki_dir}"\n')
        config = lab.workdir / "coordinator.toml"
        config.write_text(
            '[coordinator]\ninventory = "inventory.toml"\n\n[storage]\npath = "history.sqlite"\n\n'
            f'[agent_link]\nlisten = "{LOOPBACK}:0"\nallow = ["swarm-*"]\nmax_agents = {count + 10}\n\n'
            '[[report]]\nname = "idle"\ntargets = ["localhost:1"]\nschedule = "0 0 1 1 *"\n'
        )
        log_path = lab.workdir / "coordinator.log"
        names_file = lab.workdir / "names.txt"
        names_file.write_text("\n".join(names))
        coordinator = swarm = None
        try:
            coordinator = start_service(config, log_path)
            link_port = wait_for_event(log_path, "agent_link_listening", coordinator, 30.0)["port"]
            link = f"{LOOPBACK}:{link_port}"
            time.sleep(IDLE_S)
            baseline = memory_kib(coordinator.pid)["VmRSS"]
            swarm = subprocess.Popen(
                [sys.executable, __file__, "--swarm", link, str(pki_dir), str(names_file), str(server.port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            credentials = load_credentials(
                pki_dir / "ca.pem",
                pki_dir / "coordinators" / "coordinator.pem",
                pki_dir / "coordinators" / "coordinator.key",
                expect_role="coordinator",
            )
            started = time.perf_counter()
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            online = 0
            while time.monotonic() < deadline:
                online = asyncio.run(_online(link, credentials))
                if online >= count:
                    break
                if swarm.poll() is not None:
                    raise RuntimeError(f"the swarm exited ({swarm.returncode})")
                time.sleep(0.5)
            connect_s = time.perf_counter() - started
            report.figure("dialout_agents_online", online, "agents")
            report.figure("dialout_connect_all_s", connect_s, "s")
            if online < count:
                report.say(f"only {online} of {count} agents connected within {CONNECT_TIMEOUT_S:g} s")
                return 1
            time.sleep(IDLE_S)
            connected = memory_kib(coordinator.pid)["VmRSS"]
            report.figure("coordinator_rss_idle_mib", baseline / 1024, "MiB")
            report.figure("coordinator_rss_connected_mib", connected / 1024, "MiB")
            report.target(
                "coordinator_rss_per_agent_kib", (connected - baseline) / count, "<=", TARGET_KIB_PER_AGENT, "KiB"
            )
            cpu_before = {"coordinator": cpu_seconds(coordinator.pid), "swarm": cpu_seconds(swarm.pid)}
            cpu_before["cli"] = time.process_time()
            results = asyncio.run(_fanouts(link, credentials, server.port, [SMALL_FANOUT, count], runs))
            # Where a probe's cost goes, per agent asked (warm-up round included).
            asked = (runs + 1) * (SMALL_FANOUT + count)
            spent = {
                "coordinator": cpu_seconds(coordinator.pid) - cpu_before["coordinator"],
                "swarm": cpu_seconds(swarm.pid) - cpu_before["swarm"],
                "cli": time.process_time() - cpu_before["cli"],
            }
            for who, seconds in spent.items():
                report.figure(f"{who}_cpu_per_agent_probe_ms", seconds * 1000 / asked, "ms")
            medians = {}
            for size, measured in results.items():
                walls = [wall for wall, _ok in measured]
                answered = min(ok for _wall, ok in measured)
                medians[size] = percentile(walls, 50)
                report.figure(f"fanout_{size}_agents_p50_ms", medians[size], "ms")
                report.figure(f"fanout_{size}_agents_max_ms", max(walls), "ms")
                report.figure(f"fanout_{size}_agents_fewest_ok", answered, "agents")
            report.target(
                f"fanout_{count}_vs_{SMALL_FANOUT}_ratio", medians[count] / medians[SMALL_FANOUT], "<=",
                TARGET_FANOUT_RATIO, "x",
            )  # fmt: skip
            report.figure("coordinator_rss_after_fanouts_mib", memory_kib(coordinator.pid)["VmRSS"] / 1024, "MiB")
        finally:
            for process in (swarm, coordinator):
                stop_process(process)
    # The floor, measured with the service and swarm stopped: what bare gRPC streams cost on these cores.
    floor = fanout_floor(count, runs)
    floor_ratio = floor.large_p50_ms / floor.small_p50_ms
    report.say(
        f"the floor, one 64-byte message down each of {SMALL_FANOUT} / {count} bare grpc.aio streams (no TLS, no "
        f"protobuf, no probe) and back: p50 {floor.small_p50_ms:.1f} / {floor.large_p50_ms:.1f} ms, "
        f"{floor_ratio:.1f}x; {TARGET_FANOUT_RATIO:g}x of this run's {SMALL_FANOUT}-agent fan-out is "
        f"{medians[SMALL_FANOUT] * TARGET_FANOUT_RATIO:.1f} ms"
    )
    report.figure(f"fanout_floor_{SMALL_FANOUT}_streams_p50_ms", floor.small_p50_ms, "ms")
    report.figure(f"fanout_floor_{count}_streams_p50_ms", floor.large_p50_ms, "ms")
    report.figure(f"fanout_floor_{count}_vs_{SMALL_FANOUT}_ratio", floor_ratio, "x")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--swarm":
        sys.exit(swarm_main(sys.argv[2:]))
    sys.exit(main())
