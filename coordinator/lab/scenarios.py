"""Named failure scenarios on real hosts: a standard fleet of agents that differ the way real hosts do,
target servers with real faults, and what tlsfleet should conclude about each.

`LabFleet` starts the standard agents once (loopback agents, plus namespace agents when run as root)
and writes an inventory for them. Each `Scenario` starts its own servers on its own 127.88.<n>.x
addresses, probes them through the real CLI (`tlsfleet probe ... --json`) from a chosen set of agents,
and says what the top finding must be. Names are `api.<scenario>.lab.test`; the loopback agents resolve
them through one shared `--hosts-file`, the namespace agents through their own /etc/hosts.

The agents (see `STANDARD_AGENTS`):

- trusting, trusting-2: the private "Acme Internal" root is in the OpenSSL store (SSL_CERT_FILE), in
  the bundle their certifi returns (as Debian's python3-certifi returns the system bundle), and in
  Java's cacerts (a private mount view of that one file, as ca-certificates-java keeps it in step).
- no-private-root: the system bundle only.
- certifi-only: OpenSSL trusts the private root, the certifi package (its own Mozilla bundle) does not.
- skew-ahead, skew-behind: wall clock two days ahead / behind (libfaketime).
- tls12-only: OPENSSL_CONF caps OpenSSL's default contexts at TLS 1.2.
- stale-pin: its hosts file pins one name to an old backend.
- internal-dns (root): a network namespace whose /etc/hosts sends one name to a stale backend.
- behind-proxy (root): a network namespace where a TLS-intercepting proxy answers on the servers'
  address; the host trusts the proxy's CA, as managed corporate machines do.
- gone: in the inventory, but stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import importlib.util
import json
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tlsfleet.coordinator.diagnosis.model import Cause, Severity
from tlsfleet.coordinator.lab import faketime, netns
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.aia_server import AiaServer
from tlsfleet.coordinator.lab.intercepting_proxy import ProxyAuthority, ProxyProcess, start_proxy_process
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

__all__ = [
    "OUTSIDE",
    "SCENARIOS",
    "STANDARD_AGENTS",
    "AgentSpec",
    "Deployment",
    "Expect",
    "LabFleet",
    "ProbeRun",
    "Requirement",
    "Scenario",
    "ScenarioRun",
    "Stage",
    "check_findings",
    "requirement_missing",
    "scenario_address",
    "scenario_named",
]

Requirement = Literal["root", "libfaketime", "certifi", "java-view"]
Trust = Literal["private", "system", "private+proxy"]
OUTSIDE: Literal["outside"] = "outside"  # a namespace agent resolves the name to its namespace's root side
Route = int | Literal["outside"]

PROBE_TIMEOUT_S = 8.0
CLI_TIMEOUT_S = 60.0
DEPLOY_ATTEMPTS = 3
ADDRESS_BASE = "127.88"  # scenario n serves on 127.88.<n>.<slot>
SKEW = "2d"
SKEW_MS = 2 * 86400 * 1000
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
    raise ValueError(f"requirement {requirement!r} is not known; accepted: root, libfaketime, certifi, java-view")


def _system_java_keystore() -> Path | None:
    """The Java cacerts an agent here reports as the 'java' store, if any."""
    from tlsfleet.agent.truststores import JAVA_SYSTEM_KEYSTORES

    return next((Path(p) for p in JAVA_SYSTEM_KEYSTORES if Path(p).is_file()), None)


# ---------------------------------------------------------------------------------------------- agents


@dataclass(frozen=True)
class AgentSpec:
    """One standard agent: how its host differs from a plain one."""

    name: str
    story: str
    trust: Trust = "private"
    certifi_package: bool = False  # True: certifi's own bundle; False: certifi returns the host bundle
    clock: str | None = None  # a libfaketime offset such as "+2d"
    tls12_only: bool = False
    namespace: bool = False  # a separate network namespace with its own /etc/hosts (root only)
    stopped: bool = False  # listed in the inventory, not running
    fetch_aia: bool = False  # may fetch a missing intermediate from the AIA URL (--fetch-aia)

    @property
    def requires(self) -> frozenset[Requirement]:
        needs: set[Requirement] = set()
        if self.clock:
            needs.add("libfaketime")
        if self.namespace:
            needs.add("root")
        if self.certifi_package:
            needs.add("certifi")
        return frozenset(needs)


STANDARD_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec("trusting", "the private root is installed; a well-kept host"),
    AgentSpec(
        "trusting-2",
        "a second well-kept host, so that one odd host stands out; it may fetch AIA URLs",
        fetch_aia=True,
    ),
    AgentSpec("no-private-root", "a host built from the plain image: public roots only", trust="system"),
    AgentSpec(
        "certifi-only",
        "OpenSSL trusts the private root; Python requests' certifi bundle does not",
        certifi_package=True,
    ),
    AgentSpec("skew-ahead", f"its clock runs {SKEW} ahead", clock=f"+{SKEW}"),
    AgentSpec("skew-behind", f"its clock runs {SKEW} behind", clock=f"-{SKEW}"),
    AgentSpec("tls12-only", "OpenSSL's system_default caps TLS at 1.2 (an old or hardened image)", tls12_only=True),
    AgentSpec("stale-pin", "an /etc/hosts pin left over from a migration sends one name to the old backend"),
    AgentSpec("internal-dns", "inside the network, split-horizon DNS answers with an internal address", namespace=True),
    AgentSpec(
        "behind-proxy",
        "behind a TLS-intercepting corporate proxy whose CA the host trusts",
        trust="private+proxy",
        namespace=True,
    ),
    AgentSpec("gone", "listed in the inventory, but its agent is stopped", stopped=True),
)


# ------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Expect:
    """The top finding: its cause and exactly the agents it names. cause None: nothing at warning or above."""

    cause: Cause | None
    agents: tuple[str, ...] = ()
    severity: Severity | None = None  # checked when given
    mentions: str = ""  # text the top finding's summary, evidence or fix must contain, when given

    def describe(self) -> str:
        if self.cause is None:
            return "no finding of warning or worse"
        severity = f" ({self.severity})" if self.severity is not None else ""
        return f"{self.cause.value}{severity} naming {', '.join(self.agents)}"


Vantages = Mapping[str, Mapping[str, Any]]  # agent name -> its entry in the report's "vantages"
Symptom = Callable[[Vantages], str | None]  # None when the fault is visible as expected


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    agents: tuple[str, ...]
    expect: Expect
    build: Callable[[Stage], None]
    symptom: Symptom
    probe_args: tuple[str, ...] = ()
    host_name: str = ""  # default api.<name>.lab.test
    slots: int = 1  # how many of the scenario's addresses the shared hosts file lists for the name
    resolve_for: tuple[tuple[str, Route], ...] = ()  # agents that resolve the name differently
    needs: frozenset[Requirement] = frozenset()  # beyond what its agents need

    @property
    def host(self) -> str:
        return self.host_name or f"api.{self.name}.lab.test"

    @property
    def selector(self) -> str:
        return ",".join(self.agents)

    def requires(self, agents: Mapping[str, AgentSpec] | None = None) -> frozenset[Requirement]:
        specs = agents or {a.name: a for a in STANDARD_AGENTS}
        needs = set(self.needs)
        for name in self.agents:
            needs |= specs[name].requires
        return frozenset(needs)


class Stage:
    """What a scenario's build step works with: the lab's CAs, its addresses, one port, and the servers it starts."""

    def __init__(self, fleet: LabFleet, scenario: Scenario, index: int, port: int) -> None:
        self.fleet = fleet
        self.scenario = scenario
        self.index = index
        self.port = port
        self.servers: list[TlsServer] = []
        self.processes: list[ProxyProcess] = []

    @property
    def host(self) -> str:
        return self.scenario.host

    @property
    def acme(self) -> LabPKI:
        return self.fleet.acme

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

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        for server in self.servers:
            server.stop()
        self.processes.clear()
        self.servers.clear()


def scenario_address(index: int, slot: int) -> str:
    if not 1 <= index <= 254 or not 1 <= slot <= 254:
        raise ValueError(f"scenario {index} slot {slot} is out of range; accepted: 1-254 each")
    return f"{ADDRESS_BASE}.{index}.{slot}"


# Certificates ----------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _good(stage: Stage, *names: str) -> ServedIdentity:
    leaf = stage.acme.issue_leaf(*(names or (stage.host,)))
    return ServedIdentity.of(leaf, stage.acme.intermediate)


def _expired(stage: Stage) -> ServedIdentity:
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=90), not_after=now - timedelta(days=1))
    return ServedIdentity.of(leaf, stage.acme.intermediate)


# Builds ----------------------------------------------------------------------------------------------


def _build_healthy(stage: Stage) -> None:
    stage.serve(_good(stage))


def _build_expired(stage: Stage) -> None:
    stage.serve(_expired(stage))


def _build_not_yet_valid(stage: Stage) -> None:
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now + timedelta(days=10), not_after=now + timedelta(days=100))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_expiring_soon(stage: Stage) -> None:
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=85), not_after=now + timedelta(days=5))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_wrong_name(stage: Stage) -> None:
    stage.serve(_good(stage, f"www.{stage.scenario.name}.lab.test", f"{stage.scenario.name}.lab.test"))


def _build_wildcard_too_deep(stage: Stage) -> None:
    # *.wildcard-too-deep.lab.test covers one label, not api.eu.wildcard-too-deep.lab.test.
    stage.serve(_good(stage, f"*.{stage.scenario.name}.lab.test"))


def _build_incomplete_chain(stage: Stage) -> None:
    path = f"/{stage.scenario.name}/intermediate.der"
    url = stage.fleet.aia.add(path, stage.acme.intermediate.der)
    leaf = stage.acme.issue_leaf(stage.host, aia_ca_issuers_url=url)
    stage.serve(ServedIdentity.of(leaf))


def _build_self_signed(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(stage.acme.self_signed_leaf(stage.host)))


def _build_untrusted_root(stage: Stage) -> None:
    rogue = stage.fleet.rogue
    stage.serve(ServedIdentity.of(rogue.issue_leaf(stage.host), rogue.intermediate, rogue.root))


def _build_sni_default(stage: Stage) -> None:
    default = _good(stage, f"default.{stage.scenario.name}.lab.test")
    stage.serve(default, by_sni={stage.host: _good(stage)})


def _build_inconsistent_backends(stage: Stage) -> None:
    stage.serve(_good(stage), slot=1)
    stage.serve(_expired(stage), slot=2)


def _build_stale_pin(stage: Stage) -> None:
    stage.serve(_good(stage), slot=1)
    stage.serve(_expired(stage), slot=2)


def _build_split_horizon(stage: Stage) -> None:
    stage.serve(_good(stage))
    stage.serve(_expired(stage), on=stage.fleet.namespaces["internal-dns"].root_address)


def _build_interception(stage: Stage) -> None:
    stage.serve(_good(stage))
    stage.intercept_for("behind-proxy")


def _build_tls13_only(stage: Stage) -> None:
    stage.serve(_good(stage), min_version=ssl.TLSVersion.TLSv1_3)


def _build_closed_port(stage: Stage) -> None:
    """Nothing listens: the stage's port was free a moment ago and stays so."""


