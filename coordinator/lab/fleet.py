"""The lab fleet: starts the standard agents once (loopback agents, plus namespace agents when run as
root), writes an inventory for them, deploys each scenario's servers, probes them through the real CLI
(`tlsfleet probe ... --json`) and judges the result. The loopback agents resolve scenario names through
one shared `--hosts-file`, the namespace agents through their own /etc/hosts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import importlib.util
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..diagnosis.model import Severity
from . import faketime, netns
from .agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from .aia_server import AiaServer
from .intercepting_proxy import ProxyAuthority, ProxyProcess, start_proxy_process
from .pki import LabPKI, write_pem
from .scenarios import (
    OUTSIDE,
    SCENARIOS,
    STANDARD_AGENTS,
    AgentSpec,
    Expect,
    Requirement,
    Scenario,
    Stoppable,
    Trust,
    scenario_address,
)
from .tls_server import ServedIdentity, TlsServer

__all__ = [
    "Deployment",
    "FleetStage",
    "LabFleet",
    "ProbeRun",
    "ScenarioRun",
    "check_findings",
    "requirement_missing",
]

PROBE_TIMEOUT_S = 8.0
CLI_TIMEOUT_S = 60.0
DEPLOY_ATTEMPTS = 3
_SEVERITIES = {str(s): s for s in Severity}


def requirement_missing(requirement: Requirement) -> str | None:
    """None when the requirement is met here; otherwise why not."""
    if requirement == "root":
        return netns.available()
    if requirement == "libfaketime":
        return faketime.available()
    if requirement == "certifi":
        return None if importlib.util.find_spec("certifi") else "the certifi package is not installed"
    if requirement == "java-view":
        if _system_java_keystore() is None:
            return None  # no Java on this machine: nothing to give the private root to
        reason = netns.mount_view_available()
        return None if reason is None else f"this machine's Java cacerts lacks the lab's root and {reason}"
    if requirement == "mount-view":
        if not Path(LOCAL_BIN).is_dir():
            return f"{LOCAL_BIN} does not exist here, so no system interpreter can be shown in it"
        return netns.mount_view_available()
    raise ValueError(
        f"requirement {requirement!r} is not known; accepted: root, libfaketime, certifi, java-view, mount-view"
    )


# Where a "found" lab host shows its system Python (a directory the agent's runtime search reads).
LOCAL_BIN = "/usr/local/bin"


def _system_java() -> tuple[str, Path] | None:
    """(the JRE's home, the real file of its cacerts) of the `java` on this machine's PATH, if any: the Java
    runtime an agent here would find by itself, and that lab agents are given with --runtime java=HOME."""
    from ...agent.trust.runtimes import RuntimeOptions, find_runtimes

    search = {"PATH": os.environ.get("PATH", "")}
    found = (r for r in find_runtimes(search, RuntimeOptions(search=True, python_dirs=())) if r.kind == "java")
    java = next((r for r in found if r.store_path and not r.store_error), None)
    return None if java is None else (java.store_label, Path(os.path.realpath(java.store_path)))


def _system_java_keystore() -> Path | None:
    """The Java cacerts file an agent here reports as the 'java' store, if any."""
    java = _system_java()
    return None if java is None else java[1]


# ----------------------------------------------------------------------------------------------- stage


class FleetStage:
    """What a scenario's build step works with: the lab's CAs, its addresses, one port, and the servers it starts."""

    def __init__(self, fleet: LabFleet, scenario: Scenario, index: int, port: int) -> None:
        self.fleet = fleet
        self.scenario = scenario
        self.index = index
        self.port = port
        self.servers: list[TlsServer] = []
        self.processes: list[ProxyProcess] = []
        self.kept: list[Stoppable] = []  # servers the scenario started itself (keep)

    @property
    def host(self) -> str:
        return self.scenario.host

    @property
    def acme(self) -> LabPKI:
        return self.fleet.acme

    @property
    def rogue(self) -> LabPKI:
        return self.fleet.rogue

    def publish_aia(self, path: str, der: bytes) -> str:
        return self.fleet.aia.add(path, der)

    def root_address(self, namespace: str) -> str:
        return self.fleet.namespaces[namespace].root_address

    def address(self, slot: int = 1) -> str:
        return scenario_address(self.index, slot)

    def serve(
        self,
        identity: ServedIdentity | None,
        *,
        slot: int = 1,
        on: str | None = None,
        by_sni: Mapping[str, ServedIdentity] | None = None,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> TlsServer:
        server = TlsServer(
            identity,
            by_sni=by_sni,
            host=on or self.address(slot),
            port=self.port,
            min_version=min_version,
            max_version=max_version,
        )
        self.servers.append(server.start())
        return server

    def intercept_for(self, agent: str, slot: int = 1) -> ProxyProcess:
        """The corporate proxy, inside `agent`'s namespace, on the very address and port the server has outside."""
        namespace = self.fleet.namespaces[agent]
        process = start_proxy_process(
            self.fleet.proxy,
            self.fleet.workdir / "proxy",
            host=self.address(slot),
            port=self.port,
            wrapper=namespace.exec_prefix,
        )
        self.processes.append(process)
        return process

    def intercept_at(self, slot: int) -> ProxyProcess:
        """The corporate proxy on the scenario's own address `slot`, in this namespace: not where the server
        listens, but where a resolver that steers the name sends its clients."""
        process = start_proxy_process(
            self.fleet.proxy, self.fleet.workdir / "proxy", host=self.address(slot), port=self.port
        )
        self.processes.append(process)
        return process

    def keep(self, server: Stoppable) -> None:
        self.kept.append(server)

    def stop(self) -> None:
        for kept in self.kept:
            kept.stop()
        self.kept.clear()
        for process in self.processes:
            process.stop()
        for server in self.servers:
            server.stop()
        self.processes.clear()
        self.servers.clear()


# -------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ProbeRun:
    argv: tuple[str, ...]
    exit_code: int
    report: dict[str, Any] | None
    stderr: str
    seconds: float

    def vantages(self) -> dict[str, dict[str, Any]]:
        return {v["agent"]: v for v in (self.report or {}).get("vantages", [])}

    def findings(self) -> list[dict[str, Any]] | None:
        """The report's findings, most important first; None when the CLI does not report findings."""
        if self.report is None or "findings" not in self.report:
            return None
        return list(self.report["findings"])


def check_findings(expect: Expect, findings: Sequence[Mapping[str, Any]]) -> str | None:
    """None when the findings meet the expectation; otherwise what differs."""
    if expect.cause is None:
        loud = [f for f in findings if _SEVERITIES.get(f.get("severity", ""), Severity.CRITICAL) >= Severity.WARNING]
        if loud:
            return f"expected no finding of warning or worse, got: {_describe(loud)}"
        return None
    if not findings:
        return f"expected {expect.describe()}, got no finding"
    top = findings[0]
    if top.get("cause") != expect.cause.value or sorted(top.get("agents", [])) != sorted(expect.agents):
        return f"expected top finding {expect.describe()}, got: {_describe(findings)}"
    if expect.severity is not None and top.get("severity") != str(expect.severity):
        return f"expected severity {expect.severity}, got: {_describe(findings[:1])}"
    if expect.mentions:
        said = [top.get("summary", ""), top.get("fix", "")]
        said += [str(value) for e in top.get("evidence", []) for pair in e.get("values", []) for value in pair]
        if not any(expect.mentions in text for text in said):
            return f"expected the top finding to mention {expect.mentions!r}, got: {top}"
    return None


def _describe(findings: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{f.get('cause')} ({f.get('severity')}) naming {', '.join(f.get('agents', []))}: {f.get('summary', '')}"
        for f in findings
    )


@dataclass(frozen=True)
class ScenarioRun:
    scenario: Scenario
    target: str
    probe: ProbeRun
    symptom_problem: str | None  # None: the fault is visible in the vantages as expected
    finding_problem: str | None  # None: the top finding is as expected (or findings are not reported yet)
    findings_reported: bool

    @property
    def passed(self) -> bool:
        return self.symptom_problem is None and self.finding_problem is None and self.findings_reported


@dataclass
class Deployment:
    scenario: Scenario
    port: int
    stage: FleetStage

    @property
    def target(self) -> str:
        return f"{self.scenario.host}:{self.port}"


# ----------------------------------------------------------------------------------------------- fleet


def _system_bundle() -> bytes:
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        return Path(cafile).read_bytes()
    return b""


_TLS12_ONLY_CONF = """\
# OpenSSL's default contexts on this host speak TLS 1.2 and nothing else.
openssl_conf = tlsfleet_lab

[tlsfleet_lab]
ssl_conf = tlsfleet_ssl

[tlsfleet_ssl]
system_default = tlsfleet_system_default

[tlsfleet_system_default]
MinProtocol = TLSv1.2
MaxProtocol = TLSv1.2
"""

_CERTIFI_AS_DEBIAN = '''\
"""certifi as Debian's python3-certifi ships it: where() is this host's CA bundle."""


def where():
    return {path!r}


def contents():
    with open(where(), encoding="ascii") as f:
        return f.read()
'''


class LabFleet:
    """The standard agents, started once; scenarios deploy their servers against them one at a time."""

    def __init__(
        self,
        workdir: Path,
        *,
        agents: Sequence[AgentSpec] = STANDARD_AGENTS,
        scenarios: Sequence[Scenario] = SCENARIOS,
        probe_timeout: float = PROBE_TIMEOUT_S,
    ) -> None:
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique; got {names}")
        self.workdir = Path(workdir)
        self.specs = {a.name: a for a in agents}
        self.scenarios = tuple(scenarios)
        self.index = {s.name: i for i, s in enumerate(self.scenarios, start=1)}
        self.probe_timeout = probe_timeout
        self.agents: dict[str, AgentProcess] = {}
        self.unavailable: dict[str, str] = {}  # agent name -> why it is not part of this fleet
        self.namespaces: dict[str, netns.Namespace] = {}
        self.inventory = self.workdir / "inventory.toml"
        self.acme = LabPKI("Acme Internal")
        self.rogue = LabPKI("Rogue")
        self.proxy = ProxyAuthority.create("Corp Proxy")
        self.aia = AiaServer(host="127.0.0.1")
        self.start_seconds = 0.0
        self._netns: netns.NetnsLab | None = None
        self._started = False

    def __enter__(self) -> LabFleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Start-up ---------------------------------------------------------------------------------------

    def start(self) -> LabFleet:
        if self._started:
            raise RuntimeError("this lab fleet is already started")
        self._started = True
        started = time.perf_counter()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.aia.start()
            for spec in self.specs.values():
                reason = next(filter(None, (requirement_missing(r) for r in sorted(spec.requires))), None)
                if reason:
                    self.unavailable[spec.name] = reason
            pki_dir = self._fleet_pki() if self._wanted(lambda s: s.namespace) else None
            self._make_namespaces()
            self._start_agents(pki_dir)
            self._write_inventory(pki_dir)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - started
        return self

    def _wanted(self, predicate: Callable[[AgentSpec], bool]) -> list[AgentSpec]:
        return [s for s in self.specs.values() if s.name not in self.unavailable and predicate(s)]

    def _fleet_pki(self) -> Path:
        from ...agent.pki.fleet_ca import init_fleet_ca, issue

        pki_dir = self.workdir / "fleet-pki"
        init_fleet_ca(pki_dir)
        issue(pki_dir, "coordinator", "coordinator")
        for spec in self._wanted(lambda s: s.namespace):
            issue(pki_dir, "agent", spec.name)
        return pki_dir

    def _make_namespaces(self) -> None:
        wanted = self._wanted(lambda s: s.namespace)
        if not wanted:
            return
        self._netns = netns.NetnsLab()
        self._netns.__enter__()
        for spec in wanted:
            self.namespaces[spec.name] = self._netns.create()
        for name, namespace in self.namespaces.items():
            namespace.write_hosts(self._hosts_entries(name))

    def _hosts_entries(self, agent: str) -> dict[str, list[str]]:
        entries: dict[str, list[str]] = {}
        for scenario in self.scenarios:
            index = self.index[scenario.name]
            route = dict(scenario.resolve_for).get(agent)
            if route == OUTSIDE:
                entries[scenario.host] = [self.namespaces[agent].root_address]
            elif isinstance(route, int):
                entries[scenario.host] = [scenario_address(index, route)]
            else:
                entries[scenario.host] = [scenario_address(index, slot) for slot in range(1, scenario.slots + 1)]
        return entries

    def _hosts_file(self, agent: str) -> Path:
        """The shared file, or the agent's own when some scenario routes it differently."""
        own = any(agent in dict(s.resolve_for) for s in self.scenarios)
        path = self.workdir / ("hosts" if not own else f"hosts-{agent}")
        if not path.exists():
            path.write_text(netns.hosts_text(self._hosts_entries(agent if own else "")))
        return path

    def _bundle(self, trust: Trust) -> Path:
        path = self.workdir / f"bundle-{trust}.pem"
        if not path.exists():
            data = _system_bundle()
            if trust in ("private", "private+proxy"):
                data += self.acme.root_pem()
            if trust == "private+proxy":
                data += self.proxy.root_pem()
            write_pem(path, data)
        return path

    def _environment(self, spec: AgentSpec) -> dict[str, str]:
        bundle = self._bundle(spec.trust)
        env = trust_env(self.workdir, bundle)
        if not spec.certifi_package:
            shadow = self._certifi_shadow(spec.trust)
            (shadow / "certifi").mkdir(parents=True, exist_ok=True)
            init, text = shadow / "certifi" / "__init__.py", _CERTIFI_AS_DEBIAN.format(path=str(bundle))
            # Written once: agents started meanwhile import it, and a rewrite would show them a truncated module.
            if not init.exists() or init.read_text() != text:
                init.write_text(text)
        if spec.tls12_only:
            conf = self.workdir / "openssl-tls12-only.cnf"
            conf.write_text(_TLS12_ONLY_CONF)
            env["OPENSSL_CONF"] = str(conf)
        if spec.runtimes == "found":
            env.pop("JAVA_HOME", None)  # found on PATH, declared by nothing
            env["PATH"] = os.pathsep.join(p for p in (str(self._lab_jre() / "bin"), env.get("PATH", "")) if p)
        elif spec.runtimes == "declared":
            env["JAVA_HOME"] = str(self._lab_jre())
            env["NODE_EXTRA_CA_CERTS"] = str(self._bundle("system"))
        if spec.clock:
            env = faketime.faketime_env(env, spec.clock)
        return env

    def _lab_jre(self) -> Path:
        """A JRE home as a host has one, for agents whose runtimes are not this machine's: bin/java (never
        run: the agent only resolves it to its home) and lib/security/cacerts with the public roots only."""
        home = self.workdir / "lab-jre"
        cacerts = home / "lib" / "security" / "cacerts"
        if not cacerts.exists():
            (home / "bin").mkdir(parents=True, exist_ok=True)
            java = home / "bin" / "java"
            java.write_text("#!/bin/sh\necho 'the lab JRE: only its cacerts is real' >&2\nexit 1\n")
            java.chmod(0o755)
            cacerts.parent.mkdir(parents=True, exist_ok=True)
            cacerts.write_bytes(_truststore_of(self._bundle("system")))
        return home

    def _mozilla_certifi(self) -> Path:
        """A site-packages directory with a copy of the certifi package: Mozilla's roots, not the private one."""
        site = self.workdir / "certifi-mozilla"
        if not (site / "certifi").exists():
            found = importlib.util.find_spec("certifi")
            if found is None or found.origin is None:
                raise RuntimeError("the certifi package is not installed")
            shutil.copytree(Path(found.origin).parent, site / "certifi")
        return site

    def _local_bin(self) -> Path:
        """What LOCAL_BIN shows a "found" host: a python3 (this machine's base interpreter, not the agent's
        environment) whose certifi is Mozilla's: its own when it has one, else the copy in the directory the
        wrapper names, which the agent's question to an interpreter puts first on its path."""
        directory = self.workdir / "usr-local-bin"
        python = directory / "python3"
        if not python.exists():
            directory.mkdir(parents=True, exist_ok=True)
            base = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
            site = shlex.quote(str(self._mozilla_certifi()))
            python.write_text(f'#!/bin/sh\nexec {shlex.quote(base)} "$@" {site}\n')
            python.chmod(0o755)
        return directory

    def _host_view(self, spec: AgentSpec) -> list[str]:
        """The prefix that gives the agent its host's view of runtime files (see HostRuntimes)."""
        if spec.runtimes == "named":
            return self._java_view(spec.trust)
        if spec.runtimes == "found":
            return netns.mount_view_prefix([(self._local_bin(), LOCAL_BIN)])
        return []

    def _certifi_shadow(self, trust: Trust) -> Path:
        return self.workdir / f"certifi-{trust}"

    def _runtime_args(self, spec: AgentSpec) -> list[str]:
        """The runtimes a lab agent judges, named so that this machine's own Pythons cannot change a verdict:
        a site-packages directory whose certifi returns the host bundle (as Debian's python3-certifi does),
        or, for certifi-only, this very interpreter's environment and its certifi package (Mozilla's
        bundle); and the Java an agent here would find by itself, with its cacerts (seen through the
        mount view, when there is one). Hosts whose runtimes are "found" search for them instead; "declared"
        ones name a copy of Mozilla's certifi (their Java comes from JAVA_HOME)."""
        if spec.runtimes == "found":
            return ["--runtime-search"]
        if spec.runtimes == "declared":
            return ["--no-runtime-search", "--runtime", f"python={self._mozilla_certifi()}"]
        python = str(self._certifi_shadow(spec.trust)) if not spec.certifi_package else sys.executable
        args = ["--no-runtime-search", "--runtime", f"python={python}"]
        java = _system_java()
        if java is not None:
            args += ["--runtime", f"java={java[0]}"]
        return args

    def _java_view(self, trust: Trust) -> list[str]:
        """A prefix under which Java's system cacerts holds the roots this host trusts (as
        ca-certificates-java keeps it on a host where the root was installed), or [] when not needed."""
        system = _system_java_keystore()
        if trust == "system" or system is None or requirement_missing("java-view") is not None:
            return []
        path = self.workdir / f"java-cacerts-{trust}.p12"
        if not path.exists():
            path.write_bytes(_java_truststore(system, self._bundle(trust)))
        return netns.mount_view_prefix([(path, str(system))])

    def _start_one(self, spec: AgentSpec, pki_dir: Path | None) -> AgentProcess:
        labels = [("host", "namespace")] if spec.namespace else []
        view = self._host_view(spec)
        if spec.namespace:
            assert pki_dir is not None
            namespace = self.namespaces[spec.name]
            return start_agent(
                spec.name,
                self.workdir / "agents",
                env=self._environment(spec),
                labels=labels,
                host=namespace.address,
                insecure=False,
                extra_args=["--pki-dir", str(pki_dir), *self._runtime_args(spec)],
                wrapper=[*namespace.exec_prefix, *view],
            )
        return start_agent(
            spec.name,
            self.workdir / "agents",
            env=self._environment(spec),
            labels=labels,
            extra_args=[
                "--hosts-file",
                str(self._hosts_file(spec.name)),
                *(["--fetch-aia"] if spec.fetch_aia else []),
                *self._runtime_args(spec),
            ],
            wrapper=view,
        )

    def _start_agents(self, pki_dir: Path | None) -> None:
        specs = self._wanted(lambda s: True)
        for spec in specs:  # files first: the threads below only read them
            self._environment(spec)
            self._host_view(spec)
            if not spec.namespace:
                self._hosts_file(spec.name)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = {spec.name: pool.submit(self._start_one, spec, pki_dir) for spec in specs}
            errors = []
            for name, future in futures.items():
                try:
                    self.agents[name] = future.result()
                except Exception as error:
                    errors.append(f"{name}: {error}")
        if errors:
            raise RuntimeError("lab agents did not start: " + "; ".join(errors))
        for spec in specs:
            if spec.stopped:
                self.agents[spec.name].stop()

    def _write_inventory(self, pki_dir: Path | None) -> None:
        parts = [f'[coordinator]\npki_dir = "{pki_dir}"\n'] if pki_dir else []
        parts += [agent.inventory_entry() for agent in self.agents.values()]
        self.inventory.write_text("\n".join(parts))

    # Use --------------------------------------------------------------------------------------------

    def missing(self, scenario: Scenario) -> str | None:
        """Why `scenario` cannot run in this fleet, or None."""
        for name in scenario.agents:
            if name not in self.specs:
                return f"agent {name} is not part of this lab fleet"
            if name in self.unavailable:
                return f"agent {name} is unavailable: {self.unavailable[name]}"
        for requirement in sorted(scenario.needs):
            reason = requirement_missing(requirement)
            if reason:
                return reason
        return None

    @contextlib.contextmanager
    def deploy(self, scenario: Scenario) -> Iterator[Deployment]:
        """Start the scenario's servers on its addresses and one shared port; stop them afterwards."""
        reason = self.missing(scenario)
        if reason:
            raise RuntimeError(f"scenario {scenario.name} cannot run here: {reason}")
        index = self.index[scenario.name]
        stage: FleetStage | None = None
        for attempt in range(DEPLOY_ATTEMPTS):
            stage = FleetStage(self, scenario, index, _free_port(scenario_address(index, 1)))
            try:
                scenario.build(stage)
                break
            except OSError as error:
                stage.stop()
                if error.errno != errno.EADDRINUSE or attempt == DEPLOY_ATTEMPTS - 1:
                    raise
            except BaseException:
                stage.stop()
                raise
        assert stage is not None
        try:
            yield Deployment(scenario, stage.port, stage)
        finally:
            stage.stop()

    def probe(
        self,
        deployment: Deployment,
        *extra: str,
        agents: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ProbeRun:
        """`tlsfleet probe` against the deployment with --json, from the scenario's agents or `agents`; under
        libfaketime when the scenario moves the coordinator's clock (or in `env` when given)."""
        scenario = deployment.scenario
        if env is None and scenario.coordinator_clock:
            env = faketime.faketime_env(None, scenario.coordinator_clock)
        selector = ",".join(agents) if agents is not None else scenario.selector
        argv = (
            "probe",
            deployment.target,
            "--inventory",
            str(self.inventory),
            "--no-local",
            "--json",
            "--agents",
            selector,
            "--timeout",
            f"{self.probe_timeout:g}",
            *scenario.probe_args,
            *extra,
        )
        started = time.perf_counter()
        done = subprocess.run(
            [*tlsfleet_command(), *argv],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
        )
        seconds = time.perf_counter() - started
        try:
            report = json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            report = None
        return ProbeRun(argv, done.returncode, report, done.stderr, seconds)

    def run(self, scenario: Scenario) -> ScenarioRun:
        """Deploy, probe, and judge one scenario."""
        with self.deploy(scenario) as deployment:
            probe = self.probe(deployment)
            target = deployment.target
        if probe.report is None:
            problem = f"the CLI printed no JSON report (exit {probe.exit_code}): {probe.stderr.strip()[-800:]}"
            return ScenarioRun(scenario, target, probe, problem, problem, False)
        symptom = scenario.symptom(probe.vantages())
        findings = probe.findings()
        finding_problem = None if findings is None else check_findings(scenario.expect, findings)
        return ScenarioRun(scenario, target, probe, symptom, finding_problem, findings is not None)

    # Shutdown ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every agent by PID, the AIA server, and remove the namespaces. Safe to call twice."""
        errors: list[str] = []
        for name, agent in list(self.agents.items()):
            try:
                agent.stop()
            except Exception as error:
                errors.append(f"agent {name} (pid {agent.pid}): {error}")
        try:
            self.aia.stop()
        except Exception as error:
            errors.append(f"AIA server: {error}")
        if self._netns is not None:
            try:
                self._netns.close()
            except netns.NetnsError as error:
                errors.append(str(error))
            self._netns = None
        if errors:
            raise RuntimeError("lab fleet clean-up failed: " + "; ".join(errors))


def _java_truststore(system: Path, bundle: Path) -> bytes:
    """A PKCS#12 Java truststore (password 'changeit') holding the system cacerts' roots and the bundle's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.utils import CryptographyDeprecationWarning

    from ...agent.trust.certinfo import fingerprint
    from ...agent.trust.stores import KIND_JAVA, load_store

    roots = {
        fingerprint(c.public_bytes(serialization.Encoding.DER)): c
        for c in load_store("java", system, kind=KIND_JAVA).roots
    }
    with warnings.catch_warnings():
        # System bundles hold a root with a non-positive serial; it is still a root the host trusts.
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
        bundle_roots = x509.load_pem_x509_certificates(bundle.read_bytes())
    for cert in bundle_roots:
        roots.setdefault(fingerprint(cert.public_bytes(serialization.Encoding.DER)), cert)
    entries = [pkcs12.PKCS12Certificate(cert, f"root-{fp[:16]}".encode()) for fp, cert in sorted(roots.items())]
    return pkcs12.serialize_java_truststore(entries, serialization.BestAvailableEncryption(b"changeit"))


def _truststore_of(bundle: Path) -> bytes:
    """A PKCS#12 Java truststore (password 'changeit') holding exactly the roots of a PEM bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.utils import CryptographyDeprecationWarning

    from ...agent.trust.certinfo import fingerprint

    with warnings.catch_warnings():
        # System bundles hold a root with a non-positive serial; it is still a root the host trusts.
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
        certs = x509.load_pem_x509_certificates(bundle.read_bytes())
    roots = {fingerprint(c.public_bytes(serialization.Encoding.DER)): c for c in certs}
    entries = [pkcs12.PKCS12Certificate(cert, f"root-{fp[:16]}".encode()) for fp, cert in sorted(roots.items())]
    return pkcs12.serialize_java_truststore(entries, serialization.BestAvailableEncryption(b"changeit"))


def _free_port(host: str) -> int:
    """A port free on `host` right now; the scenario's servers all bind it, each on its own address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
