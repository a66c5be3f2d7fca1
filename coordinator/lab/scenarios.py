"""The standard agents and the catalogue of named failure scenarios: what each scenario serves and what
tlsfleet should conclude about it. `tlsfleet.coordinator.lab.fleet` runs them.

Each scenario serves on its own 127.88.<n>.x addresses under the name `api.<scenario>.lab.test`, is probed
from a chosen set of agents, checks what the vantages show (`tlsfleet.coordinator.lab.symptoms`) and says
what the top finding must be.

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

Beside this catalogue, each with agents of its own and run the same way: `scenarios_handshake`,
`scenarios_trust`, `scenarios_judgement`, `scenarios_combined` (faults that come together) and
`scenarios_environment` (hosts that differ in resolver, trust files or clock; its own `EnvironmentFleet`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from ..diagnosis.model import Cause, Severity
from .pki import Issued, LabPKI
from .symptoms import (
    Symptom,
    all_of,
    chain_length,
    clock_offset,
    expiring_in_days,
    handshake,
    issuer_contains,
    native,
    resolves,
    san_lacks,
    states,
    store_verdicts,
    two_backends,
)
from .tls_server import ServedIdentity


class Stoppable(Protocol):
    """A server a scenario started itself (an `openssl s_server` process, a raw socket server)."""

    def stop(self) -> None: ...


class Stage(Protocol):
    """What a scenario's build step may do (the lab fleet provides it): its CAs, its name, and servers."""

    scenario: Scenario

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int:
        """The one port every server of the scenario listens on."""
        ...

    def address(self, slot: int = 1) -> str:
        """The scenario's address for `slot` (what the agents' hosts file lists for its name)."""
        ...

    def keep(self, server: Stoppable) -> None:
        """Stop `server`, which the scenario started itself on `address(slot)`:`port`, with the stage."""
        ...

    @property
    def acme(self) -> LabPKI: ...

    @property
    def rogue(self) -> LabPKI: ...

    def serve(
        self,
        identity: ServedIdentity | None,
        *,
        slot: int = 1,
        on: str | None = None,
        by_sni: Mapping[str, ServedIdentity] | None = None,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
    ) -> object: ...

    def intercept_for(self, agent: str, slot: int = 1) -> object: ...

    def intercept_at(self, slot: int) -> object:
        """The intercepting proxy on the scenario's own address `slot` (not the server's): where a resolver
        that steers the name sends clients (`resolve_for`)."""
        ...

    def publish_aia(self, path: str, der: bytes) -> str:
        """Serve `der` at `path` on the lab's AIA server; the URL a certificate can name."""
        ...

    def root_address(self, namespace: str) -> str:
        """The address the root namespace has on `namespace`'s link (what its resolver may point at)."""
        ...


__all__ = [
    "OUTSIDE",
    "SCENARIOS",
    "STANDARD_AGENTS",
    "AgentSpec",
    "Expect",
    "Requirement",
    "Scenario",
    "Stoppable",
    "malformed_key_usage_leaf",
    "scenario_address",
    "scenario_named",
]

Requirement = Literal["root", "libfaketime", "certifi", "java-view", "mount-view"]
Trust = Literal["private", "system", "private+proxy"]
# Which language runtimes a lab host has, and how its agent comes to judge their stores:
# "named": this machine's own, named with --runtime so that their stores hold what the host trusts;
# "found": a JRE on PATH and a system Python (/usr/local/bin) with Mozilla's certifi, neither holding the
#   private root, found by the agent's own search and declared by nothing (the usual private-CA host);
# "declared": the same stores declared in use: JAVA_HOME, --runtime python=..., NODE_EXTRA_CA_CERTS.
HostRuntimes = Literal["named", "found", "declared"]
OUTSIDE: Literal["outside"] = "outside"  # a namespace agent resolves the name to its namespace's root side
Route = int | Literal["outside"]

ADDRESS_BASE = "127.88"  # scenario n serves on 127.88.<n>.<slot>
SKEW = "2d"
SKEW_MS = 2 * 86400 * 1000


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
    runtimes: HostRuntimes = "named"  # see HostRuntimes

    @property
    def requires(self) -> frozenset[Requirement]:
        needs: set[Requirement] = set()
        if self.clock:
            needs.add("libfaketime")
        if self.namespace:
            needs.add("root")
        if self.certifi_package or self.runtimes != "named":
            needs.add("certifi")
        if self.runtimes == "found":
            needs.add("mount-view")
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
    coordinator_clock: str = ""  # a libfaketime offset such as "+40d" for the CLI (the coordinator) itself

    @property
    def host(self) -> str:
        return self.host_name or f"api.{self.name}.lab.test"

    @property
    def selector(self) -> str:
        return ",".join(self.agents)

    def requires(self, agents: Mapping[str, AgentSpec] | None = None) -> frozenset[Requirement]:
        specs = agents or {a.name: a for a in STANDARD_AGENTS}
        needs = set(self.needs)
        if self.coordinator_clock:
            needs.add("libfaketime")
        for name in self.agents:
            needs |= specs[name].requires
        return frozenset(needs)


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
    url = stage.publish_aia(path, stage.acme.intermediate.der)
    leaf = stage.acme.issue_leaf(stage.host, aia_ca_issuers_url=url)
    stage.serve(ServedIdentity.of(leaf))


