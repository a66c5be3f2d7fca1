"""The local probe beside sslyze: `tlsfleet probe` from this machine alone vs `sslyze --certinfo`, fresh processes.

One lab TLS server (its own process). Alternating fresh processes, each run to its end:

- `tlsfleet probe localhost:PORT --address 127.0.0.1 --agents local --json`: the vantage `local` alone (no
  inventory, no agent, no gRPC), with the lab root as OpenSSL's default store (the lab's `trust_env`), so
  its native verdict is `ok`; every other store this host has (system bundle and directory, certifi of the
  host's interpreters, Java) is judged as usual. Its cache directory ($XDG_CACHE_HOME) is the lab's own,
  warmed by the warm-up runs.
- the same `tlsfleet probe` with a default store of the size a host usually has (SSL_CERT_FILE the system
  bundle with the lab root appended, a cache directory of its own): what the native verdict costs when
  OpenSSL's default file holds some 150 roots rather than one. Reported beside, not as the target.
- `sslyze --certinfo --certinfo_ca_file ROOT localhost:PORT`: sslyze from PyPI in the benchmark's own
  virtual environment (bench/.venv-sslyze, made on first use and reused), judging the chain against its
  bundled stores and the lab root, as tlsfleet judges it against the host's stores and the lab root.
- `openssl s_client -connect 127.0.0.1:PORT -servername localhost -CAfile ROOT`: one verified handshake,
  the floor.

Per command: wall time of the process (p50, p95) and its CPU time; the ratio of tlsfleet's p50 to
sslyze's. Then where tlsfleet's time goes: import time per package from one `-X importtime` run of the
same command, and the in-process probe (`duration_ms` of the vantage, handshake inside it) from its JSON.
The children run without PYTHONDONTWRITEBYTECODE, so bytecode is cached as in an installed package.

    .venv/bin/python bench/bench_local_probe.py [--quick] [--runs N]
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    LOOPBACK,
    Lab,
    Report,
    chosen_runs,
    install_sigterm_exit,
    machine_busy_seconds,
    percentile,
    runs_parser,
    timed_run,
    tlsfleet_executable,
)

from tlsfleet.coordinator.lab.agent_process import trust_env

RUNS = 15
QUICK_RUNS = 5
WARMUP_RUNS = 2
RUN_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 10.0
RATIO_TARGET = 0.3
TOP_IMPORTS = 12
SSLYZE_VENV = Path(__file__).resolve().parent / ".venv-sslyze"
# Variables that would change what either side does or loads.
_DROPPED = ("PYTHONDONTWRITEBYTECODE", "TLSFLEET_INVENTORY", "TLSFLEET_COORDINATOR", "PYTHONPATH")


@dataclass
class Series:
    label: str
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    inprocess_ms: list[float] = field(default_factory=list)  # tlsfleet: the local vantage's duration_ms
    handshake_ms: list[float] = field(default_factory=list)  # tlsfleet: connect plus handshake
    failures: list[str] = field(default_factory=list)


# Why a finished run does not count ('' when it does); it may add the run's own figures to the series.
Check = Callable[[subprocess.CompletedProcess[str], Series], str]


def run_once(command: Sequence[str], env: Mapping[str, str], series: Series, check: Check) -> None:
    """One fresh process, timed, its CPU taken from RUSAGE_CHILDREN."""
    run = timed_run(command, RUN_TIMEOUT_S, dict(env))
    if run.done is None:
        series.failures.append(f"did not finish within {RUN_TIMEOUT_S:g} s and was killed")
        return
    problem = check(run.done, series)
    if problem:
        series.failures.append(problem)
        return
    series.wall_ms.append(run.wall_ms)
    series.cpu_ms.append(run.cpu_ms)


def check_tlsfleet(done: subprocess.CompletedProcess[str], series: Series) -> str:
    if done.returncode != 0:
        return f"exit code {done.returncode}: {(done.stderr.strip() or done.stdout.strip())[-300:]}"
    try:
        [vantage] = json.loads(done.stdout)["vantages"]
    except (ValueError, KeyError) as error:
        return f"unreadable JSON or not exactly one vantage: {error}"
    if vantage["agent"] != "local" or vantage["state"] != "ok":
        return f"vantage {vantage['agent']}: {vantage['state']} {vantage['error']}"
    [address] = vantage["result"]["addresses"]
    if address["connect_failure"] != "none" or address["handshake"]["failure"] != "none":
        return f"{address['connect_failure']}/{address['handshake']['failure']}: {address['handshake']['error']}"
    if address["native"]["verdict"] != "ok":
        return f"native verdict {address['native']['verdict']}, expected ok (the lab root is the default store)"
    series.inprocess_ms.append(vantage["duration_ms"])
    series.handshake_ms.append(address["connect_ms"] + address["handshake"]["duration_ms"])
    return ""


def check_sslyze(done: subprocess.CompletedProcess[str], _series: Series) -> str:
    if done.returncode != 0:
        return f"exit code {done.returncode}: {(done.stderr.strip() or done.stdout.strip())[-300:]}"
    trusted = [line for line in done.stdout.splitlines() if "Supplied CA file" in line and "OK" in line]
    if not trusted:
        return "sslyze did not find the chain trusted by the supplied lab root: " + done.stdout[-300:]
    return ""


def check_openssl(done: subprocess.CompletedProcess[str], _series: Series) -> str:
    if done.returncode != 0 or "Verification: OK" not in done.stderr + done.stdout:
        return f"exit code {done.returncode}: {(done.stderr.strip() or done.stdout.strip())[-300:]}"
    return ""


def sslyze_executable(report: Report) -> Path | None:
    """sslyze in bench/.venv-sslyze, installed from PyPI on first use; None (and why) when it cannot be."""
    executable = SSLYZE_VENV / "bin" / "sslyze"
    if executable.exists():
        return executable
    report.say(f"installing sslyze from PyPI into {SSLYZE_VENV} (once; reused afterwards)")
    steps = (
        [sys.executable, "-m", "venv", str(SSLYZE_VENV)],
        [
            str(SSLYZE_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "sslyze",
        ],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            report.say(f"sslyze half skipped: {' '.join(step[:4])} did not finish within {PIP_TIMEOUT_S:g} s")
            return None
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            report.say(f"sslyze half skipped: {' '.join(step[:4])} exited {done.returncode}: {tail}")
            shutil.rmtree(SSLYZE_VENV, ignore_errors=True)  # a half-made environment is made again next time
            return None
    return executable if executable.exists() else None


def import_costs(command: Sequence[str], env: Mapping[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """(total ms, [(ms, package)]) by the self time of its modules, from one `-X importtime` run of `command`
    (tlsfleet's own packages one level down: tlsfleet.coordinator.diagnosis, tlsfleet.agent.trust, ...)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].strip()
        root = name.split(".")[0]
        if root == "tlsfleet":
            root = ".".join(name.split(".")[:3])
        elif root in sys.stdlib_module_names or root.startswith("_"):
            root = "(standard library)"
        costs[root] = costs.get(root, 0.0) + int(parts[0]) / 1000
    ranked = sorted(((ms, name) for name, ms in costs.items()), reverse=True)
    return sum(costs.values()), ranked[:TOP_IMPORTS]


def summarize(report: Report, key: str, series: Series) -> float | None:
    if not series.wall_ms:
        report.say(f"{series.label}: no successful run")
        for failure in dict.fromkeys(series.failures):
            report.say(f"  failed: {failure}")
        return None
    p50, p95 = percentile(series.wall_ms, 50), percentile(series.wall_ms, 95)
    cpu = percentile(series.cpu_ms, 50)
    report.say(
        f"{series.label}: wall p50 {p50:.1f} ms, p95 {p95:.1f} ms, CPU p50 {cpu:.1f} ms "
        f"({len(series.wall_ms)} runs, {len(series.failures)} failed)"
    )
    report.figure(f"local_probe_{key}_wall_p50", p50, "ms")
    report.figure(f"local_probe_{key}_wall_p95", p95, "ms")
    report.figure(f"local_probe_{key}_cpu_p50", cpu, "ms")
    report.figure(f"local_probe_{key}_failed_runs", len(series.failures), "runs")
    for failure in list(dict.fromkeys(series.failures))[:3]:
        report.say(f"  failed: {failure}")
    return p50


def main() -> int:
    runs = chosen_runs(runs_parser(__doc__.splitlines()[0], RUNS, QUICK_RUNS, "runs per command"))
    install_sigterm_exit()
    report = Report()
    sslyze = sslyze_executable(report)
    openssl = shutil.which("openssl")
    if openssl is None:
        report.say("openssl s_client floor skipped: no openssl executable on PATH")
    with Lab(prefix="tlsfleet-bench-local-") as lab:
        server = lab.start_server()
        target = f"localhost:{server.port}"
        base = {k: v for k, v in os.environ.items() if k not in _DROPPED}
        env = trust_env(lab.workdir, lab.root_file, base)
        env["XDG_CACHE_HOME"] = str(lab.workdir / "cache")
        probe_args = ["probe", target, "--address", LOOPBACK, "--agents", "local", "--json"]
        probe_args += ["--timeout", str(PROBE_TIMEOUT_S)]
        tlsfleet_command = [*tlsfleet_executable(), *probe_args]
        commands = [("tlsfleet", "tlsfleet", tlsfleet_command, check_tlsfleet)]
        envs: dict[str, Mapping[str, str]] = {}
        system_bundle = ssl.get_default_verify_paths().openssl_cafile
        if system_bundle and os.path.isfile(system_bundle):
            # A host's usual default store: the system bundle, here with the lab root so that verdicts stay ok.
            usual = lab.workdir / "system-bundle-and-root.pem"
            usual.write_bytes(Path(system_bundle).read_bytes() + b"\n" + lab.root_file.read_bytes())
            envs["tlsfleet system store"] = env | {
                "SSL_CERT_FILE": str(usual),
                "XDG_CACHE_HOME": str(lab.workdir / "cache-system-store"),
            }
            commands.append(("tlsfleet system store", "tlsfleet, system-sized store", tlsfleet_command, check_tlsfleet))
        else:
            report.say(f"the system-sized store series skipped: no system bundle at {system_bundle!r}")
        if sslyze is not None:
            sslyze_args = ["--certinfo", "--certinfo_ca_file", str(lab.root_file), target]
            commands.append(("sslyze", "sslyze", [str(sslyze), *sslyze_args], check_sslyze))
        if openssl is not None:
            s_client = [openssl, "s_client", "-connect", f"{LOOPBACK}:{server.port}", "-servername", "localhost"]
            s_client += ["-CAfile", str(lab.root_file), "-verify_return_error", "-brief"]
            commands.append(("openssl", "openssl s_client", s_client, check_openssl))
        shown = "; ".join(" ".join([Path(command[0]).name, *command[1:]]) for _, _, command, _ in commands)
        report.say(
            f"target {target} (server pid {server.pid}); {runs} runs each after {WARMUP_RUNS} warm-up runs, "
            f"alternating: {shown}"
        )
        warmup = {key: Series(label) for key, label, _, _ in commands}
        for _ in range(WARMUP_RUNS):
            for key, _, command, check in commands:
                run_once(command, envs.get(key, env), warmup[key], check)
        if not warmup["tlsfleet"].wall_ms:
            report.say("every warm-up run of tlsfleet failed; nothing to measure")
            summarize(report, "warmup", warmup["tlsfleet"])
            return 1
        series = {key: Series(label) for key, label, _, _ in commands}
        machine_before, started = machine_busy_seconds(), time.perf_counter()
        for _ in range(runs):
            for key, _, command, check in commands:
                run_once(command, envs.get(key, env), series[key], check)
        elapsed = time.perf_counter() - started
        busy = machine_busy_seconds() - machine_before
        ours = sum(sum(s.cpu_ms) for s in series.values()) / 1000
        imports_ms, heaviest = import_costs(commands[0][2], env)
    report.other_work("local_probe", busy - ours, elapsed)
    medians = {key: summarize(report, key.replace(" ", "_"), series[key]) for key, _, _, _ in commands}
    ours_series = series["tlsfleet"]
    if ours_series.inprocess_ms:
        inside, handshake = percentile(ours_series.inprocess_ms, 50), percentile(ours_series.handshake_ms, 50)
        report.figure("local_probe_tlsfleet_inprocess_p50", inside, "ms")
        report.figure("local_probe_tlsfleet_handshake_p50", handshake, "ms")
        report.say(
            f"inside tlsfleet: the local probe (stores found and read, handshake, judgement) p50 {inside:.1f} ms, "
            f"of which connect and handshake {handshake:.1f} ms"
        )
    report.figure("local_probe_tlsfleet_import_ms", imports_ms, "ms")
    report.say(f"tlsfleet's imports, one -X importtime run (self time summed per package; {imports_ms:.1f} ms in all):")
    for cost, package in heaviest:
        report.say(f"  {cost:7.1f} ms  {package}")
    ours_p50, theirs_p50 = medians.get("tlsfleet"), medians.get("sslyze")
    if ours_p50 is None:
        return 1
    if theirs_p50 is None:
        report.say("no ratio: sslyze did not run here (see above)")
        return 0
    # CPU is the steadier yardstick on a shared machine: sslyze waits more than it computes.
    cpu_ratio = percentile(series["tlsfleet"].cpu_ms, 50) / percentile(series["sslyze"].cpu_ms, 50)
    report.figure("local_probe_tlsfleet_vs_sslyze_cpu_p50_ratio", cpu_ratio, "x")
    usual_p50 = medians.get("tlsfleet system store")
    if usual_p50 is not None:
        report.figure("local_probe_tlsfleet_system_store_vs_sslyze_wall_p50_ratio", usual_p50 / theirs_p50, "x")
    report.target("local_probe_tlsfleet_vs_sslyze_wall_p50_ratio", ours_p50 / theirs_p50, "<=", RATIO_TARGET, "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
