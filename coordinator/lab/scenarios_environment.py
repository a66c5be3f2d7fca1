"""Lab scenarios where hosts differ in their environment rather than in what the server does: the address
family a host's resolver offers, a backend pool where each backend fails its own way, hosts that cannot
resolve or reach the name in three different ways, an SSL_CERT_FILE that overrides a system store, an
intermediate a host happens to hold, egress proxies that refuse the tunnel, and clocks near a certificate's
end. `EnvironmentFleet(workdir)` runs them like the standard catalogue; quiet ones (Expect(None)) must stay
quiet, as a healthy fleet does.

The agents, beside the standard trusting, trusting-2, skew-ahead, stale-pin and internal-dns (root; here a
namespace whose /etc/hosts lacks the name, so its resolver fails):

- v4-only: its resolver offers the name's IPv4 address only (no AAAA answer, as on a host without IPv6);
- pinned-dropped: an /etc/hosts pin to an address where SYNs are dropped (a full accept queue: a timeout);
- cached-intermediate: its OpenSSL store (SSL_CERT_FILE) holds the private root and, left over from a
  manual fix, the private intermediate as well;
- cert-file-override: the system bundle holds the private root (the root was installed), but SSL_CERT_FILE
  points at a bundle of public roots only, so OpenSSL-based clients that read that variable miss it;
- proxy-forbids, proxy-wants-auth: HTTPS_PROXY names the site's egress proxy, which refuses CONNECT to the
  target's port (403) / wants credentials this host does not send (407);
- proxy-bypassed: the same HTTPS_PROXY, with NO_PROXY exempting the lab's domain: it connects directly.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from ..diagnosis.model import Cause, Severity
from . import netns
from .fleet import LabFleet
from .intercepting_proxy import InterceptingProxy
from .pki import write_pem
from .scenarios import (
    STANDARD_AGENTS,
    AgentSpec,
    Expect,
    Requirement,
    Scenario,
    Stage,
    _expired,
    _good,
    _now,
)
from .symptoms import Symptom, Vantages, all_of, clock_offset, handshake, native, resolves, store_verdicts
from .tls_server import ServedIdentity

__all__ = [
    "ENVIRONMENT_AGENTS",
    "ENVIRONMENT_LAB_AGENTS",
    "ENVIRONMENT_SCENARIOS",
    "IPV6_LOOPBACK",
    "EnvironmentFleet",
    "EnvironmentScenario",
    "HostSpec",
    "Tarpit",
]

IPV6_LOOPBACK = "::1"
LAB_DOMAIN = ".lab.test"
# How a host's HTTPS_PROXY treats the lab's names: refuses CONNECT (403), wants credentials (407), or is
# bypassed through NO_PROXY.
ProxyUse = Literal["", "forbids", "wants-auth", "bypassed"]
_PROXY_STATUS = {"forbids": 403, "wants-auth": 407, "bypassed": 403}
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # where Debian's OpenSSL and certifi find the system roots


@dataclass(frozen=True)
class HostSpec(AgentSpec):
    """An agent whose host differs in its trust files or its proxy: what its SSL_CERT_FILE holds beyond its
    trust, whether its system bundle (seen through a mount view) holds the private root while SSL_CERT_FILE
    does not, and how its HTTPS_PROXY treats the lab's names (`ProxyUse`)."""

    store_holds_intermediate: bool = False
    system_bundle_has_root: bool = False
    proxy: ProxyUse = ""
    cert_file_missing: bool = False  # SSL_CERT_FILE names a file that is not there (a path from another distribution)

    @property
    def requires(self) -> frozenset[Requirement]:
        needs = set(super().requires)
        if self.system_bundle_has_root:
            needs.add("mount-view")
        return frozenset(needs)


@dataclass(frozen=True)
class EnvironmentScenario(Scenario):
    """A scenario whose name may also have an IPv6 address (::1) for every agent it does not route, and may
    be missing from some agents' hosts files (their resolver then answers, or fails, for them)."""

    ipv6: bool = False
    unresolved_for: tuple[str, ...] = ()


