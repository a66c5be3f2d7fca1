"""Symptom checks: what the vantages of a `tlsfleet probe --json` report must show, before any conclusion.

Each check takes the report's vantages by agent name and returns None when the fault is visible as
expected, otherwise what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Symptom",
    "Vantages",
    "all_of",
    "chain_length",
    "clock_offset",
    "expiring_in_days",
    "handshake",
    "issuer_contains",
    "native",
    "resolves",
    "san_lacks",
    "states",
    "store_verdicts",
    "two_backends",
    "verify_codes",
]

Vantages = Mapping[str, Mapping[str, Any]]  # agent name -> its entry in the report's "vantages"
Symptom = Callable[[Vantages], str | None]  # None when the fault is visible as expected


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


def native(expected: Mapping[str, str | tuple[str, ...]]) -> Symptom:
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


def all_of(*checks: Symptom) -> Symptom:
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


def expiring_in_days(agents: Sequence[str], at_most: float) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            not_after = datetime.fromisoformat(_leaf(vantages, agent)["not_after"])
            left = (not_after - datetime.now(UTC)).total_seconds() / 86400
            if not 0 < left <= at_most:
                return f"{agent}: the leaf has {left:.1f} days left, expected at most {at_most:g}"
        return None

    return check


def chain_length(agents: Sequence[str], length: int, *, aia: bool = False) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            certificates = _addresses(vantages[agent])[0].get("certificates") or []
            if len(certificates) != length:
                return f"{agent}: {len(certificates)} certificates served, expected {length}"
            if aia and not certificates[0].get("aia_ca_issuers"):
                return f"{agent}: the leaf carries no AIA caIssuers URL"
        return None

    return check


def clock_offset(agent: str, expected_ms: float, tolerance_ms: float = 60_000) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        offset = (vantages[agent].get("clock") or {}).get("offset_ms")
        if offset is None or abs(offset - expected_ms) > tolerance_ms:
            return f"{agent}: clock offset {offset} ms, expected about {expected_ms:+.0f} ms"
        return None

    return check


def issuer_contains(expected: Mapping[str, str]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, text in expected.items():
            issuer = _leaf(vantages, agent).get("issuer", "")
            if text not in issuer:
                return f"{agent}: leaf issuer {issuer!r}, expected one naming {text!r}"
        return None

    return check


def resolves(expected: Mapping[str, Callable[[str], bool]], what: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, accept in expected.items():
            addresses = (vantages[agent].get("result") or {}).get("resolution", {}).get("addresses", [])
            if not addresses or not all(accept(a) for a in addresses):
                return f"{agent}: resolved to {addresses}, expected {what}"
        return None

    return check


def two_backends(agents: Sequence[str]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            rows = _addresses(vantages[agent])
            leaves = {(r.get("certificates") or [{}])[0].get("sha256") for r in rows}
            verdicts = sorted(r["native"]["verdict"] for r in rows)
            if len(rows) != 2 or len(leaves) != 2 or verdicts != ["expired", "ok"]:
                return f"{agent}: {len(rows)} addresses, {len(leaves)} leaves, verdicts {verdicts}"
        return None

    return check


def handshake(expected: Mapping[str, Callable[[Mapping[str, Any]], bool]], what: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, accept in expected.items():
            for address in _addresses(vantages[agent]):
                if not accept(address):
                    return f"{agent}: handshake {address['handshake']}, connect {address['connect_failure']}; {what}"
        return None

    return check


def states(expected: Mapping[str, str]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, state in expected.items():
            seen = vantages.get(agent, {}).get("state")
            if seen != state:
                return f"{agent}: state {seen}, expected {state}"
        return None

    return check


def san_lacks(agents: Sequence[str], name: str) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent in agents:
            san = _leaf(vantages, agent).get("san", [])
            if name in san:
                return f"{agent}: the leaf served covers {name}; expected the default certificate"
        return None

    return check


def store_verdicts(expected: Mapping[str, tuple[str, str]]) -> Symptom:
    def check(vantages: Vantages) -> str | None:
        for agent, (store, verdict) in expected.items():
            for address in _addresses(vantages[agent]):
                # A verdict given once for identical stores ("same_as") answers for each of them.
                seen = {
                    name: s["at_agent_time"]
                    for s in address.get("stores", [])
                    for name in (s["store"], *s.get("same_as", ()))
                }
                if seen.get(store) != verdict:
                    return f"{agent}: store {store} says {seen.get(store)}, expected {verdict}"
        return None

    return check


def verify_codes(expected: Mapping[str, int]) -> Symptom:
    """Every address each agent probed got this OpenSSL verify code from its native client."""

    def check(vantages: Vantages) -> str | None:
        problem = _answered(vantages, list(expected))
        if problem:
            return problem
        for agent, code in expected.items():
            seen = [a["native"]["verify_code"] for a in _addresses(vantages[agent])]
            if any(c != code for c in seen):
                return f"{agent}: native verify codes {seen}, expected {code}"
        return None

    return check
