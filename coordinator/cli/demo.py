"""`tlsfleet demo`: a throwaway lab of real hosts with real faults, probed and diagnosed.

A private CA, TLS servers on 127.88.x.y, and local agents whose environments differ in one way each
(trust store, certifi, clock, TLS cap, an /etc/hosts pin). Several scenarios are probed with the real
CLI; each prints its matrix and its findings. Everything runs from a temporary folder on loopback and
is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from ...agent import exit_codes

# Scenarios that run without root, in the order they tell the story best.
DEMO_SCENARIOS = (
    "private-ca-missing",
    "runtime-store",
    "clock-behind",
    "incomplete-chain",
    "sni-default",
    "stale-pin",
    "inconsistent-backends",
    "tls13-only",
    "healthy",
)
DEMO_AGENTS = ("trusting", "trusting-2", "no-private-root", "certifi-only", "skew-behind", "tls12-only", "stale-pin")


def run_demo() -> int:
    from ..lab.agent_process import tlsfleet_command
    from ..lab.fleet import LabFleet
    from ..lab.scenarios import STANDARD_AGENTS, scenario_named
    from .render import make_console

    console = make_console()
    started = time.perf_counter()
    scenarios = [scenario_named(name) for name in DEMO_SCENARIOS]
    agents = [spec for spec in STANDARD_AGENTS if spec.name in DEMO_AGENTS]
    workdir = Path(tempfile.mkdtemp(prefix="tlsfleet-demo-"))
    console.rule("tlsfleet demo")
    console.print(
        f"A throwaway lab in {workdir}: a private CA 'Acme Internal Root CA', TLS servers on 127.88.x.y, and "
        f"{len(agents)} local agents whose hosts differ in one way each:"
    )
    for spec in agents:
        console.print(f"  {spec.name:16} {spec.story}")
    try:
        with LabFleet(workdir, agents=agents, scenarios=scenarios) as fleet:
            for name, reason in sorted(fleet.unavailable.items()):
                console.print(f"  {name:16} skipped: {reason}")
            console.print(f"Agents up in {time.perf_counter() - started:.1f} s; inventory {fleet.inventory}.\n")
            for number, scenario in enumerate(scenarios, start=1):
                console.rule(f"{number}/{len(scenarios)} {scenario.name}")
                console.print(scenario.story)
                missing = fleet.missing(scenario)
                if missing:
                    console.print(f"skipped: {missing}\n")
                    continue
                with fleet.deploy(scenario) as deployment:
                    argv = [
                        "probe",
                        deployment.target,
                        "--inventory",
                        str(fleet.inventory),
                        "--no-local",
                        "--agents",
                        scenario.selector,
                        *scenario.probe_args,
                    ]
                    console.print(f"$ tlsfleet {' '.join(argv)}", style="cyan", soft_wrap=True)
                    done = subprocess.run(
                        [*tlsfleet_command(), *argv],
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False,
                        env={**os.environ, "COLUMNS": str(console.width)},
                    )
                console.print(done.stdout.rstrip(), markup=False, highlight=False, soft_wrap=True)
                if done.stderr.strip():
                    console.print(done.stderr.rstrip(), markup=False, highlight=False)
                console.print(f"(exit code {done.returncode})\n")
    except KeyboardInterrupt:
        console.print("interrupted: every agent and server stopped, the lab folder removed")
        return 130
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    console.rule()
    console.print(
        f"Demo finished in {time.perf_counter() - started:.1f} s; every agent and server stopped, {workdir} removed."
    )
    return exit_codes.OK
