"""Who issued the leaf each vantage was served, and which vantages see, for the same name, an issuer that
no other vantage sees: the evidence of a TLS-intercepting proxy or middlebox.

Shared by the interception rule (which names it) and the endpoint rule (which, when the resolver is what
sends vantages to it, says the DNS difference beside it instead of as the cause).

Two leaves have the same issuer when their issuer names match or their Authority Key Identifiers do (a
renamed CA keeps its key; a re-keyed CA keeps its name), so a rotated certificate, or per-region
certificates behind geo-DNS, from the same CA are never foreign. Issuers are clustered that way over every
row. A cluster is foreign when every vantage that sees it sees only it, at every address it probed (a
proxy re-signs all of a host's traffic; a half-migrated pool hands either CA to anyone), and:

- same address: at some address, vantages split between it and the server's cluster, the one strictly
  most vantages see there. On a tie, both sides are named without deciding (`Issuers.undecided`);
- or the resolver chose it: the vantages' own resolvers sent them to addresses that no vantage of the
  server's cluster (the one strictly most vantages see) resolved, and the issuer is foreign by evidence,
  not merely different: those vantages reject the chain on trust while the server's side trusts its own,
  or the stores that trust it hold a root set that no vantage of the server's side has (the issuer was
  installed only there). A chain that the stores every vantage shares would trust is another CA behind
  geo-DNS, not interception, and so is any chain when the vantages report no store identities.

Everything here is linear in the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from ...agent.model import Verdict
from ...agent.trust.certinfo import CertSummary
from ..observation import TRUST_FAILURES, Observation, Row

__all__ = ["Foreign", "Issuers", "Route", "Seen", "analyse"]

_PATH_FOUND = frozenset(Verdict) - TRUST_FAILURES - {Verdict.NO_CHAIN, Verdict.OTHER}


class Route(StrEnum):
    SAME_ADDRESS = "same_address"  # the server's address answers these vantages with another issuer
    RESOLVER = "resolver"  # their resolver sends them to an address of their own


@dataclass(frozen=True)
class Seen:
    """A served leaf, the row it was served on, and the cluster of issuers it belongs to."""

    row: Row
    leaf: CertSummary
    cluster: int


@dataclass(frozen=True)
class Foreign:
    """Vantages that see an issuer no other vantage sees, and the server's side they are compared with."""

    route: Route
    rows: tuple[Seen, ...]  # every row of the foreign cluster
    genuine: tuple[Seen, ...]  # the server's cluster: at the contested addresses, or everywhere (resolver)
    addresses: tuple[str, ...]  # where the foreign issuer answers
    contested: tuple[str, ...] = ()  # addresses where both issuers answer (SAME_ADDRESS)
    why: str = ""  # what makes the issuer foreign, as a clause (RESOLVER)
    stores: tuple[tuple[str, str], ...] = ()  # (where, the trusting store) when its roots are the evidence

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.row.agent for s in self.rows))

    @property
    def failing(self) -> tuple[Seen, ...]:
        return tuple(s for s in self.rows if not verifies(s.row))


@dataclass(frozen=True)
class Undecided:
    """As many vantages see each issuer at the same address: which one is the server's is not decided."""

    sides: tuple[tuple[Seen, ...], ...]  # one per cluster, most vantages first
    contested: tuple[str, ...]


@dataclass
class Issuers:
    """Who issued the leaves the fleet was served: the clusters, those foreign to the main one, what stays undecided."""

    seen: list[Seen]
    foreign: list[Foreign] = field(default_factory=list)
    undecided: Undecided | None = None

    def steered(self) -> set[str]:
        """`agent@address` of the rows a resolver sent to a foreign issuer."""
        return {s.row.where for f in self.foreign if f.route is Route.RESOLVER for s in f.rows}


def verifies(row: Row) -> bool:
    return row.address.native.verdict is Verdict.OK and not row.handshake_failed


def analyse(observation: Observation) -> Issuers:
    seen = _clustered(observation.rows_with_chain)
    found = Issuers(seen)
    if len({s.cluster for s in seen}) < 2:
        return found
    agent_clusters: dict[str, set[int]] = {}
    address_clusters: dict[str, set[int]] = {}
    by_cluster: dict[int, list[Seen]] = {}
    for s in seen:
        agent_clusters.setdefault(s.row.agent, set()).add(s.cluster)
        address_clusters.setdefault(s.row.address.address, set()).add(s.cluster)
        by_cluster.setdefault(s.cluster, []).append(s)

    def exclusive(cluster: int) -> bool:
        """Every vantage that sees this issuer anywhere sees only it, at every address it probed."""
        return all(agent_clusters[s.row.agent] == {cluster} for s in by_cluster[cluster])

    claimed: set[int] = set()
    contested = {a for a, c in address_clusters.items() if len(c) > 1}
    if contested:
        at_contested: dict[int, dict[str, None]] = {}
        for s in seen:
            if s.row.address.address in contested:
                at_contested.setdefault(s.cluster, {})[s.row.agent] = None
        ranked = sorted(at_contested, key=lambda c: -len(at_contested[c]))
        server = ranked[0]
        if len(at_contested[server]) == len(at_contested[ranked[1]]):
            if all(exclusive(c) for c in ranked):
                rows = [s for s in seen if s.row.address.address in contested]
                sides = tuple(tuple(s for s in rows if s.cluster == c) for c in ranked)
                found.undecided = Undecided(sides, tuple(sorted(contested)))
            return found
        theirs = tuple(s for s in by_cluster[server] if s.row.address.address in contested)
        for cluster in ranked[1:]:
            if exclusive(cluster):
                mine = tuple(by_cluster[cluster])
                found.foreign.append(
                    Foreign(
                        Route.SAME_ADDRESS,
                        mine,
                        theirs,
                        _addresses(mine),
                        contested=tuple(a for a in _addresses(mine) if a in contested),
                    )
                )
                claimed.add(cluster)
    if not observation.request.options.pin_address:
        found.foreign += _steered(observation, by_cluster, address_clusters, exclusive, claimed)
    return found


