"""Scenarios of judgement: faults where the easy answer is the wrong one, each with the top finding the
diagnosis must still produce, through real agents and the real CLI (`tlsfleet.coordinator.lab.fleet`).

- dns-steered-interception, dns-steered-untrusted: one host's resolver (its --hosts-file) points the name
  at the address of a TLS-inspection proxy, not at the server: interception from evidence (an issuer no
  other vantage sees, trusted only where its CA was installed, or not trusted at all), not from equal
  addresses; the DNS difference is said beside it.
- clock-ahead-expiring: a host three days ahead, a certificate with 36 hours left: the host's clock is why
  it fails now, and outranks the prediction that everyone will fail in 36 hours.
- coordinator-clock-ahead: the CLI itself runs 40 days ahead (libfaketime); the agents agree with each
  other: the coordinator's clock is named, and no server-side expiry is claimed for a certificate that
  every agent verifies.
- chain-of-200: the server sends its leaf, its intermediate and 198 CA certificates it has no use for,
  all expiring within weeks: a handful of findings, not one per certificate.
- malformed-key-usage: a keyUsage that is not DER (the catalogue's own scenario): the malformed extension
  is named, not a name mismatch.
- ip-target: an IP address whose certificate has that IP SAN: quiet (nothing at warning or above).
- sha1-intermediate, weak-ca-key: `openssl s_server` serves a chain whose intermediate is signed with
  SHA-1 (verify code 68), or has an RSA 1024 key (67, at OpenSSL's security level 2): every host has the
  root, and the chain breaks policy; the finding names the violation and the certificate.

The agents are the two well-kept standard hosts plus three of these scenarios' own (`JUDGEMENT_AGENTS`);
none needs root: steering goes through the agents' --hosts-file, clocks through libfaketime.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ..diagnosis.model import Cause, Severity
from .pki import Issued, LabPKI
from .scenarios import (
    STANDARD_AGENTS,
    AgentSpec,
    Expect,
    Requirement,
    Scenario,
    Stage,
    scenario_address,
    scenario_named,
)
from .scenarios_handshake import OpenSSLServer
from .symptoms import (
    all_of,
    chain_length,
    clock_offset,
    expiring_in_days,
    issuer_contains,
    native,
    resolves,
    verify_codes,
)
from .tls_server import ServedIdentity

__all__ = ["CHAIN_LENGTH", "JUDGEMENT_AGENTS", "JUDGEMENT_SCENARIOS", "POLICY_CODES", "judgement_scenario"]

DAY_MS = 86_400_000
AHEAD = "+3d"
COORDINATOR_AHEAD = "+40d"
CHAIN_LENGTH = 200
SHA1_CA = "Acme Internal SHA-1 CA"
WEAK_CA = "Acme Internal Legacy 1024 CA"
# The OpenSSL verify code each policy scenario's chain gets (OpenSSL 3 numbering).
POLICY_CODES: dict[str, int] = {"sha1-intermediate": 68, "weak-ca-key": 67}
_PAIR = ("trusting", "trusting-2")
# Expected top findings below critical (or none): agents need a Java view holding the lab's root, else a
# runtime-store warning would outrank them (see scenarios._QUIET).
_QUIET: frozenset[Requirement] = frozenset({"java-view"})

JUDGEMENT_AGENTS: tuple[AgentSpec, ...] = (
    *(a for a in STANDARD_AGENTS if a.name in _PAIR),
    AgentSpec("skew-ahead-3d", "its clock runs three days ahead", clock=AHEAD),
    AgentSpec(
        "steered",
        "its resolver sends one name to a TLS-inspection proxy, whose CA was installed on this host",
        trust="private+proxy",
    ),
    AgentSpec("steered-untrusting", "its resolver sends one name to a TLS-inspection proxy it does not trust"),
)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _build_steered(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host), stage.acme.intermediate), slot=1)
    stage.intercept_at(2)


def _build_expiring_36h(stage: Stage) -> None:
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=60), not_after=now + timedelta(hours=36))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_expiring_20d(stage: Stage) -> None:
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=70), not_after=now + timedelta(days=20))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_chain_of_200(stage: Stage) -> None:
    """The leaf and its intermediate, then 198 CA certificates of another CA that expire within weeks (a
    server configured with a whole bundle as its chain file)."""
    now = _now()
    extra = LabPKI("Bundled")
    bundled = [
        extra.issue_intermediate(f"Bundled {i}", not_after=now + timedelta(days=3 + i % 25))
        for i in range(CHAIN_LENGTH - 2)
    ]
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=70), not_after=now + timedelta(days=20))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate, *bundled))


def _build_ip_target(stage: Stage) -> None:
    ip = stage.address(1)
    if stage.host != ip:
        raise RuntimeError(f"the ip-target scenario must be probed at {ip}, its name is {stage.host}")
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(ip), stage.acme.intermediate))


def _serve_with(stage: Stage, intermediate: Issued) -> None:
    """`openssl s_server` with a leaf from `intermediate` and that intermediate as its chain; at security
    level 0, or the server itself refuses to load a chain its own level would reject."""
    leaf = stage.acme.issue_leaf(stage.host, issuer=intermediate)
    server = OpenSSLServer(stage.address(), stage.port, leaf, (intermediate,), ("-cipher", "DEFAULT@SECLEVEL=0"))
    stage.keep(server)


def _build_sha1_intermediate(stage: Stage) -> None:
    _serve_with(stage, stage.acme.issue_intermediate(SHA1_CA, digest="sha1"))


def _build_weak_ca_key(stage: Stage) -> None:
    _serve_with(stage, stage.acme.issue_intermediate(WEAK_CA, key_kind="rsa1024"))


def _catalogue() -> tuple[Scenario, ...]:
    pair_ok = native(dict.fromkeys(_PAIR, "ok"))
    scenarios = (
        Scenario(
            "dns-steered-interception",
            "One host's resolver sends the name to a TLS-inspection proxy's own address; the host trusts its CA.",
            (*_PAIR, "steered"),
            Expect(Cause.TLS_INTERCEPTION, ("steered",), Severity.WARNING, mentions="resolver sends"),
            _build_steered,
            all_of(
                native({"trusting": "ok", "trusting-2": "ok", "steered": "ok"}),
                issuer_contains({"trusting": "Acme Internal", "steered": "Corp Proxy CA"}),
                resolves({"steered": lambda a: a.endswith(".2")}, "the proxy's address (.2) for steered"),
            ),
            resolve_for=(("steered", 2),),
            needs=_QUIET,
        ),
        Scenario(
            "dns-steered-untrusted",
            "One host's resolver sends the name to a TLS-inspection proxy whose CA that host does not trust.",
            (*_PAIR, "steered-untrusting"),
            Expect(Cause.TLS_INTERCEPTION, ("steered-untrusting",), Severity.CRITICAL, mentions="resolver sends"),
            _build_steered,
            all_of(
                native({"trusting": "ok", "trusting-2": "ok", "steered-untrusting": "unknown_issuer"}),
                issuer_contains({"trusting": "Acme Internal", "steered-untrusting": "Corp Proxy CA"}),
            ),
            resolve_for=(("steered-untrusting", 2),),
        ),
        Scenario(
            "clock-ahead-expiring",
            "A host three days ahead; the certificate has 36 hours left: the host's clock is why it fails now.",
            ("trusting", "skew-ahead-3d"),
            Expect(Cause.CLOCK_SKEW, ("skew-ahead-3d",), Severity.CRITICAL),
            _build_expiring_36h,
            all_of(
                native({"trusting": "ok", "skew-ahead-3d": "expired"}),
                clock_offset("skew-ahead-3d", 3 * DAY_MS),
                expiring_in_days(("trusting",), 1.6),
            ),
        ),
        Scenario(
            "coordinator-clock-ahead",
            "The coordinator's clock runs 40 days ahead; every agent verifies a certificate with 20 days left.",
            _PAIR,
            Expect(Cause.CLOCK_SKEW, _PAIR, Severity.WARNING, mentions="coordinator's own clock"),
            _build_expiring_20d,
            all_of(pair_ok, *(clock_offset(a, -40 * DAY_MS) for a in _PAIR)),
            coordinator_clock=COORDINATOR_AHEAD,
            needs=_QUIET | {"libfaketime"},
        ),
        Scenario(
            "chain-of-200",
            f"The server sends {CHAIN_LENGTH} certificates, 198 it does not need, all expiring within weeks.",
            _PAIR,
            Expect(Cause.EXPIRING_SOON, _PAIR, Severity.CRITICAL),
            _build_chain_of_200,
            all_of(pair_ok, chain_length(_PAIR, CHAIN_LENGTH)),
        ),
        scenario_named("malformed-key-usage"),
        Scenario(
            "ip-target",
            "An IP address as the target, and a certificate with that IP in its subjectAltName: nothing to say.",
            _PAIR,
            Expect(None),
            _build_ip_target,
            pair_ok,
            needs=_QUIET,
        ),
        Scenario(
            "sha1-intermediate",
            "The server's intermediate is signed with SHA-1; every host has the root, OpenSSL refuses the digest.",
            _PAIR,
            Expect(
                Cause.POLICY_INVALID_CHAIN, _PAIR, Severity.CRITICAL, mentions=f"'CN={SHA1_CA}' is signed with SHA-1"
            ),
            _build_sha1_intermediate,
            verify_codes(dict.fromkeys(_PAIR, POLICY_CODES["sha1-intermediate"])),
        ),
        Scenario(
            "weak-ca-key",
            "The server's intermediate has an RSA 1024 key; every host has the root, OpenSSL refuses the key.",
            _PAIR,
            Expect(
                Cause.POLICY_INVALID_CHAIN,
                _PAIR,
                Severity.CRITICAL,
                mentions=f"the CA 'CN={WEAK_CA}' has an RSA 1024 key",
            ),
            _build_weak_ca_key,
            verify_codes(dict.fromkeys(_PAIR, POLICY_CODES["weak-ca-key"])),
        ),
    )
    # The IP target's name is its own address: the scenario's slot 1 in a fleet of these scenarios.
    return tuple(
        replace(s, host_name=scenario_address(i, 1)) if s.name == "ip-target" else s
        for i, s in enumerate(scenarios, start=1)
    )


JUDGEMENT_SCENARIOS: tuple[Scenario, ...] = _catalogue()


def judgement_scenario(name: str) -> Scenario:
    for scenario in JUDGEMENT_SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"scenario {name!r} is not known; accepted: {', '.join(s.name for s in JUDGEMENT_SCENARIOS)}")
