"""`/probe` of a real `tlsfleet coordinator serve` asking 10 mutual-TLS agents, scraped the way Prometheus
scrapes it: one request at a time, each a fan-out of the target to every agent.

One lab TLS server and ten loopback agents behind mutual TLS (a fleet CA of the benchmark's own) run for the
whole benchmark; the service's inventory lists them and `[probe_endpoint]` is on. Per scrape: the wall time
of the HTTP request as this process sees it, and whether every agent's `tlsfleet_probe_success` was 1.
Beside it, alternating with the scrapes so that drift hits both alike, the yardstick: the same ten
handshakes (CERT_REQUIRED, chain captured, all ten at once) by a raw asyncio loop in a fresh process of its
own, timed inside its loop. Then the CPU per scrape of the service and of the ten agents, from /proc.

    .venv/bin/python bench/bench_probe_endpoint.py [--quick]
"""

from __future__ import annotations

import sys
import time
import urllib.request

from common import (
    LOOPBACK,
    Lab,
    Report,
    cpu_seconds,
    install_sigterm_exit,
    make_fleet_pki,
    percentile,
    quick_argument_parser,
    raw_handshakes,
    start_service,
    stop_process,
    wait_for_event,
)

AGENTS = 10
SCRAPES = 40
QUICK_SCRAPES = 12
WARMUP_SCRAPES = 3
SCRAPE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0


def scrape(url: str) -> tuple[float, int]:
    """(wall seconds, agents whose probe succeeded) of one /probe request."""
    request = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT_S)})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S + 5) as reply:
        body = reply.read().decode()
    wall = time.perf_counter() - started
    succeeded = sum(
        1 for line in body.splitlines() if line.startswith("tlsfleet_probe_success{") and line.endswith(" 1.0")
    )
    return wall, succeeded


def main() -> int:
    args = quick_argument_parser(__doc__.splitlines()[0]).parse_args()
    scrapes = QUICK_SCRAPES if args.quick else SCRAPES
    install_sigterm_exit()
    report = Report()
    with Lab(prefix="tlsfleet-bench-probe-endpoint-") as lab:
        server = lab.start_server()
        pki_dir = lab.workdir / "fleet"
        names = [f"bench-{i + 1}" for i in range(AGENTS)]
        make_fleet_pki(pki_dir, names)
        agents = lab.start_agents(AGENTS, insecure=False, extra_args=["--pki-dir", str(pki_dir)])
        inventory = lab.workdir / "inventory.toml"
        entries = "\n".join(a.inventory_entry() for a in agents)
        inventory.write_text(f'[coordinator]\npki_dir = "{pki_dir}"\n\n{entries}')
        config = lab.workdir / "coordinator.toml"
        config.write_text(
            f'[coordinator]\ninventory = "inventory.toml"\nmetrics_listen = "{LOOPBACK}:0"\n\n'
            '[storage]\npath = "history.sqlite"\n\n[probe_endpoint]\nmax_concurrent = 4\n\n'
            '[[report]]\nname = "idle"\ntargets = ["localhost:1"]\nschedule = "0 0 1 1 *"\n'
        )
        log_path = lab.workdir / "coordinator.log"
        coordinator = None
        try:
            coordinator = start_service(config, log_path)
            base = wait_for_event(log_path, "coordinator_started", coordinator, START_TIMEOUT_S)["metrics"]
            # The lab leaf names 127.0.0.1 too: the agents probe that one address, as the raw loop does.
            target = f"{LOOPBACK}:{server.port}"
            url = f"http://{base}/probe?target={target}&agents=bench-*"
            for _ in range(WARMUP_SCRAPES):
                scrape(url)
            walls: list[float] = []
            raws: list[float] = []
            failed = 0
            spent = 0.0
            agents_spent = 0.0
            for _ in range(scrapes):
                raws.append(raw_handshakes(server.port, str(lab.root_file), [LOOPBACK], AGENTS, AGENTS).elapsed_s)
                before = cpu_seconds(coordinator.pid), sum(cpu_seconds(a.pid) for a in agents)
                wall, succeeded = scrape(url)
                spent += cpu_seconds(coordinator.pid) - before[0]
                agents_spent += sum(cpu_seconds(a.pid) for a in agents) - before[1]
                walls.append(wall)
                failed += succeeded != AGENTS
            report.say(f"{scrapes} scrapes of /probe asking {AGENTS} mutual-TLS agents, after {WARMUP_SCRAPES} warm-up")
            report.figure("probe_endpoint_wall_p50_ms", percentile(walls, 50) * 1000, "ms")
            report.figure("probe_endpoint_wall_p95_ms", percentile(walls, 95) * 1000, "ms")
            report.figure("raw_10_handshakes_p50_ms", percentile(raws, 50) * 1000, "ms")
            report.figure("probe_endpoint_vs_raw_p50", percentile(walls, 50) / percentile(raws, 50), "x")
            report.figure("service_cpu_per_scrape_ms", spent * 1000 / scrapes, "ms")
            report.figure("agents_cpu_per_scrape_ms", agents_spent * 1000 / scrapes, "ms")
            report.figure("probe_endpoint_scrapes_not_all_ok", failed, "scrapes")
            return 1 if failed else 0
        finally:
            stop_process(coordinator)


if __name__ == "__main__":
    sys.exit(main())