class Tarpit:
    """A listener whose accept queue is full and never drained: the kernel drops further SYNs, so clients
    time out as behind a firewall that drops packets."""

    MAX_FILLERS = 16

    def __init__(self, host: str, port: int) -> None:
        self._listener = socket.create_server((host, port), backlog=0)
        self._fillers: list[socket.socket] = []
        try:
            for _ in range(self.MAX_FILLERS):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                filler.settimeout(0.3)
                try:
                    filler.connect((host, port))
                except TimeoutError:
                    filler.close()
                    return  # the queue is full: the next SYN was dropped
                self._fillers.append(filler)
            raise RuntimeError(f"the accept queue on {host}:{port} did not fill with {self.MAX_FILLERS} connections")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        self._listener.close()


ENVIRONMENT_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec("v4-only", "its resolver offers IPv4 addresses only"),
    AgentSpec("pinned-dropped", "an /etc/hosts pin sends the name to an address whose packets a firewall drops"),
    HostSpec(
        "cached-intermediate",
        "its OpenSSL store holds the private intermediate beside the root, left over from a manual fix",
        store_holds_intermediate=True,
    ),
    HostSpec(
        "cert-file-override",
        "the system bundle has the private root; SSL_CERT_FILE points at a bundle of public roots only",
        trust="system",
        system_bundle_has_root=True,
    ),
    HostSpec(
        "cert-file-absent",
        "the system bundle has the private root; SSL_CERT_FILE names a bundle path that does not exist here",
        trust="system",
        system_bundle_has_root=True,
        cert_file_missing=True,
    ),
    HostSpec("proxy-forbids", "HTTPS_PROXY names an egress proxy that refuses CONNECT to the port", proxy="forbids"),
    HostSpec("proxy-wants-auth", "HTTPS_PROXY names an egress proxy that wants credentials", proxy="wants-auth"),
    HostSpec("proxy-bypassed", "the same HTTPS_PROXY, with NO_PROXY exempting the lab's domain", proxy="bypassed"),
)
ENVIRONMENT_LAB_AGENTS: tuple[AgentSpec, ...] = (
    *(a for a in STANDARD_AGENTS if a.name in ("trusting", "trusting-2", "skew-ahead", "stale-pin", "internal-dns")),
    *ENVIRONMENT_AGENTS,
)

_PAIR = ("trusting", "trusting-2")
# As in the other catalogues: a quiet scenario means nothing unless the trusting agents' Java sees the root.
_QUIET: frozenset[Requirement] = frozenset({"java-view"})


