"""Trust anchors out of their validity in a host's own store: the chain is fine, the root it ends at there
is not.

A server that sends a cross-signed root (its new root signed by an older one, so that hosts with only the
old root still verify) works until that old root expires: hosts whose store holds the new root verify
through it (OpenSSL takes a trusted certificate first), hosts that hold only the old one now fail with
"certificate has expired" (X509_V_ERR_CERT_HAS_EXPIRED, 10), as on 30 September 2021 when DST Root CA X3
expired under Let's Encrypt's chain. Nothing served is expired, so validity.py, which judges served
certificates, has nothing to say; this rule names the root that expired in those hosts' stores, the root
the others verify through, and installing it as the fix.

A row counts when its native verdict is a time failure, a system store reached the same verdict at true
time (the reference time: a host whose own clock is wrong is clock skew's), the last certificate of that
store's path is not one the server sent, and every served certificate on the path is within its validity
at true time. Its code says which: 10 expired (cause `expired`), 9 not yet valid (`not_yet_valid`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from ...agent.model import StoreVerdict, Verdict
from ..observation import TIME_FAILURES, DiagnosisSettings, Observation, Row
from .model import Cause, Evidence, Finding, Severity
from .reproduce import save_chain, verify_at
from .store_use import is_system_store
from .timebase import judgement_time
from .wording import agree, name_list

__all__ = ["anchor_out_of_window", "findings"]


@dataclass(frozen=True)
class _Stale:
    """A system store whose path for a served chain ends at a root of its own that is out of its validity."""

    row: Row
    store: StoreVerdict  # the system store whose path ends at the stale anchor
    anchor: str  # its sha256
    name: str  # its subject as the certificate below it names its issuer
    below: str  # the subject of the served certificate it signed


def anchor_out_of_window(row: Row) -> bool:
    """The host's own clients fail on time while their store's path ends outside what was served: the
    anchor in the store, not the server's chain, is what is out of its validity (or the host's clock)."""
    return row.address.native.verdict in TIME_FAILURES and any(
        s.at_reference_time in TIME_FAILURES and s.verified_path and s.verified_path[-1] not in _served(row)
        for s in row.address.stores
        if is_system_store(s.store)
    )


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    at = judgement_time(observation, settings)
    stale = [s for row in observation.rows_with_chain if (s := _stale(row, at)) is not None]
    groups: dict[tuple[str, Verdict], list[_Stale]] = {}
    for s in stale:
        groups.setdefault((s.anchor, s.store.at_reference_time), []).append(s)
    verifying = [r for r in observation.rows_with_chain if r.address.native.verdict is Verdict.OK]
    for (_anchor, verdict), members in groups.items():
        yield _finding(observation, settings, verdict, members, verifying)


def _served(row: Row) -> dict[str, int]:
    return {fp: position for position, fp in enumerate(row.chain_fingerprints)}


def _stale(row: Row, at: datetime) -> _Stale | None:
    if not anchor_out_of_window(row):
        return None
    served = _served(row)
    for store in row.address.stores:
        path = store.verified_path
        if not (is_system_store(store.store) and store.at_reference_time in TIME_FAILURES and path):
            continue
        if path[-1] in served or len(path) < 2 or path[-2] not in served:
            continue
        on_path = [row.summaries[served[fp]] for fp in path if fp in served]
        if any(c is None or not c.not_before <= at <= c.not_after for c in on_path):
            return None  # a served certificate is out of its window: validity.py's finding
        below = row.summaries[served[path[-2]]]
        assert below is not None
        return _Stale(row, store, path[-1], below.issuer, below.subject)
    return None


def _finding(
    observation: Observation,
    settings: DiagnosisSettings,
    verdict: Verdict,
    members: list[_Stale],
    verifying: list[Row],
) -> Finding:
    first = members[0]
    agents = tuple(dict.fromkeys(s.row.agent for s in members))
    expired = verdict is Verdict.EXPIRED
    state = "which has expired" if expired else "which is not yet valid"
    code = "10, certificate has expired" if expired else "9, certificate is not yet valid"
    others = [r for r in verifying if r.agent not in agents]
    current = _root_through(others) or first.below
    summary = (
        f"On {name_list(agents)}, OpenSSL clients reject {observation.target} (verify error {code}): in "
        f"{'its' if len(agents) == 1 else 'their'} trust store the served chain ends at '{first.name}', {state}"
        f" — the server's '{first.below}' is signed by it."
    )
    if others:
        summary += (
            f" {name_list(tuple(dict.fromkeys(r.agent for r in others)))} "
            f"{agree('verify', len({r.agent for r in others}))} it through '{current}', which "
            f"{'that store lacks' if len(agents) == 1 else 'those stores lack'}."
        )
    fix = (
        f"Install the current root '{current}' in the system trust store of {name_list(agents)} (Debian/Ubuntu: "
        "upgrade the ca-certificates package, or copy the root to /usr/local/share/ca-certificates/ and run "
        f"update-ca-certificates) and remove '{first.name}': OpenSSL 1.1.0 and later then verify through the "
        "installed root even while the server still sends the cross-signed one. Clients that cannot be updated "
        "keep failing whatever the server sends."
    )
    evidence = [
        Evidence(
            "store verdicts",
            tuple(
                (s.row.where, f"{s.store.store} {s.store.at_reference_time} ({s.store.verify_code}): {s.store.detail}")
                for s in members
            ),
        ),
        Evidence(
            "path in the store",
            tuple((s.row.where, " <- ".join(fp[:12] for fp in s.store.verified_path)) for s in members),
        ),
    ]
    if others:
        evidence.append(Evidence("verifies", tuple((r.where, f"native {r.address.native.verdict}") for r in others)))
    store_path = next((t.path for t in first.row.result.trust_stores if t.name == first.store.store and t.path), "")
    port = observation.request.target.port
    return Finding(
        cause=Cause.EXPIRED if expired else Cause.NOT_YET_VALID,
        severity=Severity.CRITICAL,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(s.row.address.address for s in members)),
        evidence=tuple(evidence),
        fix=fix,
        reproduce=(
            save_chain(first.row.address.address, port, first.row.result.sni),
            verify_at(settings.reference_time, store_path or None, first.row.result.expected_name),
        ),
    )


def _root_through(rows: list[Row]) -> str:
    """The root the verifying rows' system stores end at, by the name the certificate below it gives."""
    for row in rows:
        served = _served(row)
        for store in row.address.stores:
            path = store.verified_path
            if is_system_store(store.store) and store.at_reference_time is Verdict.OK and len(path) >= 2:
                if path[-1] in served:
                    summary = row.summaries[served[path[-1]]]
                    return summary.subject if summary is not None else ""
                if path[-2] in served:
                    below = row.summaries[served[path[-2]]]
                    return below.issuer if below is not None else ""
    return ""