# Symptoms: what the vantages must show, before any conclusion ---------------------------------------


def _addresses(vantage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    result = vantage.get("result") or {}
    return list(result.get("addresses") or [])


def _answered(vantages: Vantages, agents: Sequence[str]) -> str | None:
    for agent in agents:
        if agent not in vantages:
            return f"{agent} is not among the vantages"
        if vantages[agent]["state"] != "ok":
            return f"{agent} did not answer: {vantages[agent]['state']} {vantages[agent]['error']}"
        if not _addresses(vantages[agent]):
            return f"{agent} probed no address"
    return None


def _native(expected: Mapping[str, str | tuple[str, ...]]) -> Symptom:
    """Every address each agent probed got this native verdict (or one of these)."""

    def check(vantages: Vantages) -> str | None:
        problem = _answered(vantages, list(expected))
        if problem:
            return problem
        for agent, verdict in expected.items():
            accepted = (verdict,) if isinstance(verdict, str) else verdict
            seen = [a["native"]["verdict"] for a in _addresses(vantages[agent])]
            if any(v not in accepted for v in seen):
                return f"{agent}: native verdicts {seen}, expected {' or '.join(accepted)}"
        return None

    return check


def _all(*checks: Symptom) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for one in checks:
            problem = one(vantages)
            if problem:
                return problem
        return None

    return check


def _leaf(vantages: Vantages, agent: str, index: int = 0) -> Mapping[str, Any]:
    certificates = _addresses(vantages[agent])[index].get("certificates") or [{}]
    return certificates[0]


def _expiring_in_days(agents: Sequence[str], at_most: float) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            not_after = datetime.fromisoformat(_leaf(vantages, agent)["not_after"])
            left = (not_after - datetime.now(UTC)).total_seconds() / 86400
            if not 0 < left <= at_most:
                return f"{agent}: the leaf has {left:.1f} days left, expected at most {at_most:g}"
        return None

    return check


def _chain_length(agents: Sequence[str], length: int, *, aia: bool = False) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            certificates = _addresses(vantages[agent])[0].get("certificates") or []
            if len(certificates) != length:
                return f"{agent}: {len(certificates)} certificates served, expected {length}"
            if aia and not certificates[0].get("aia_ca_issuers"):
                return f"{agent}: the leaf carries no AIA caIssuers URL"
        return None

    return check


def _clock_offset(agent: str, expected_ms: float, tolerance_ms: float = 60_000) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        offset = (vantages[agent].get("clock") or {}).get("offset_ms")
        if offset is None or abs(offset - expected_ms) > tolerance_ms:
            return f"{agent}: clock offset {offset} ms, expected about {expected_ms:+.0f} ms"
        return None

    return check


def _issuer_contains(expected: Mapping[str, str]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, text in expected.items():
            issuer = _leaf(vantages, agent).get("issuer", "")
            if text not in issuer:
                return f"{agent}: leaf issuer {issuer!r}, expected one naming {text!r}"
        return None

    return check


def _resolves(expected: Mapping[str, Callable[[str], bool]], what: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, accept in expected.items():
            addresses = (vantages[agent].get("result") or {}).get("resolution", {}).get("addresses", [])
            if not addresses or not all(accept(a) for a in addresses):
                return f"{agent}: resolved to {addresses}, expected {what}"
        return None

    return check


def _two_backends(agents: Sequence[str]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            rows = _addresses(vantages[agent])
            leaves = {(r.get("certificates") or [{}])[0].get("sha256") for r in rows}
            verdicts = sorted(r["native"]["verdict"] for r in rows)
            if len(rows) != 2 or len(leaves) != 2 or verdicts != ["expired", "ok"]:
                return f"{agent}: {len(rows)} addresses, {len(leaves)} leaves, verdicts {verdicts}"
        return None

    return check


def _handshake(expected: Mapping[str, Callable[[Mapping[str, Any]], bool]], what: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, accept in expected.items():
            for address in _addresses(vantages[agent]):
                if not accept(address):
                    return f"{agent}: handshake {address['handshake']}, connect {address['connect_failure']}; {what}"
        return None

    return check


def _states(expected: Mapping[str, str]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, state in expected.items():
            seen = vantages.get(agent, {}).get("state")
            if seen != state:
                return f"{agent}: state {seen}, expected {state}"
        return None

    return check


def _san_lacks(agents: Sequence[str], name: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            san = _leaf(vantages, agent).get("san", [])
            if name in san:
                return f"{agent}: the leaf served covers {name}; expected the default certificate"
        return None

    return check


_PAIR = ("trusting", "trusting-2")
# Scenarios whose expected top finding is below critical (or none at all): on a machine whose Java cacerts
# lacks the lab's private root, that warning would outrank them unless agents get a view with the root.
_QUIET: frozenset[Requirement] = frozenset({"java-view"})


def _catalogue() -> tuple[Scenario, ...]:
    pair_ok = _native(dict.fromkeys(_PAIR, "ok"))
    return (
        Scenario(
            "healthy",
            "A valid certificate from the private CA, served with its intermediate: nothing to report.",
            _PAIR,
            Expect(None),
            _build_healthy,
            pair_ok,
            needs=_QUIET,
        ),
        Scenario(
            "expired",
            "The certificate expired yesterday; every host sees it at true time: the server must renew.",
            _PAIR,
            Expect(Cause.EXPIRED, _PAIR),
            _build_expired,
            _native(dict.fromkeys(_PAIR, "expired")),
        ),
        Scenario(
            "not-yet-valid",
            "A certificate issued with a start date ten days ahead: valid nowhere yet.",
            _PAIR,
            Expect(Cause.NOT_YET_VALID, _PAIR),
            _build_not_yet_valid,
            _native(dict.fromkeys(_PAIR, "not_yet_valid")),
        ),
        Scenario(
            "expiring-soon",
            "Everything verifies today, but the certificate expires in five days.",
            _PAIR,
            Expect(Cause.EXPIRING_SOON, _PAIR, Severity.CRITICAL),
            _build_expiring_soon,
            _all(pair_ok, _expiring_in_days(_PAIR, 5.1)),
        ),
        Scenario(
            "wrong-name",
            "The server presents the certificate of www.wrong-name.lab.test for api.wrong-name.lab.test.",
            _PAIR,
            Expect(Cause.HOSTNAME_MISMATCH, _PAIR),
            _build_wrong_name,
            _native(dict.fromkeys(_PAIR, "hostname_mismatch")),
        ),
        Scenario(
            "wildcard-too-deep",
            "*.wildcard-too-deep.lab.test covers one label; the name has two.",
            _PAIR,
            Expect(Cause.HOSTNAME_MISMATCH, _PAIR),
            _build_wildcard_too_deep,
            _native(dict.fromkeys(_PAIR, "hostname_mismatch")),
            host_name="api.eu.wildcard-too-deep.lab.test",
        ),
        Scenario(
            "incomplete-chain",
            "The server sends its leaf only; the intermediate is reachable through the leaf's AIA URL.",
            _PAIR,
            Expect(Cause.INCOMPLETE_CHAIN, _PAIR, mentions="returns the missing certificate and completes the chain"),
            _build_incomplete_chain,
            _all(
                # OpenSSL 3 says 20 (unknown issuer) for a lone leaf; older releases said 21.
                _native(dict.fromkeys(_PAIR, ("unknown_issuer", "leaf_only_unverifiable"))),
                _chain_length(_PAIR, 1, aia=True),
            ),
        ),
        Scenario(
            "self-signed",
            "A quick self-signed certificate went to production.",
            _PAIR,
            Expect(Cause.UNTRUSTED_CHAIN, _PAIR),
            _build_self_signed,
            _native(dict.fromkeys(_PAIR, "self_signed")),
        ),
        Scenario(
            "untrusted-root",
            "A chain to a root no host trusts (it is even sent along).",
            _PAIR,
            Expect(Cause.UNTRUSTED_CHAIN, _PAIR),
            _build_untrusted_root,
            _native(dict.fromkeys(_PAIR, "untrusted_root")),
        ),
        Scenario(
            "private-ca-missing",
            "The same private-CA chain everywhere; one host was never given the private root.",
            (*_PAIR, "no-private-root"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("no-private-root",)),
            _build_healthy,
            _native({"trusting": "ok", "trusting-2": "ok", "no-private-root": "unknown_issuer"}),
        ),
        Scenario(
            "runtime-store",
            "OpenSSL on the host trusts the chain; Python requests there (certifi) does not.",
            ("trusting", "certifi-only"),
            Expect(Cause.RUNTIME_STORE_DIFFERS, ("certifi-only",)),
            _build_healthy,
            _all(
                _native({"trusting": "ok", "certifi-only": "ok"}),
                _store_verdicts({"trusting": ("certifi", "ok"), "certifi-only": ("certifi", "unknown_issuer")}),
            ),
            needs=_QUIET,
        ),
        Scenario(
            "clock-behind",
            f"A certificate renewed an hour ago; one host's clock is {SKEW} behind and sees it as not yet valid.",
            ("trusting", "skew-behind"),
            Expect(Cause.CLOCK_SKEW, ("skew-behind",)),
            _build_healthy,
            _all(
                _native({"trusting": "ok", "skew-behind": "not_yet_valid"}),
                _clock_offset("skew-behind", -SKEW_MS),
            ),
        ),
        Scenario(
            "clock-ahead",
            f"One host's clock runs {SKEW} ahead: it still verifies, but certificates near their end fail there first.",
            ("trusting", "skew-ahead"),
            Expect(Cause.CLOCK_SKEW, ("skew-ahead",)),
            _build_healthy,
            _all(_native({"trusting": "ok", "skew-ahead": "ok"}), _clock_offset("skew-ahead", SKEW_MS)),
            needs=_QUIET,
        ),
        Scenario(
            "sni-default",
            "The right certificate is chosen by SNI; clients that send none get the server's default one.",
            _PAIR,
            Expect(Cause.SNI_DIFFERENCE, _PAIR),
            _build_sni_default,
            _san_lacks(_PAIR, "api.sni-default.lab.test"),
            probe_args=("--no-sni",),
        ),
        Scenario(
            "inconsistent-backends",
            "Two backends behind one name; a half-finished deploy left the old, expired certificate on one.",
            _PAIR,
            Expect(Cause.INCONSISTENT_BACKENDS, _PAIR),
            _build_inconsistent_backends,
            _two_backends(_PAIR),
            slots=2,
        ),
        Scenario(
            "stale-pin",
            "One host's /etc/hosts still pins the name to the old backend, which serves an expired certificate.",
            (*_PAIR, "stale-pin"),
            Expect(Cause.DNS_DIFFERENCE, (*_PAIR, "stale-pin")),
            _build_stale_pin,
            _all(
                _native({"trusting": "ok", "trusting-2": "ok", "stale-pin": "expired"}),
                _resolves(
                    {"stale-pin": lambda a: a.endswith(".2"), "trusting": lambda a: a.endswith(".1")},
                    "the old backend (.2) for stale-pin, the current one (.1) elsewhere",
                ),
            ),
            resolve_for=(("stale-pin", 2),),
        ),
        Scenario(
            "split-horizon",
            "Inside the network, DNS answers with an internal load balancer that still has the expired certificate.",
            (*_PAIR, "internal-dns"),
            Expect(Cause.DNS_DIFFERENCE, (*_PAIR, "internal-dns")),
            _build_split_horizon,
            _all(
                _native({"trusting": "ok", "trusting-2": "ok", "internal-dns": "expired"}),
                _resolves(
                    {"internal-dns": lambda a: a.startswith("10.250."), "trusting": lambda a: a.startswith("127.")},
                    "an internal address inside, loopback outside",
                ),
            ),
            resolve_for=(("internal-dns", OUTSIDE),),
        ),
        Scenario(
            "interception",
            "Same address, different issuer: a corporate proxy answers for the server on one host.",
            (*_PAIR, "behind-proxy"),
            Expect(Cause.TLS_INTERCEPTION, ("behind-proxy",)),
            _build_interception,
            _all(
                _native({"trusting": "ok", "trusting-2": "ok", "behind-proxy": "ok"}),
                _issuer_contains({"trusting": "Acme Internal", "behind-proxy": "Corp Proxy CA"}),
            ),
            needs=_QUIET,
        ),
        Scenario(
            "tls13-only",
            "The server accepts TLS 1.3 only; one host's OpenSSL stops at TLS 1.2.",
            ("trusting", "tls12-only"),
            Expect(Cause.PROTOCOL_MISMATCH, ("tls12-only",)),
            _build_tls13_only,
            _handshake(
                {
                    "trusting": lambda a: a["handshake"]["tls_version"] == "TLSv1.3",
                    "tls12-only": lambda a: a["handshake"]["failure"] in ("tls_alert", "protocol_error"),
                },
                "expected TLS 1.3 on trusting and a protocol failure on tls12-only",
            ),
        ),
        Scenario(
            "closed-port",
            "Nothing listens on the port: a network fact, not a TLS verdict.",
            _PAIR,
            Expect(Cause.UNREACHABLE, _PAIR),
            _build_closed_port,
            _handshake(dict.fromkeys(_PAIR, lambda a: a["connect_failure"] == "refused"), "expected refused"),
        ),
        Scenario(
            "agent-down",
            "The server is fine, but one agent in the inventory is not running: say what it could not see.",
            ("trusting", "gone"),
            Expect(Cause.VANTAGE_UNAVAILABLE, ("gone",)),
            _build_healthy,
            _all(_native({"trusting": "ok"}), _states({"gone": "offline"})),
            needs=_QUIET,
        ),
    )


def _store_verdicts(expected: Mapping[str, tuple[str, str]]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, (store, verdict) in expected.items():
            for address in _addresses(vantages[agent]):
                seen = {s["store"]: s["at_agent_time"] for s in address.get("stores", [])}
                if seen.get(store) != verdict:
                    return f"{agent}: store {store} says {seen.get(store)}, expected {verdict}"
        return None

    return check


SCENARIOS: tuple[Scenario, ...] = _catalogue()


def scenario_named(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"scenario {name!r} is not known; accepted: {', '.join(s.name for s in SCENARIOS)}")


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
    stage: Stage

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
        from tlsfleet.agent.fleet_pki import init_fleet_ca, issue

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
            shadow = self.workdir / f"certifi-{spec.trust}"
            (shadow / "certifi").mkdir(parents=True, exist_ok=True)
            (shadow / "certifi" / "__init__.py").write_text(_CERTIFI_AS_DEBIAN.format(path=str(bundle)))
            env["PYTHONPATH"] = ":".join(filter(None, (str(shadow), env.get("PYTHONPATH", ""))))
        if spec.tls12_only:
            conf = self.workdir / "openssl-tls12-only.cnf"
            conf.write_text(_TLS12_ONLY_CONF)
            env["OPENSSL_CONF"] = str(conf)
        if spec.clock:
            env = faketime.faketime_env(env, spec.clock)
        return env

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
        labels = [("lab", "scenarios"), ("kind", "namespace" if spec.namespace else "loopback")]
        view = self._java_view(spec.trust)
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
                extra_args=["--pki-dir", str(pki_dir)],
                wrapper=[*namespace.exec_prefix, *view],
            )
        return start_agent(
            spec.name,
            self.workdir / "agents",
            env=self._environment(spec),
            labels=labels,
            extra_args=["--hosts-file", str(self._hosts_file(spec.name)), *(["--fetch-aia"] if spec.fetch_aia else [])],
            wrapper=view,
        )

    def _start_agents(self, pki_dir: Path | None) -> None:
        specs = self._wanted(lambda s: True)
        for spec in specs:  # files first: the threads below only read them
            self._environment(spec)
            self._java_view(spec.trust)
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
        stage: Stage | None = None
        for attempt in range(DEPLOY_ATTEMPTS):
            stage = Stage(self, scenario, index, _free_port(scenario_address(index, 1)))
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

    def probe(self, deployment: Deployment, *extra: str, agents: Sequence[str] | None = None) -> ProbeRun:
        """`tlsfleet probe` against the deployment with --json, from the scenario's agents or `agents`."""
        scenario = deployment.scenario
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

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _java_truststore(system: Path, bundle: Path) -> bytes:
    """A PKCS#12 Java truststore (password 'changeit') holding the system cacerts' roots and the bundle's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.utils import CryptographyDeprecationWarning

    from tlsfleet.agent.certinfo import fingerprint
    from tlsfleet.agent.truststores import KIND_JAVA, load_store

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


def _free_port(host: str) -> int:
    """A port free on `host` right now; the scenario's servers all bind it, each on its own address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
