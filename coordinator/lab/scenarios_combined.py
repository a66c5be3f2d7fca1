"""Lab scenarios where faults come together, as fleets meet them: two environment faults at once (on
different hosts, or on the same host), a server-side fault seen by a mixed fleet, one stale backend behind
a name, a proxy on a host that also lacks the private root or whose clock is off, a silent agent beside a
healthy or a broken server, and harmless differences between healthy hosts (quiet, exit 0).
`tlsfleet.coordinator.lab.fleet.LabFleet(workdir, agents=COMBINED_LAB_AGENTS, scenarios=COMBINED_SCENARIOS)`
runs them like the standard catalogue.

The agents, beside the standard trusting, trusting-2, no-private-root, skew-ahead, skew-behind,
tls12-only, stale-pin, behind-proxy and gone:

- skewed-no-root: its clock runs two days behind AND it has the public roots only;
- proxy-no-root (root): behind the intercepting proxy, trusting neither the proxy's CA nor the private root;
- proxy-skewed (root): behind the intercepting proxy, whose CA it trusts, with its clock two days behind;
- pinned-no-root: an /etc/hosts pin to the old backend, and the public roots only;
- big-store (root): a namespace host with a larger store (the private root and the proxy's CA), no proxy.
"""

from __future__ import annotations

from datetime import timedelta

from ..diagnosis.model import Cause, Severity
from .scenarios import (  # the catalogue's own builders, shared by its other modules
    OUTSIDE,
    SKEW,
    SKEW_MS,
    STANDARD_AGENTS,
    AgentSpec,
    Expect,
    Requirement,
    Scenario,
    Stage,
    _build_expired,
    _build_healthy,
    _expired,
    _good,
    _now,
)
from .symptoms import (
    Symptom,
    Vantages,
    all_of,
    clock_offset,
    handshake,
    issuer_contains,
    native,
    san_lacks,
    states,
    two_backends,
)
from .tls_server import ServedIdentity

__all__ = ["COMBINED_AGENTS", "COMBINED_LAB_AGENTS", "COMBINED_SCENARIOS"]

COMBINED_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        "skewed-no-root", f"its clock runs {SKEW} behind and it has the public roots only", "system", clock=f"-{SKEW}"
    ),
    AgentSpec(
        "proxy-no-root",
        "behind the intercepting proxy; it trusts neither the proxy's CA nor the private root",
        trust="system",
        namespace=True,
    ),
    AgentSpec(
        "proxy-skewed",
        f"behind the intercepting proxy, whose CA it trusts; its clock runs {SKEW} behind",
        trust="private+proxy",
        clock=f"-{SKEW}",
        namespace=True,
    ),
    AgentSpec(
        "pinned-no-root",
        "an /etc/hosts pin sends one name to the old backend, and the host has the public roots only",
        trust="system",
    ),
    AgentSpec(
        "big-store",
        "a namespace host whose store also holds the proxy's CA; no proxy in its way",
        trust="private+proxy",
        namespace=True,
    ),
)
_STANDARD = (
    "trusting",
    "trusting-2",
    "no-private-root",
    "skew-ahead",
    "skew-behind",
    "tls12-only",
    "stale-pin",
    "behind-proxy",
    "gone",
)
COMBINED_LAB_AGENTS: tuple[AgentSpec, ...] = (
    *(a for a in STANDARD_AGENTS if a.name in _STANDARD),
    *COMBINED_AGENTS,
)

_PAIR = ("trusting", "trusting-2")
_MIXED = ("trusting", "trusting-2", "no-private-root", "skew-behind")
_QUIET: frozenset[Requirement] = frozenset({"java-view"})


def _two_backends_verifying(agents: tuple[str, ...]) -> Symptom:
    """Each agent saw two addresses serving two different leaves, and both verify."""

    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            rows = ((vantages.get(agent) or {}).get("result") or {}).get("addresses") or []
            leaves = {(r.get("certificates") or [{}])[0].get("sha256") for r in rows}
            verdicts = [r["native"]["verdict"] for r in rows]
            if len(rows) != 2 or len(leaves) != 2 or verdicts != ["ok", "ok"]:
                return f"{agent}: {len(rows)} addresses, {len(leaves)} leaves, verdicts {verdicts}"
        return None

    return check


