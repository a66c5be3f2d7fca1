"""An idle agent's memory: VmRSS and VmHWM once it is listening and has sat idle for 2 seconds.

The agent runs with this host's own environment, so it loads the trust stores a deployed agent on this
machine would load (system bundle, certifi, Java cacerts when present); their root counts are printed,
since parsed roots are a large part of what it holds.

    .venv/bin/python bench/bench_agent_rss.py [--quick] [--agents N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common import Lab, Report, install_sigterm_exit, memory_kib, percentile, quick_argument_parser

from tlsfleet.agent.trust.stores import discover_stores

IDLE_S = 2.0
TOP_MAPPINGS = 8
IMPORT_TIMEOUT_S = 30.0
# What the agent process imports before it serves, without serving: the floor under its RSS.
AGENT_IMPORTS = (
    "import asyncio, sys; sys.modules['rich'] = None; import tlsfleet.agent.cli, tlsfleet.agent.daemon, "
    "tlsfleet.agent.logs"
)
AGENTS = 3
QUICK_AGENTS = 1
TARGET_MIB = 60.0


def rss_by_mapping(pid: int) -> dict[str, int]:
    """Resident KiB per mapped file ('[anon]' for anonymous memory, '[heap]', ...), from /proc/PID/smaps."""
    totals: dict[str, int] = {}
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            # A mapping header: "start-end perms offset dev inode [path]".
            path = parts[5] if len(parts) > 5 else "[anon]"
            current = Path(path).name if path.startswith("/") else path
        elif parts and parts[0] == "Rss:":
            totals[current] = totals.get(current, 0) + int(parts[1])
    return totals


def imports_only_rss_kib() -> int:
    """VmRSS of a fresh interpreter that has imported the agent's modules and does nothing else."""
    code = AGENT_IMPORTS + "; import pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("the import-only interpreter printed no VmRSS")


def main() -> int:
    parser = quick_argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, help=f"agents measured one after another (default {AGENTS})")
    args = parser.parse_args()
    count = args.agents or (QUICK_AGENTS if args.quick else AGENTS)
    if not 1 <= count <= 20:
        parser.error(f"--agents {count} is out of range; accepted: 1-20")
    install_sigterm_exit()
    report = Report()
    stores = discover_stores(os.environ, {})
    report.say(
        "trust stores this host gives an agent: "
        + ", ".join(f"{s.info.name} ({s.info.root_count} roots)" for s in stores)
    )
    rss_mib: list[float] = []
    hwm_mib: list[float] = []
    for _ in range(count):
        # One at a time, so agents do not compete for the cores while they start.
        with Lab() as lab:
            [agent] = lab.start_agents(1, trusting=False, prefix="idle")
            time.sleep(IDLE_S)
            memory = memory_kib(agent.pid)
            mappings = rss_by_mapping(agent.pid)
        rss_mib.append(memory["VmRSS"] / 1024)
        hwm_mib.append(memory["VmHWM"] / 1024)
        report.say(f"agent pid {agent.pid}: VmRSS {memory['VmRSS']} KiB, VmHWM {memory['VmHWM']} KiB")
    rss, hwm = percentile(rss_mib, 50), percentile(hwm_mib, 50)
    report.say(f"idle agent, median of {count}: VmRSS {rss:.1f} MiB, VmHWM {hwm:.1f} MiB")
    report.figure("agent_idle_rss", rss, "MiB")
    report.figure("agent_idle_hwm", hwm, "MiB")
    report.say(f"where the last agent's resident memory is (top {TOP_MAPPINGS} mappings of /proc/PID/smaps):")
    for name, kib in sorted(mappings.items(), key=lambda item: -item[1])[:TOP_MAPPINGS]:
        report.say(f"  {kib / 1024:6.1f} MiB  {name}")
    anonymous = sum(kib for name, kib in mappings.items() if name.startswith("[") or not name)
    report.figure("agent_idle_rss_anonymous", anonymous / 1024, "MiB")
    report.figure("agent_idle_rss_file_backed", (sum(mappings.values()) - anonymous) / 1024, "MiB")
    pydantic = [name for name in mappings if "pydantic" in name]
    if pydantic:
        report.say(f"pydantic is loaded in the agent ({', '.join(pydantic)}): typer imports it to parse options")
    floor = imports_only_rss_kib() / 1024
    report.say(f"a fresh interpreter that only imports the agent's modules (no serving): VmRSS {floor:.1f} MiB")
    report.figure("agent_imports_only_rss", floor, "MiB")
    report.target("agent_idle_rss", rss, "<=", TARGET_MIB, "MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
