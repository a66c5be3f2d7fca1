"""Lab scenarios for judgement that never cries wolf: trust, chain shape and verification policy, through
real agents. `tlsfleet.coordinator.lab.fleet.LabFleet(workdir, agents=TRUST_LAB_AGENTS,
scenarios=TRUST_SCENARIOS)` runs them like the standard catalogue.

Quiet scenarios (Expect(None), or an info note at most) are the point as much as the faulty ones: a
private-CA fleet whose hosts carry a JRE and a Python certifi that nothing uses, chains of RSA-4096 and P-384
keys, a leaf that the root issued directly (mkcert) where every host trusts that root. Each must produce
nothing at warning or above, and exit 0.

The agents, beside the standard trusting, trusting-2 and no-private-root:

- runtimes-idle: the private root is installed for OpenSSL; a JRE on PATH and a system Python in
  /usr/local/bin with Mozilla's certifi lack it, found by the agent's own search and declared by nothing;
- runtimes-declared: the same stores declared in use: JAVA_HOME, `--runtime python=...`, NODE_EXTRA_CA_CERTS.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ...agent.trust.strict_profile import key_description
from ..diagnosis.model import Cause, Severity
from .pki import KeyKind
from .scenarios import STANDARD_AGENTS, AgentSpec, Expect, Requirement, Scenario, Stage
from .symptoms import Symptom, Vantages, all_of, chain_length, native
from .tls_server import ServedIdentity

__all__ = ["TRUST_AGENTS", "TRUST_LAB_AGENTS", "TRUST_SCENARIOS", "leaf_key", "runtime_stores_lack_root"]

TRUST_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        "runtimes-idle",
        "OpenSSL trusts the private root; a JRE on PATH and a system Python's certifi lack it, used by nothing",
        runtimes="found",
    ),
    AgentSpec(
        "runtimes-declared",
        "OpenSSL trusts the private root; JAVA_HOME, a named Python and NODE_EXTRA_CA_CERTS lack it",
        runtimes="declared",
    ),
)
TRUST_LAB_AGENTS: tuple[AgentSpec, ...] = (
    *(a for a in STANDARD_AGENTS if a.name in ("trusting", "trusting-2", "no-private-root")),
    *TRUST_AGENTS,
)

_PAIR = ("trusting", "trusting-2")
# As in the standard catalogue: the trusting agents name this machine's Java, which must see the private root
# for a scenario whose top finding is below critical (or none) to mean anything.
_QUIET: frozenset[Requirement] = frozenset({"java-view"})


# --- symptoms ---------------------------------------------------------------------------------------


def _addresses(vantages: Vantages, agent: str) -> list[Mapping[str, Any]]:
    return list(((vantages.get(agent) or {}).get("result") or {}).get("addresses") or [])


def runtime_stores_lack_root(expected: Mapping[str, Sequence[str]]) -> Symptom:
    """Each agent reports a store of each of these kinds (certifi, java, java_home, node_extra_ca_certs; a
    prefixed second one counts), and each of those stores fails on trust: the gap is really there."""

    def check(vantages: Vantages) -> str | None:
        for agent, kinds in expected.items():
            addresses = _addresses(vantages, agent)
            if not addresses:
                return f"{agent} probed no address"
            for address in addresses:
                seen: dict[str, str] = {}
                for s in address.get("stores", []):
                    for name in (s["store"], *s.get("same_as", ())):
                        seen[name] = s["at_agent_time"]
                for kind in kinds:
                    mine = {n: v for n, v in seen.items() if n.split(":", 1)[0] == kind}
                    if not mine:
                        return f"{agent}: no {kind} store among {sorted(seen)}"
                    if any(v not in ("unknown_issuer", "leaf_only_unverifiable") for v in mine.values()):
                        return f"{agent}: {kind} stores say {mine}, expected them to lack the root"
        return None

    return check


def leaf_key(agents: Sequence[str], description: str) -> Symptom:
    """The leaf each agent was served has this key ('RSA 4096', 'EC secp384r1')."""

    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            for address in _addresses(vantages, agent):
                chain = address.get("chain") or []
                if not chain:
                    return f"{agent}: no chain served"
                leaf = x509.load_der_x509_certificate(base64.b64decode(chain[0]))
                if key_description(leaf) != description:
                    return f"{agent}: the leaf has a {key_description(leaf)} key, expected {description}"
        return None

    return check


# --- builds -----------------------------------------------------------------------------------------


def _build_leaf_from_root(stage: Stage) -> None:
    """mkcert's shape: the root signs the leaf, and the server sends the leaf alone."""
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host, issuer=stage.acme.root)))