def _build_wrong_name(stage: Stage) -> None:
    stage.serve(_good(stage, f"www.{stage.scenario.name}.lab.test"))


def _build_leaf_only(stage: Stage) -> None:
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host)))


def _build_one_backend_expired(stage: Stage) -> None:
    stage.serve(_good(stage), slot=1)
    stage.serve(_expired(stage), slot=2)


def _build_one_backend_stale(stage: Stage) -> None:
    """Both backends verify today; the second still has last quarter's certificate, four days from its end."""
    now = _now()
    old = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=86), not_after=now + timedelta(days=4))
    stage.serve(_good(stage), slot=1)
    stage.serve(ServedIdentity.of(old, stage.acme.intermediate), slot=2)


def _build_proxy_no_root(stage: Stage) -> None:
    stage.serve(_good(stage))
    stage.intercept_for("proxy-no-root")


def _build_healthy_outside(stage: Stage) -> None:
    identity = _good(stage)
    stage.serve(identity)
    stage.serve(identity, on=stage.root_address("big-store"))


def _build_expired_behind_proxy(stage: Stage) -> None:
    stage.serve(_expired(stage))
    stage.intercept_for("behind-proxy")


def _build_proxy_beside_missing_root(stage: Stage) -> None:
    stage.serve(_good(stage))
    stage.intercept_for("behind-proxy")


def _build_proxy_for_skewed(stage: Stage) -> None:
    stage.serve(_good(stage))
    stage.intercept_for("proxy-skewed")


def _build_leaf_only_with_aia(stage: Stage) -> None:
    url = stage.publish_aia(f"/{stage.scenario.name}/intermediate.der", stage.acme.intermediate.der)
    stage.serve(ServedIdentity.of(stage.acme.issue_leaf(stage.host, aia_ca_issuers_url=url)))


def _build_sni_default(stage: Stage) -> None:
    stage.serve(_good(stage, f"default.{stage.scenario.name}.lab.test"), by_sni={stage.host: _good(stage)})


def _build_expiring_in_a_day(stage: Stage) -> None:
    now = _now()
    leaf = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=89), not_after=now + timedelta(days=1))
    stage.serve(ServedIdentity.of(leaf, stage.acme.intermediate))


def _build_pin_to_valid_old(stage: Stage) -> None:
    now = _now()
    old = stage.acme.issue_leaf(stage.host, not_before=now - timedelta(days=40), not_after=now + timedelta(days=50))
    stage.serve(_good(stage), slot=1)
    stage.serve(ServedIdentity.of(old, stage.acme.intermediate), slot=2)