class EnvironmentFleet(LabFleet):
    """The lab fleet with the hosts this catalogue needs: IPv6 answers and missing names in the hosts files
    (`EnvironmentScenario`), the trust files and egress proxies of `HostSpec` agents."""

    def __init__(
        self,
        workdir: Path,
        *,
        agents: Sequence[AgentSpec] = ENVIRONMENT_LAB_AGENTS,
        scenarios: Sequence[Scenario] = (),
        probe_timeout: float | None = None,
    ) -> None:
        options: dict[str, Any] = {} if probe_timeout is None else {"probe_timeout": probe_timeout}
        super().__init__(workdir, agents=agents, scenarios=scenarios or ENVIRONMENT_SCENARIOS, **options)
        self.egress: dict[int, InterceptingProxy] = {}  # the egress proxies by the status they answer CONNECT with

    def close(self) -> None:
        try:
            super().close()
        finally:
            for proxy in self.egress.values():
                proxy.stop()
            self.egress.clear()

    def _egress(self, status: int) -> InterceptingProxy:
        """The egress proxy answering CONNECT with `status`, started once (before any agent reads its URL)."""
        if status not in self.egress:
            credentials = "lab:secret" if status == 407 else None
            proxy = InterceptingProxy(self.proxy, connect=True, connect_status=status, credentials=credentials)
            self.egress[status] = proxy.start()
        return self.egress[status]

    def host_environment(self, agent: str) -> dict[str, str]:
        """The environment `agent` runs with (its trust files, OpenSSL configuration, faked clock): where a
        real client on that host runs."""
        return self._environment(self.specs[agent])

    def _hosts_entries(self, agent: str) -> dict[str, list[str]]:
        entries = super()._hosts_entries(agent)
        for scenario in self.scenarios:
            if not isinstance(scenario, EnvironmentScenario):
                continue
            if agent in scenario.unresolved_for:
                entries.pop(scenario.host, None)
            elif scenario.ipv6 and agent not in dict(scenario.resolve_for):
                entries[scenario.host].append(IPV6_LOOPBACK)
        return entries

    def _environment(self, spec: AgentSpec) -> dict[str, str]:
        env = super()._environment(spec)
        if isinstance(spec, HostSpec) and spec.store_holds_intermediate:
            path = self.workdir / f"bundle-{spec.name}.pem"
            if not path.exists():
                write_pem(path, self._bundle(spec.trust).read_bytes() + self.acme.intermediate.cert_pem)
            env["SSL_CERT_FILE"] = str(path)
        if isinstance(spec, HostSpec) and spec.cert_file_missing:
            env["SSL_CERT_FILE"] = str(self.workdir / "absent" / "ca-bundle.crt")
        if isinstance(spec, HostSpec) and spec.proxy:
            proxy = self._egress(_PROXY_STATUS[spec.proxy])
            env["HTTPS_PROXY"] = f"http://{proxy.host}:{proxy.port}"
            if spec.proxy == "bypassed":
                env["NO_PROXY"] = LAB_DOMAIN
        return env

    def _host_view(self, spec: AgentSpec) -> list[str]:
        view = super()._host_view(spec)
        if isinstance(spec, HostSpec) and spec.system_bundle_has_root:
            # The host's own bundle, as update-ca-certificates left it after the private root was installed.
            return [*netns.mount_view_prefix([(self._bundle("private"), SYSTEM_BUNDLE)]), *view]
        return view

    def _runtime_args(self, spec: AgentSpec) -> list[str]:
        args = super()._runtime_args(spec)
        if isinstance(spec, HostSpec) and spec.system_bundle_has_root:
            # Debian's certifi returns the system bundle itself, whatever SSL_CERT_FILE says.
            shadow = self.workdir / "certifi-system-bundle"
            init = shadow / "certifi" / "__init__.py"
            if not init.exists():  # written once, before its agent starts: never rewritten under it
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(
                    f"def where():\n    return {SYSTEM_BUNDLE!r}\n\n\ndef contents():\n"
                    "    with open(where(), encoding='ascii') as f:\n        return f.read()\n"
                )
            return [a if not a.startswith("python=") else f"python={shadow}" for a in args]
        return args


# --- symptoms ---------------------------------------------------------------------------------------


def _rows(vantages: Vantages, agent: str) -> list[Mapping[str, Any]]:
    return list(((vantages.get(agent) or {}).get("result") or {}).get("addresses") or [])


def per_address(expected: Mapping[str, Mapping[str, str]]) -> Symptom:
    """Each agent probed exactly these addresses (by their last octet, or the IPv6 literal) with these
    native verdicts."""

    def check(vantages: Vantages) -> str | None:
        for agent, wanted in expected.items():
            seen = {
                (r["address"] if ":" in r["address"] else r["address"].rsplit(".", 1)[1]): r["native"]["verdict"]
                for r in _rows(vantages, agent)
            }
            if seen != dict(wanted):
                return f"{agent}: verdicts by address {seen}, expected {dict(wanted)}"
        return None

    return check


def resolution_failed(agent: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        resolution = ((vantages.get(agent) or {}).get("result") or {}).get("resolution") or {}
        if resolution.get("failure") in (None, "none"):
            return f"{agent}: resolved to {resolution.get('addresses')}, expected a resolver failure"
        return None

    return check


# --- builds -----------------------------------------------------------------------------------------


def _build_dual_stack_stale_v6(stage: Stage) -> None:
    """IPv4 was moved to the new certificate; the IPv6 listener still serves the old, expired one."""
    stage.serve(_good(stage), slot=1)
    stage.serve(_expired(stage), on=IPV6_LOOPBACK)


def _build_dual_stack_healthy(stage: Stage) -> None:
    identity = _good(stage)
    stage.serve(identity, slot=1)
    stage.serve(identity, on=IPV6_LOOPBACK)


def _build_three_backends(stage: Stage) -> None:
    stage.serve(_good(stage), slot=1)
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host)), slot=2)  # the intermediate left out
    stage.serve(_expired(stage), slot=3)