def _build_missing_policy_ca(stage: Stage) -> None:
    """root -> policy CA -> issuing CA -> leaf; the server sends the leaf and the issuing CA, whose AIA URL
    names the policy CA."""
    acme = stage.acme
    policy = acme.issue_intermediate(f"{acme.name} Policy CA")
    url = stage.publish_aia(f"/{stage.scenario.name}/policy-ca.der", policy.der)
    issuing = acme.issue_intermediate(f"{acme.name} Issuing CA", issuer=policy, aia_ca_issuers_url=url)
    stage.serve(ServedIdentity.of(acme.issue_leaf(stage.host, issuer=issuing), issuing))


def _build_private_ca(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host), stage.acme.intermediate))


def _key_kind_build(kind: KeyKind, label: str) -> Callable[[Stage], None]:
    def build(stage: Stage) -> None:
        acme = stage.acme
        ca = acme.issue_intermediate(f"{acme.name} {label} CA", key_kind=kind)
        stage.serve(ServedIdentity.of(acme.issue_leaf(stage.host, issuer=ca, key_kind=kind), ca))

    return build


def _build_path_length_exceeded(stage: Stage) -> None:
    acme = stage.acme
    capped = acme.issue_intermediate(f"{acme.name} Capped CA", path_length=0)
    team = acme.issue_intermediate(f"{acme.name} Team CA", issuer=capped)
    stage.serve(ServedIdentity.of(acme.issue_leaf(stage.host, issuer=team), team, capped))


def _build_not_for_servers(stage: Stage) -> None:
    client_only = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    leaf = stage.acme.issue_leaf(stage.host, extensions=[(client_only, False)])
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


# An extension no verifier knows, marked critical: OpenSSL must refuse the certificate (verify code 34).
UNHANDLED_CRITICAL = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1"), b"\x05\x00")


def _build_unhandled_critical(stage: Stage) -> None:
    leaf = stage.acme.issue_leaf(stage.host, extensions=[(UNHANDLED_CRITICAL, True)])
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_unrelated_certificate(stage: Stage) -> None:
    """A complete chain with another CA's intermediate left in the chain file."""
    leaf = stage.acme.issue_leaf(stage.host)
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate, stage.rogue.intermediate))


def _build_issuer_not_a_ca(stage: Stage) -> None:
    acme = stage.acme
    plain = acme.issue_intermediate(f"{acme.name} Plain Signer", basic_constraints=False)
    stage.serve(ServedIdentity.of(acme.issue_leaf(stage.host, issuer=plain), plain))


# --- the catalogue ----------------------------------------------------------------------------------