def _catalogue() -> tuple[Scenario, ...]:
    return (
        Scenario(
            "skew-and-missing-root",
            "One host's clock is behind, another lacks the private root: two causes, each on its own host.",
            ("trusting", "trusting-2", "skew-behind", "no-private-root"),
            Expect(Cause.CLOCK_SKEW, ("skew-behind",), Severity.CRITICAL),
            _build_healthy,
            all_of(
                native({"trusting": "ok", "skew-behind": "not_yet_valid", "no-private-root": "unknown_issuer"}),
                clock_offset("skew-behind", -SKEW_MS),
            ),
        ),
        Scenario(
            "skewed-host-lacks-root",
            "One host's clock is behind AND it lacks the private root: both causes, on that host.",
            ("trusting", "trusting-2", "skewed-no-root"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("skewed-no-root",), Severity.CRITICAL),
            _build_healthy,
            all_of(
                native({"trusting": "ok", "skewed-no-root": "unknown_issuer"}), clock_offset("skewed-no-root", -SKEW_MS)
            ),
        ),
        Scenario(
            "two-missing-root-one-skewed",
            "Two hosts lack the private root and a third runs behind: one finding for the two, one for the third.",
            ("trusting", "trusting-2", "no-private-root", "skewed-no-root", "skew-behind"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("no-private-root", "skewed-no-root")),
            _build_healthy,
            native({"trusting": "ok", "no-private-root": "unknown_issuer", "skew-behind": "not_yet_valid"}),
        ),
        Scenario(
            "proxy-beside-missing-root",
            "A proxy intercepts on one host; another host lacks the private root: two causes, two hosts.",
            ("trusting", "trusting-2", "behind-proxy", "no-private-root"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("no-private-root",)),
            _build_proxy_beside_missing_root,
            native({"trusting": "ok", "behind-proxy": "ok", "no-private-root": "unknown_issuer"}),
        ),
        Scenario(
            "stale-pin-beside-missing-root",
            "One host pins the name to an old, expired backend; another lacks the private root:",
            ("trusting", "trusting-2", "stale-pin", "no-private-root"),
            Expect(Cause.DNS_DIFFERENCE, ("trusting", "trusting-2", "stale-pin", "no-private-root")),
            _build_one_backend_expired,
            native({"trusting": "ok", "stale-pin": "expired", "no-private-root": "unknown_issuer"}),
            resolve_for=(("stale-pin", 2),),
        ),
        Scenario(
            "expired-mixed-fleet",
            "The certificate expired; a mixed fleet sees it: one server finding, not the hosts' differences.",
            _MIXED,
            Expect(Cause.EXPIRED, _MIXED),
            _build_expired,
            native({"trusting": "expired", "trusting-2": "expired"}),
        ),
        Scenario(
            "wrong-name-mixed-fleet",
            "The certificate names another host; a mixed fleet sees it: one server finding.",
            _MIXED,
            Expect(Cause.HOSTNAME_MISMATCH, _MIXED),
            _build_wrong_name,
            native({"trusting": "hostname_mismatch", "trusting-2": "hostname_mismatch"}),
        ),
        Scenario(
            "leaf-only-mixed-fleet",
            "The server sends its leaf only and names no AIA URL; no agent can complete the chain:",
            ("trusting", "no-private-root", "skew-behind"),
            Expect(Cause.INCOMPLETE_CHAIN, ("trusting", "no-private-root", "skew-behind")),
            _build_leaf_only,
            native({"trusting": ("unknown_issuer", "leaf_only_unverifiable")}),
        ),
        Scenario(
            "aia-leaf-only-beside-missing-root",
            "Leaf only, its AIA URL completes it; one host fetches it, another lacks the private root:",
            ("trusting", "trusting-2", "no-private-root"),
            Expect(
                Cause.INCOMPLETE_CHAIN,
                ("trusting", "trusting-2", "no-private-root"),
                mentions="no-private-root will still fail unless it trusts the root",
            ),
            _build_leaf_only_with_aia,
            native({"trusting": ("unknown_issuer", "leaf_only_unverifiable")}),
        ),
        Scenario(
            "sni-default-beside-missing-root",
            "Without SNI the server's default certificate comes back; one host also lacks the private root:",
            ("trusting", "trusting-2", "no-private-root"),
            Expect(Cause.SNI_DIFFERENCE, ("trusting", "trusting-2", "no-private-root")),
            _build_sni_default,
            san_lacks(_PAIR, "api.sni-default-beside-missing-root.lab.test"),
            probe_args=("--no-sni",),
        ),
        Scenario(
            "expiring-tomorrow-clock-ahead",
            "The certificate expires tomorrow; a host whose clock runs two days ahead already fails:",
            ("trusting", "trusting-2", "skew-ahead"),
            Expect(Cause.CLOCK_SKEW, ("skew-ahead",), Severity.CRITICAL),
            _build_expiring_in_a_day,
            all_of(native({"trusting": "ok", "skew-ahead": "expired"}), clock_offset("skew-ahead", SKEW_MS)),
        ),
        Scenario(
            "expired-behind-proxy",
            "The certificate expired; one host's proxy re-signs it with a fresh one of its own:",
            ("trusting", "trusting-2", "behind-proxy"),
            Expect(Cause.EXPIRED, _PAIR, mentions="Renew the certificate"),
            _build_expired_behind_proxy,
            native({"trusting": "expired", "trusting-2": "expired", "behind-proxy": "ok"}),
        ),
        Scenario(
            "backend-expired-mixed-fleet",
            "Two backends behind one name, one with an expired certificate; a mixed fleet sees both.",
            ("trusting", "trusting-2", "skew-ahead", "no-private-root"),
            Expect(Cause.INCONSISTENT_BACKENDS, ("trusting", "trusting-2", "skew-ahead", "no-private-root")),
            _build_one_backend_expired,
            two_backends(_PAIR),
            slots=2,
        ),
        Scenario(
            "backend-stale",
            "Two backends behind one name; one still serves last quarter's certificate, four days from its end.",
            _PAIR,
            Expect(Cause.EXPIRING_SOON, _PAIR, Severity.CRITICAL, mentions="(1 of 2 addresses; 127.88."),
            _build_one_backend_stale,
            _two_backends_verifying(_PAIR),
            slots=2,
        ),
        Scenario(
            "proxy-on-host-without-root",
            "A proxy intercepts on a host that also lacks the private root: the proxy's chain is what it sees.",
            (*_PAIR, "proxy-no-root"),
            Expect(Cause.TLS_INTERCEPTION, ("proxy-no-root",)),
            _build_proxy_no_root,
            all_of(
                native({"trusting": "ok", "trusting-2": "ok"}),
                issuer_contains({"trusting": "Acme Internal", "proxy-no-root": "Corp Proxy CA"}),
            ),
        ),
        Scenario(
            "proxy-on-skewed-host",
            "A proxy intercepts on a host whose clock runs behind; the proxy's fresh certificate fails there:",
            (*_PAIR, "proxy-skewed"),
            Expect(Cause.CLOCK_SKEW, ("proxy-skewed",), Severity.CRITICAL),
            _build_proxy_for_skewed,
            all_of(
                native({"trusting": "ok", "trusting-2": "ok"}),
                issuer_contains({"trusting": "Acme Internal", "proxy-skewed": "Corp Proxy CA"}),
            ),
        ),
        Scenario(
            "pinned-host-lacks-root-expired",
            "A host pinned to the old, expired backend also lacks the private root: both causes, on that host.",
            ("trusting", "trusting-2", "pinned-no-root"),
            Expect(Cause.DNS_DIFFERENCE, ("trusting", "trusting-2", "pinned-no-root")),
            _build_one_backend_expired,
            native({"trusting": "ok", "pinned-no-root": "unknown_issuer"}),
            resolve_for=(("pinned-no-root", 2),),
        ),
        Scenario(
            "pinned-host-lacks-root-valid",
            "A host pinned to the old backend, whose certificate is still valid, lacks the private root: that is why.",
            ("trusting", "trusting-2", "pinned-no-root"),
            Expect(Cause.PRIVATE_CA_NOT_TRUSTED, ("pinned-no-root",)),
            _build_pin_to_valid_old,
            native({"trusting": "ok", "pinned-no-root": "unknown_issuer"}),
            resolve_for=(("pinned-no-root", 2),),
        ),
        Scenario(
            "healthy-one-offline",
            "The server is fine for every host that answered; one host's agent is offline:",
            (*_PAIR, "gone"),
            Expect(Cause.VANTAGE_UNAVAILABLE, ("gone",)),
            _build_healthy,
            all_of(native(dict.fromkeys(_PAIR, "ok")), states({"gone": "offline"})),
            needs=_QUIET,
        ),
        Scenario(
            "expired-one-offline",
            "The certificate expired; one agent is offline: the server finding, and what that host could not see.",
            ("trusting", "trusting-2", "gone"),
            Expect(Cause.EXPIRED, _PAIR),
            _build_expired,
            all_of(native(dict.fromkeys(_PAIR, "expired")), states({"gone": "offline"})),
        ),
        Scenario(
            "healthy-harmless-differences",
            "Every host verifies; one speaks TLS 1.2 by policy, one has a larger store: nothing to report.",
            (*_PAIR, "tls12-only", "big-store"),
            Expect(None),
            _build_healthy_outside,
            all_of(
                native(dict.fromkeys((*_PAIR, "tls12-only", "big-store"), "ok")),
                handshake(
                    {"tls12-only": lambda a: a["handshake"]["tls_version"] == "TLSv1.2"},
                    "expected TLS 1.2 on tls12-only",
                ),
            ),
            resolve_for=(("big-store", OUTSIDE),),
            needs=_QUIET,
        ),
    )


COMBINED_SCENARIOS: tuple[Scenario, ...] = _catalogue()