def _build_self_signed(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(stage.acme.self_signed_leaf(stage.host)))


def _build_untrusted_root(stage: Stage) -> None:
    rogue = stage.rogue
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
    stage.serve(_expired(stage), on=stage.root_address("internal-dns"))


def _build_interception(stage: Stage) -> None:
    stage.serve(_good(stage))
    stage.intercept_for("behind-proxy")


def _build_tls13_only(stage: Stage) -> None:
    stage.serve(_good(stage), min_version=ssl.TLSVersion.TLSv1_3)


def _build_closed_port(stage: Stage) -> None:
    """Nothing listens: the stage's port was free a moment ago and stays so."""


def malformed_key_usage_leaf(pki: LabPKI, name: str) -> Issued:
    """A leaf for `name` from `pki`'s intermediate whose keyUsage BIT STRING sets a padding bit: not DER, so
    `cryptography` (and Go) refuse its extensions, while OpenSSL reads past it and verifies the chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtensionOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    issuer = pki.intermediate
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        # digitalSignature (0x80) with unused bits 7, and the last padding bit set (0x01).
        .add_extension(x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, b"\x03\x02\x07\x81"), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _build_malformed_key_usage(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(malformed_key_usage_leaf(stage.acme, stage.host), stage.acme.intermediate))


_PAIR = ("trusting", "trusting-2")
# Scenarios whose expected top finding is below critical (or none at all): on a machine whose Java cacerts
# lacks the lab's private root, that warning would outrank them unless agents get a view with the root.
_QUIET: frozenset[Requirement] = frozenset({"java-view"})


def _catalogue() -> tuple[Scenario, ...]:
    pair_ok = native(dict.fromkeys(_PAIR, "ok"))
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
            native(dict.fromkeys(_PAIR, "expired")),
        ),
        Scenario(
            "not-yet-valid",
            "A certificate issued with a start date ten days ahead: valid nowhere yet.",
            _PAIR,
            Expect(Cause.NOT_YET_VALID, _PAIR),
            _build_not_yet_valid,
            native(dict.fromkeys(_PAIR, "not_yet_valid")),
        ),
        Scenario(
            "expiring-soon",
            "Everything verifies today, but the certificate expires in five days.",
            _PAIR,
            Expect(Cause.EXPIRING_SOON, _PAIR, Severity.CRITICAL),
            _build_expiring_soon,
            all_of(pair_ok, expiring_in_days(_PAIR, 5.1)),
        ),
        Scenario(
            "wrong-name",
            "The server presents the certificate of www.wrong-name.lab.test for api.wrong-name.lab.test.",
            _PAIR,
            Expect(Cause.HOSTNAME_MISMATCH, _PAIR),
            _build_wrong_name,
            native(dict.fromkeys(_PAIR, "hostname_mismatch")),
        ),
        Scenario(
            "wildcard-too-deep",
            "*.wildcard-too-deep.lab.test covers one label; the name has two.",
            _PAIR,
            Expect(Cause.HOSTNAME_MISMATCH, _PAIR),
            _build_wildcard_too_deep,
            native(dict.fromkeys(_PAIR, "hostname_mismatch")),
            host_name="api.eu.wildcard-too-deep.lab.test",
        ),
        Scenario(
            "incomplete-chain",
            "The server sends its leaf only; the intermediate is reachable through the leaf's AIA URL.",
            _PAIR,
            Expect(Cause.INCOMPLETE_CHAIN, _PAIR, mentions="returns the missing certificate and completes the chain"),
            _build_incomplete_chain,
            all_of(
                # OpenSSL 3 says 20 (unknown issuer) for a lone leaf; older releases said 21.
                native(dict.fromkeys(_PAIR, ("unknown_issuer", "leaf_only_unverifiable"))),
                chain_length(_PAIR, 1, aia=True),
            ),
        ),
        Scenario(
            "self-signed",
            "A quick self-signed certificate went to production.",
            _PAIR,
            Expect(Cause.UNTRUSTED_CHAIN, _PAIR),
            _build_self_signed,
            native(dict.fromkeys(_PAIR, "self_signed")),
        ),
        Scenario(
            "untrusted-root",
            "A chain to a root no host trusts (it is even sent along).",
            _PAIR,
            Expect(Cause.UNTRUSTED_CHAIN, _PAIR),
            _build_untrusted_root,
            native(dict.fromkeys(_PAIR, "untrusted_root")),
        ),
        Scenario(
            "private-ca-missing",
            "The same private-CA chain everywhere; one host was never given the private root.",
            (*_PAIR, "no-private-root"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("no-private-root",)),
            _build_healthy,
            native({"trusting": "ok", "trusting-2": "ok", "no-private-root": "unknown_issuer"}),
        ),
        Scenario(
            "runtime-store",
            "OpenSSL on the host trusts the chain; Python requests there (certifi) does not.",
            ("trusting", "certifi-only"),
            Expect(Cause.RUNTIME_STORE_DIFFERS, ("certifi-only",)),
            _build_healthy,
            all_of(
                native({"trusting": "ok", "certifi-only": "ok"}),
                store_verdicts({"trusting": ("certifi", "ok"), "certifi-only": ("certifi", "unknown_issuer")}),
            ),
            needs=_QUIET,
        ),
        Scenario(
            "clock-behind",
            f"A certificate renewed an hour ago; one host's clock is {SKEW} behind and sees it as not yet valid.",
            ("trusting", "skew-behind"),
            Expect(Cause.CLOCK_SKEW, ("skew-behind",)),
            _build_healthy,
            all_of(
                native({"trusting": "ok", "skew-behind": "not_yet_valid"}),
                clock_offset("skew-behind", -SKEW_MS),
            ),
        ),
        Scenario(
            "clock-ahead",
            f"One host's clock runs {SKEW} ahead: it still verifies, but certificates near their end fail there first.",
            ("trusting", "skew-ahead"),
            Expect(Cause.CLOCK_SKEW, ("skew-ahead",)),
            _build_healthy,
            all_of(native({"trusting": "ok", "skew-ahead": "ok"}), clock_offset("skew-ahead", SKEW_MS)),
            needs=_QUIET,
        ),
        Scenario(
            "sni-default",
            "The right certificate is chosen by SNI; clients that send none get the server's default one.",
            _PAIR,
            Expect(Cause.SNI_DIFFERENCE, _PAIR),
            _build_sni_default,
            san_lacks(_PAIR, "api.sni-default.lab.test"),
            probe_args=("--no-sni",),
        ),
        Scenario(
            "inconsistent-backends",
            "Two backends behind one name; a half-finished deploy left the old, expired certificate on one.",
            _PAIR,
            Expect(Cause.INCONSISTENT_BACKENDS, _PAIR),
            _build_inconsistent_backends,
            two_backends(_PAIR),
            slots=2,
        ),
        Scenario(
            "stale-pin",
            "One host's /etc/hosts still pins the name to the old backend, which serves an expired certificate.",
            (*_PAIR, "stale-pin"),
            Expect(Cause.DNS_DIFFERENCE, (*_PAIR, "stale-pin")),
            _build_stale_pin,
            all_of(
                native({"trusting": "ok", "trusting-2": "ok", "stale-pin": "expired"}),
                resolves(
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
            all_of(
                native({"trusting": "ok", "trusting-2": "ok", "internal-dns": "expired"}),
                resolves(
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
            all_of(
                native({"trusting": "ok", "trusting-2": "ok", "behind-proxy": "ok"}),
                issuer_contains({"trusting": "Acme Internal", "behind-proxy": "Corp Proxy CA"}),
            ),
            needs=_QUIET,
        ),
        Scenario(
            "tls13-only",
            "The server accepts TLS 1.3 only; one host's OpenSSL stops at TLS 1.2.",
            ("trusting", "tls12-only"),
            Expect(Cause.PROTOCOL_MISMATCH, ("tls12-only",)),
            _build_tls13_only,
            handshake(
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
            handshake(dict.fromkeys(_PAIR, lambda a: a["connect_failure"] == "refused"), "expected refused"),
        ),
        Scenario(
            "metadata-denied",
            "The probe names a cloud metadata address: every agent's built-in policy refuses it, so nothing is probed.",
            _PAIR,
            Expect(Cause.POLICY_DENIED, _PAIR, Severity.WARNING, mentions="169.254.0.0/16"),
            _build_healthy,
            handshake(
                dict.fromkeys(_PAIR, lambda a: a["connect_failure"] == "denied_by_policy"), "expected denied_by_policy"
            ),
            probe_args=("--address", "169.254.169.254"),
        ),
        Scenario(
            "malformed-key-usage",
            "The leaf's keyUsage is not DER: OpenSSL verifies it, stricter parsers refuse it; its names are fine.",
            _PAIR,
            Expect(Cause.MALFORMED_CERTIFICATE, _PAIR, Severity.WARNING, mentions="keyUsage"),
            _build_malformed_key_usage,
            pair_ok,
            needs=_QUIET,
        ),
        Scenario(
            "agent-down",
            "The server is fine, but one agent in the inventory is not running: say what it could not see.",
            ("trusting", "gone"),
            Expect(Cause.VANTAGE_UNAVAILABLE, ("gone",)),
            _build_healthy,
            all_of(native({"trusting": "ok"}), states({"gone": "offline"})),
            needs=_QUIET,
        ),
    )


SCENARIOS: tuple[Scenario, ...] = _catalogue()


def scenario_named(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"scenario {name!r} is not known; accepted: {', '.join(s.name for s in SCENARIOS)}")