def _steered(
    observation: Observation,
    by_cluster: dict[int, list[Seen]],
    address_clusters: dict[str, set[int]],
    exclusive: Callable[[int], bool],
    claimed: set[int],
) -> list[Foreign]:
    vantages = {c: {s.row.agent for s in rows} for c, rows in by_cluster.items()}
    ranked = sorted(vantages, key=lambda c: -len(vantages[c]))
    server = ranked[0]
    if len(vantages[server]) == len(vantages[ranked[1]]):
        return []  # no side is the server's by numbers: the DNS difference is told without a culprit
    genuine = tuple(by_cluster[server])
    server_resolved = {a for s in genuine for a in s.row.result.resolution.addresses}
    server_trusts = any(s.row.address.native.verdict not in TRUST_FAILURES for s in genuine)
    server_roots = {t.fingerprint for s in genuine for t in s.row.result.trust_stores if t.fingerprint}
    out = []
    for cluster in ranked[1:]:
        rows = by_cluster[cluster]
        if cluster in claimed or not exclusive(cluster):
            continue
        if any(len(address_clusters[s.row.address.address]) > 1 for s in rows):
            continue
        chosen = all(
            s.row.address.address in s.row.result.resolution.addresses and s.row.address.address not in server_resolved
            for s in rows
        )
        if not chosen:
            continue
        if server_trusts and any(s.row.address.native.verdict in TRUST_FAILURES for s in rows):
            why = "they reject its chain on trust while the other vantages trust the server's"
            out.append(Foreign(Route.RESOLVER, tuple(rows), genuine, _addresses(rows), why=why))
            continue
        stores = _trusting_stores(rows)
        if stores and all(fp not in server_roots for _where, _name, fp in stores):
            why = (
                "the stores that trust it there hold a root set no vantage of the other side has: its CA was "
                "installed on these hosts only"
            )
            shown = tuple(dict.fromkeys((where, f"{name} (root set sha256 {fp[:12]})") for where, name, fp in stores))
            out.append(Foreign(Route.RESOLVER, tuple(rows), genuine, _addresses(rows), why=why, stores=shown))
    return out


def _trusting_stores(rows: Iterable[Seen]) -> list[tuple[str, str, str]]:
    """(where, store name, root-set fingerprint) of every store that found a path for these rows; empty when
    some row has none with a known identity (then nothing can be told from the roots)."""
    out = []
    for s in rows:
        identities = {t.name: t.fingerprint for t in s.row.result.trust_stores if t.fingerprint}
        mine = [
            (s.row.where, v.store, identities[v.store])
            for v in s.row.address.stores
            if v.at_agent_time in _PATH_FOUND and v.store in identities
        ]
        if not mine:
            return []
        out += mine
    return out


def _addresses(rows: Iterable[Seen]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.row.address.address for s in rows))


def _clustered(rows: tuple[Row, ...]) -> list[Seen]:
    """Each row with its leaf and the issuer cluster (same name or same key id = same issuer)."""
    pairs = [(r, leaf) for r in rows if (leaf := r.leaf) is not None]
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression keeps every lookup near constant
            parent[x], x = root, parent[x]
        return root

    by_name: dict[str, tuple[str, str]] = {}
    by_key: dict[str, tuple[str, str]] = {}
    for issuer in dict.fromkeys((leaf.issuer, leaf.authority_key_id) for _, leaf in pairs):
        find(issuer)
        for index, value in ((by_name, issuer[0]), (by_key, issuer[1])):
            if not value:
                continue
            if value in index:
                a, b = find(issuer), find(index[value])
                if a != b:
                    parent[a] = b
            else:
                index[value] = issuer
    ids: dict[tuple[str, str], int] = {}
    cluster = {issuer: ids.setdefault(find(issuer), len(ids)) for issuer in parent}
    return [Seen(r, leaf, cluster[(leaf.issuer, leaf.authority_key_id)]) for r, leaf in pairs]
