"""TLS interception: at the same address, some vantages get a leaf from another issuer than the rest.

Two leaves have the same issuer when their issuer names match or their Authority Key Identifiers do
(a renamed CA keeps its key; a re-keyed CA keeps its name), so a rotated certificate from the same CA
is never interception. Issuers are clustered that way over every row; interception is claimed only
when, at an address, vantages split between clusters and:

- the foreign cluster's vantages see it at every address they probed, and no other vantage sees it
  anywhere (a proxy re-signs all of a host's traffic; a half-migrated pool hands either CA to anyone);
- the server's cluster is the one strictly most vantages see. On a tie the finding names both sides
  without deciding which one is intercepted.

Critical when a vantage that sees the foreign issuer fails verification; warning when they all trust
it (the interception is invisible to them, but the certificate is not the server's).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from ...agent.model import Verdict
from ...agent.trust.certinfo import CertSummary
from ..observation import DiagnosisSettings, Observation, Row
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import agree, common_name, count, name_list

_SHOW = "openssl x509 -noout -issuer -fingerprint -sha256"


@dataclass(frozen=True)
class _Issuer:
    name: str  # RFC 4514
    key_id: str  # hex AKI of the leaf, "" when absent


@dataclass(frozen=True)
class _Seen:
    row: Row
    leaf: CertSummary
    cluster: int


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    seen = _clustered(observation.rows_with_chain)
    if len({s.cluster for s in seen}) < 2:
        return
    contested = _contested_addresses(seen)
    if not contested:
        return
    # Vantages per cluster, over the addresses where vantages disagree.
    vantages: dict[int, set[str]] = defaultdict(set)
    for s in seen:
        if s.row.address.address in contested:
            vantages[s.cluster].add(s.row.agent)
    ranked = sorted(vantages, key=lambda c: -len(vantages[c]))
    server = ranked[0]
    if len(vantages[server]) == len(vantages[ranked[1]]):
        if all(_consistent_and_exclusive(seen, c) for c in ranked):
            yield _undecided(observation, seen, ranked, contested)
        return
    for cluster in ranked[1:]:
        if _consistent_and_exclusive(seen, cluster):
            yield _intercepted(observation, seen, cluster, server, contested)


def _clustered(rows: tuple[Row, ...]) -> list[_Seen]:
    """Each row with its leaf and the issuer cluster (same name or same key id = same issuer)."""
    pairs = [(r, leaf) for r in rows if (leaf := r.leaf) is not None]
    parent: dict[_Issuer, _Issuer] = {}

    def find(x: _Issuer) -> _Issuer:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    by_name: dict[str, _Issuer] = {}
    by_key: dict[str, _Issuer] = {}
    for _, leaf in pairs:
        issuer = _Issuer(leaf.issuer, leaf.authority_key_id)
        find(issuer)
        for index, value in ((by_name, issuer.name), (by_key, issuer.key_id)):
            if not value:
                continue
            if value in index:
                parent[find(issuer)] = find(index[value])
            else:
                index[value] = issuer
    ids: dict[_Issuer, int] = {}
    seen = []
    for r, leaf in pairs:
        root = find(_Issuer(leaf.issuer, leaf.authority_key_id))
        seen.append(_Seen(r, leaf, ids.setdefault(root, len(ids))))
    return seen


def _contested_addresses(seen: list[_Seen]) -> set[str]:
    clusters: dict[str, set[int]] = defaultdict(set)
    for s in seen:
        clusters[s.row.address.address].add(s.cluster)
    return {a for a, c in clusters.items() if len(c) > 1}


def _consistent_and_exclusive(seen: list[_Seen], cluster: int) -> bool:
    """Every vantage that sees this issuer anywhere sees only it, at every address it probed."""
    agents = {s.row.agent for s in seen if s.cluster == cluster}
    return all(s.cluster == cluster for s in seen if s.row.agent in agents)


def _verifies(row: Row) -> bool:
    return row.address.native.verdict is Verdict.OK and not row.handshake_failed


def _issuer_label(leaf: CertSummary) -> str:
    key = f" (key id {leaf.authority_key_id[:12]})" if leaf.authority_key_id else ""
    return f"'{common_name(leaf.issuer)}'{key}"


def _top(leaf_row: Row) -> str:
    """Where the served chain leads: the issuer of its last certificate."""
    certs = leaf_row.certificates()
    return f"'{common_name(certs[-1].issuer)}'" if certs else "-"


def _evidence(rows: list[_Seen]) -> tuple[Evidence, ...]:
    return (
        Evidence("leaf issuer", tuple((s.row.where, s.leaf.issuer) for s in rows)),
        Evidence("leaf authority key id", tuple((s.row.where, s.leaf.authority_key_id or "-") for s in rows)),
        Evidence("served chain leads to", tuple((s.row.where, _top(s.row)) for s in rows)),
        Evidence("leaf sha256", tuple((s.row.where, s.leaf.short_fingerprint) for s in rows)),
        Evidence("native verdict", tuple((s.row.where, str(s.row.address.native.verdict)) for s in rows)),
    )


def _reproduce(observation: Observation, row: Row) -> tuple[str, ...]:
    port = observation.request.target.port
    return (
        "env | grep -i _proxy",
        f"{s_client(row.address.address, port, row.result.sni, show_certs=False)} 2>/dev/null | {_SHOW}",
        s_client(row.address.address, port, row.result.sni),
    )


def _intercepted(
    observation: Observation, seen: list[_Seen], cluster: int, server: int, contested: set[str]
) -> Finding:
    mine = [s for s in seen if s.cluster == cluster]
    theirs = [s for s in seen if s.cluster == server and s.row.address.address in contested]
    agents = tuple(dict.fromkeys(s.row.agent for s in mine))
    others = tuple(dict.fromkeys(s.row.agent for s in theirs))
    addresses = tuple(dict.fromkeys(s.row.address.address for s in mine))
    foreign, genuine = mine[0].leaf, theirs[0].leaf
    failing = [s for s in mine if not _verifies(s.row)]
    host = observation.request.target.host
    if failing:
        severity = Severity.CRITICAL
        verdicts = ", ".join(sorted({str(s.row.address.native.verdict) for s in failing}))
        outcome = f"and they reject it ({verdicts})"
    else:
        severity = Severity.WARNING
        outcome = "and they trust its CA, so TLS works for them but the certificate they get is not the server's"
    summary = (
        f"{name_list(agents)} {agree('see', agents)} the certificate of {host} at {', '.join(addresses)} issued by "
        f"{_issuer_label(foreign)}, not by {_issuer_label(genuine)} as {name_list(others)} "
        f"({count(len(others), 'vantage')}) see it: a proxy or middlebox on their path re-signs TLS with its own "
        f"CA, {outcome}."
    )
    fix = (
        f"Check HTTPS_PROXY/https_proxy on {name_list(agents)} and any corporate proxy or TLS-inspection appliance "
        f"on their path: if inspection is intended, add its root CA (the chain leads to {_top(mine[0].row)}) "
        f"to their trust stores or exempt {host} from inspection (NO_PROXY or the appliance's bypass list); if it "
        "is not intended, this is a man-in-the-middle: find the device that terminates TLS."
    )
    return Finding(
        cause=Cause.TLS_INTERCEPTION,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=_evidence(mine + theirs),
        fix=fix,
        reproduce=_reproduce(observation, mine[0].row),
    )


def _undecided(observation: Observation, seen: list[_Seen], ranked: list[int], contested: set[str]) -> Finding:
    rows = [s for s in seen if s.row.address.address in contested]
    sides = []
    for cluster in ranked:
        side = [s for s in rows if s.cluster == cluster]
        agents = list(dict.fromkeys(s.row.agent for s in side))
        sides.append(f"{name_list(agents)} {agree('see', agents)} {_issuer_label(side[0].leaf)}")
    failing = [s for s in rows if not _verifies(s.row)]
    host = observation.request.target.host
    return Finding(
        cause=Cause.TLS_INTERCEPTION,
        severity=Severity.CRITICAL if failing else Severity.WARNING,
        summary=(
            f"Vantages disagree on who issued the certificate of {host} at {', '.join(sorted(contested))}: "
            f"{'; '.join(sides)} (different issuer name and key): a proxy or middlebox on one side re-signs TLS, "
            "and as many vantages see each issuer, so compare with a host known to reach the server directly."
        ),
        agents=tuple(dict.fromkeys(s.row.agent for s in rows)),
        addresses=tuple(sorted(contested)),
        evidence=_evidence(rows),
        fix=(
            "Find which side's issuer is the server's (ask its owner, or check from the server's own network), then "
            "check HTTPS_PROXY/https_proxy and any TLS-inspection appliance on the other side's path."
        ),
        reproduce=_reproduce(observation, (failing or rows)[0].row),
    )