def _catalogue() -> tuple[Scenario, ...]:
    pair_ok = native(dict.fromkeys(_PAIR, "ok"))
    invalid = native(dict.fromkeys(_PAIR, "invalid"))
    return (
        Scenario(
            "runtimes-idle",
            "A private-CA fleet whose hosts carry a JRE and a Python certifi without the root, used by nothing:",
            ("trusting", "runtimes-idle"),
            Expect(None),
            _build_private_ca,
            all_of(
                native({"trusting": "ok", "runtimes-idle": "ok"}),
                runtime_stores_lack_root({"runtimes-idle": ("certifi", "java")}),
            ),
            needs=_QUIET,
        ),
        Scenario(
            "runtimes-declared",
            "The same gaps where JAVA_HOME, a named Python and NODE_EXTRA_CA_CERTS declare them: one warning.",
            ("trusting", "runtimes-declared"),
            Expect(
                Cause.RUNTIME_STORE_DIFFERS,
                ("runtimes-declared",),
                Severity.WARNING,
                mentions="Java under JAVA_HOME (its cacerts) and Node.js (NODE_EXTRA_CA_CERTS) reject",
            ),
            _build_private_ca,
            all_of(
                native({"trusting": "ok", "runtimes-declared": "ok"}),
                runtime_stores_lack_root({"runtimes-declared": ("certifi", "java_home", "node_extra_ca_certs")}),
            ),
            needs=_QUIET,
        ),
        Scenario(
            "leaf-from-root-trusted",
            "mkcert's shape: the root signs the leaf, the server sends the leaf alone, every host trusts the root.",
            _PAIR,
            Expect(None),
            _build_leaf_from_root,
            all_of(pair_ok, chain_length(_PAIR, 1)),
            needs=_QUIET,
        ),
        Scenario(
            "leaf-from-root-missing",
            "The same leaf from the root; one host was never given the root: a trust question, not a chain one.",
            (*_PAIR, "no-private-root"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("no-private-root",), mentions="Acme Internal Root CA"),
            _build_leaf_from_root,
            native(
                {"trusting": "ok", "trusting-2": "ok", "no-private-root": ("unknown_issuer", "leaf_only_unverifiable")}
            ),
        ),
        Scenario(
            "missing-policy-ca",
            "root, policy CA, issuing CA, leaf: the server leaves out the policy CA, which only its AIA URL names.",
            _PAIR,
            Expect(Cause.INCOMPLETE_CHAIN, _PAIR, Severity.CRITICAL, mentions="'CN=Acme Internal Policy CA' (key id"),
            _build_missing_policy_ca,
            all_of(native(dict.fromkeys(_PAIR, "unknown_issuer")), chain_length(_PAIR, 2)),
        ),
        Scenario(
            "rsa4096-chain",
            "An RSA-4096 issuing CA and leaf under the private root: nothing to report.",
            _PAIR,
            Expect(None),
            _key_kind_build("rsa4096", "RSA-4096"),
            all_of(pair_ok, leaf_key(_PAIR, "RSA 4096")),
            needs=_QUIET,
        ),
        Scenario(
            "p384-chain",
            "A P-384 issuing CA and leaf (SHA-384 signatures) under the private root: nothing to report.",
            _PAIR,
            Expect(None),
            _key_kind_build("p384", "P-384"),
            all_of(pair_ok, leaf_key(_PAIR, "EC secp384r1")),
            needs=_QUIET,
        ),
        Scenario(
            "path-length-exceeded",
            "A CA capped at pathLen 0 has another CA below it, which issues the leaf.",
            _PAIR,
            Expect(
                Cause.POLICY_INVALID_CHAIN, _PAIR, Severity.CRITICAL, mentions="'CN=Acme Internal Capped CA' allows 0"
            ),
            _build_path_length_exceeded,
            invalid,
        ),
        Scenario(
            "not-for-servers",
            "The leaf's extendedKeyUsage says clientAuth only: it was issued for a client, not a server.",
            _PAIR,
            Expect(Cause.POLICY_INVALID_CHAIN, _PAIR, Severity.CRITICAL, mentions="extendedKeyUsage is clientAuth"),
            _build_not_for_servers,
            invalid,
        ),
        Scenario(
            "issuer-not-a-ca",
            "The leaf's issuer has no basicConstraints: a signing certificate that is not a CA.",
            _PAIR,
            Expect(
                Cause.POLICY_INVALID_CHAIN,
                _PAIR,
                Severity.CRITICAL,
                mentions="'CN=Acme Internal Plain Signer' issues certificates but is not a CA",
            ),
            _build_issuer_not_a_ca,
            invalid,
        ),
        Scenario(
            "unhandled-critical-extension",
            "The leaf carries a critical extension no verifier knows: every OpenSSL client must refuse it.",
            _PAIR,
            Expect(Cause.POLICY_INVALID_CHAIN, _PAIR, Severity.CRITICAL, mentions="1.3.6.1.4.1.55555.1.1"),
            _build_unhandled_critical,
            invalid,
        ),
        Scenario(
            "unrelated-certificate",
            "A complete chain that also carries another CA's intermediate, left in the chain file: a note only.",
            _PAIR,
            Expect(Cause.UNRELATED_CERTIFICATE, _PAIR, Severity.INFO, mentions="Rogue Intermediate CA"),
            _build_unrelated_certificate,
            all_of(pair_ok, chain_length(_PAIR, 3)),
            needs=_QUIET,
        ),
    )


TRUST_SCENARIOS: tuple[Scenario, ...] = _catalogue()