def _build_pin_to_decommissioned(stage: Stage) -> None:
    """The current backend on slot 1; slot 2, the old backend, was switched off."""
    stage.serve(_good(stage), slot=1)


def _build_three_ways_unreachable(stage: Stage) -> None:
    """The current backend on slot 1; nothing on slot 2; slot 3 drops what it is sent."""
    stage.serve(_good(stage), slot=1)
    stage.keep(Tarpit(stage.address(3), stage.port))


def _build_leaf_only(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host)))


def _build_private_chain(stage: Stage) -> None:
    stage.serve(_good(stage))


def _build_intermediate_ends_tomorrow(stage: Stage) -> None:
    """A leaf good for months under an intermediate that ends in a day."""
    acme = stage.acme
    short = acme.issue_intermediate(f"{acme.name} Short-lived CA", not_after=_now() + timedelta(days=1))
    stage.serve(ServedIdentity.of(acme.issue_leaf(stage.host, issuer=short), short))


def _build_ends_in_31_days(stage: Stage) -> None:
    """A day beyond the 30-day warning at true time; 29 days at a clock two days ahead."""
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=59), not_after=now + timedelta(days=31))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


# --- the catalogue ----------------------------------------------------------------------------------


def _catalogue() -> tuple[Scenario, ...]:
    return (
        EnvironmentScenario(
            "dual-stack-stale-v6",
            "The name has an IPv4 and an IPv6 address; the IPv6 listener still serves the expired certificate.",
            (*_PAIR, "v4-only"),
            Expect(Cause.INCONSISTENT_BACKENDS, _PAIR, mentions="::1"),
            _build_dual_stack_stale_v6,
            all_of(
                per_address({a: {"1": "ok", IPV6_LOOPBACK: "expired"} for a in _PAIR}),
                per_address({"v4-only": {"1": "ok"}}),
            ),
            resolve_for=(("v4-only", 1),),
            ipv6=True,
        ),
        EnvironmentScenario(
            "dual-stack-healthy",
            "Both address families serve the current certificate; one host resolves IPv4 only: nothing to report.",
            (*_PAIR, "v4-only"),
            Expect(None),
            _build_dual_stack_healthy,
            all_of(
                per_address({a: {"1": "ok", IPV6_LOOPBACK: "ok"} for a in _PAIR}), per_address({"v4-only": {"1": "ok"}})
            ),
            resolve_for=(("v4-only", 1),),
            needs=_QUIET,
            ipv6=True,
        ),
        Scenario(
            "three-backends-two-faults",
            "Three backends behind one name: one fine, one sends no intermediate, one has the expired certificate.",
            _PAIR,
            Expect(Cause.INCONSISTENT_BACKENDS, _PAIR),
            _build_three_backends,
            per_address({a: {"1": "ok", "2": "unknown_issuer", "3": "expired"} for a in _PAIR}),
            slots=3,
        ),
        Scenario(
            "pin-to-decommissioned",
            "One host's /etc/hosts pins the name to the old backend's address, which no longer listens.",
            (*_PAIR, "stale-pin"),
            Expect(Cause.UNREACHABLE, ("stale-pin",)),
            _build_pin_to_decommissioned,
            all_of(
                native(dict.fromkeys(_PAIR, "ok")),
                handshake({"stale-pin": lambda a: a["connect_failure"] == "refused"}, "expected refused on stale-pin"),
                resolves({"stale-pin": lambda a: a.endswith(".2")}, "the old backend (.2)"),
            ),
            resolve_for=(("stale-pin", 2),),
        ),
        EnvironmentScenario(
            "unreachable-three-ways",
            "Inside, the name does not resolve; one host's pin refuses, another's drops; the rest connect:",
            (*_PAIR, "stale-pin", "pinned-dropped", "internal-dns"),
            Expect(Cause.UNREACHABLE, ("stale-pin", "pinned-dropped"), mentions="pinned-dropped resolves"),
            _build_three_ways_unreachable,
            all_of(
                native(dict.fromkeys(_PAIR, "ok")),
                handshake(
                    {
                        "stale-pin": lambda a: a["connect_failure"] == "refused",
                        "pinned-dropped": lambda a: a["connect_failure"] == "connect_timeout",
                    },
                    "expected refused on stale-pin and a timeout on pinned-dropped",
                ),
                resolution_failed("internal-dns"),
            ),
            resolve_for=(("stale-pin", 2), ("pinned-dropped", 3)),
            unresolved_for=("internal-dns",),
        ),
        Scenario(
            "intermediate-in-one-store",
            "The server sends its leaf only; one host verifies anyway because its store holds the intermediate.",
            (*_PAIR, "cached-intermediate"),
            Expect(Cause.INCOMPLETE_CHAIN, _PAIR, mentions="cached-intermediate"),
            _build_leaf_only,
            native({"trusting": "unknown_issuer", "trusting-2": "unknown_issuer", "cached-intermediate": "ok"}),
        ),
        Scenario(
            "cert-file-overrides-system-store",
            "The private root is in the host's system bundle, but SSL_CERT_FILE points at public roots only.",
            ("trusting", "cert-file-override"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("cert-file-override",), mentions="SSL_CERT_FILE"),
            _build_private_chain,
            all_of(
                native({"trusting": "ok", "cert-file-override": "unknown_issuer"}),
                store_verdicts({"cert-file-override": ("system", "ok")}),
            ),
        ),
        Scenario(
            "cert-file-absent",
            "SSL_CERT_FILE names a bundle that does not exist on the host: OpenSSL there has no roots at all.",
            ("trusting", "cert-file-absent"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("cert-file-absent",), mentions="SSL_CERT_FILE"),
            _build_private_chain,
            native({"trusting": "ok", "cert-file-absent": "unknown_issuer"}),
        ),
        Scenario(
            "proxy-refuses-connect",
            "Probed as applications connect: one host's egress proxy refuses the port, one wants credentials, "
            "one host bypasses it with NO_PROXY.",
            ("trusting", "proxy-forbids", "proxy-wants-auth", "proxy-bypassed"),
            Expect(Cause.UNREACHABLE, ("proxy-forbids", "proxy-wants-auth"), mentions="403"),
            _build_private_chain,
            all_of(
                native({"trusting": "ok", "proxy-bypassed": "ok"}),
                handshake(
                    {
                        "proxy-forbids": lambda a: a["connect_failure"] == "proxy_refused",
                        "proxy-wants-auth": lambda a: a["connect_failure"] == "proxy_refused",
                    },
                    "expected the proxy to refuse CONNECT",
                ),
            ),
            probe_args=("--via-proxy",),
        ),
        Scenario(
            "clock-past-intermediate",
            "The intermediate ends tomorrow; one host's clock is two days ahead and already sees it expired.",
            ("trusting", "skew-ahead"),
            Expect(Cause.CLOCK_SKEW, ("skew-ahead",), Severity.CRITICAL),
            _build_intermediate_ends_tomorrow,
            all_of(native({"trusting": "ok", "skew-ahead": "expired"}), clock_offset("skew-ahead", 2 * 86400 * 1000)),
        ),
        Scenario(
            "skewed-clock-near-threshold",
            "The leaf ends in 31 days, a day beyond the warning; one host's clock, two days ahead, counts 29.",
            ("trusting", "skew-ahead"),
            Expect(Cause.CLOCK_SKEW, ("skew-ahead",)),
            _build_ends_in_31_days,
            all_of(native({"trusting": "ok", "skew-ahead": "ok"}), clock_offset("skew-ahead", 2 * 86400 * 1000)),
        ),
    )


ENVIRONMENT_SCENARIOS: tuple[Scenario, ...] = _catalogue()
