"""Endpoint differences behind one name, kept apart by where the difference lies:

- DNS_DIFFERENCE: vantages resolve the name to different address sets, and the sets serve different
  chains (compared as whole served chains: a stale load balancer may differ only in its intermediate).
  Critical when a vantage fails on a chain that verifies nowhere while the vantages of another set,
  which are not served that chain, all verify; otherwise warning. A vantage fails for a reason of its
  own (a missing root, a clock), which neither spoils its set, nor is told as that set's verdict, nor is
  blamed on the answer it got, when some vantage verifies the very chain it was served, or when it fails
  on trust for a chain whose issuing path some vantage verifies and whose certificates are all within
  their windows at true time. Different sets serving the same chains are a harmless split-horizon or geo-DNS
  answer: info only. Sets that differ only in address family (some vantages get the IPv4 addresses
  alone, others IPv4 and IPv6) are no different answer: a host without IPv6 asks for, or is given, no
  AAAA record. They are one set with some vantages blind to a family, told as such by the backends'
  finding below, and never blamed on a resolver.
- INCONSISTENT_BACKENDS: within ONE address set, addresses serve different leaves, as one vantage sees
  across its own addresses, or as vantages that resolved the same set see across addresses that each
  answered them all alike. An address that hands different leaves to different vantages is left out
  here: that is interception's or SNI's question, not the backends'. Critical when one of the leaves
  is outside its validity window at reference time, or when on one vantage some addresses verify and
  others do not; otherwise warning. A vantage that fails on every address fails for its own reasons:
  its verdicts are not told as the backends'.

When a resolver sends some vantages to an address where an issuer no other vantage sees answers (`issuers`:
DNS-steered interception), that interception is the cause and the DNS difference its route: said beside it,
at warning at most, so that the interception finding explains why those vantages fail.

A pinned probe (one address, no resolution) can show neither. Everything here is linear in the rows.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from ...agent.model import Failure, Verdict
from ...agent.trust.certinfo import CertSummary
from ..observation import TRUST_FAILURES, DiagnosisSettings, Observation, Row
from .chain_shape import trust_key
from .issuers import analyse
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .timebase import judgement_time
from .wording import MAX_NAMED, agree, capped, cert_brief, count, name_list

_SHOW = "openssl x509 -noout -fingerprint -sha256 -enddate -issuer"
_MAX_REPRODUCE = 3


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    if observation.request.options.pin_address:
        return
    groups = _groups(observation)
    partial = _family_partial(groups)
    if partial is None:
        yield from _dns_difference(observation, groups, judgement_time(observation, settings))
    yield from _inconsistent_backends(observation, groups, settings, partial or [])


@dataclass
class _Group:
    """Vantages that resolved the name to the same address set, and the rows they got."""

    addresses: tuple[str, ...]
    agents: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)  # rows with a chain

    # Read once the group is complete (`_groups` returns them so).
    @cached_property
    def chains(self) -> frozenset[tuple[str, ...]]:
        return frozenset(r.chain_fingerprints for r in self.rows)

    def verifies(self, own: set[str]) -> bool:
        """Every row verifies, or fails for a reason of its own (`own`: the rows' `where`)."""
        return all(_verifies(r) or r.where in own for r in self.rows)


def _groups(observation: Observation) -> list[_Group]:
    groups: dict[tuple[str, ...], _Group] = {}
    by_agent: dict[str, list[Row]] = defaultdict(list)
    for r in observation.rows_with_chain:
        by_agent[r.agent].append(r)
    for o in observation.answered:
        assert o.result is not None
        resolution = o.result.resolution
        rows = by_agent.get(o.vantage.name)
        if resolution.failure is not Failure.NONE or not resolution.addresses or not rows:
            continue
        key = tuple(sorted(set(resolution.addresses)))
        group = groups.setdefault(key, _Group(key))
        group.agents.append(o.vantage.name)
        group.rows.extend(rows)
    return list(groups.values())


def _family(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:  # a proxy's host name (--via-proxy), or an agent's word that is no address
        return 0


def _family_partial(groups: list[_Group]) -> list[_Group] | None:
    """When the sets differ only in address family (each set holds every address of the families it holds,
    and some set holds them all), the sets that lack a family; otherwise None."""
    if len(groups) < 2:
        return None
    union = {a for g in groups for a in g.addresses}
    for g in groups:
        families = {_family(a) for a in g.addresses}
        if set(g.addresses) != {a for a in union if _family(a) in families}:
            return None
    if not any(set(g.addresses) == union for g in groups):
        return None
    return [g for g in groups if set(g.addresses) != union]


def _families_apart(groups: list[_Group]) -> bool:
    """Each set holds one address family, a family no other set holds: IPv4-only hosts beside IPv6-only ones."""
    families = [{_family(a) for a in g.addresses} for g in groups]
    return all(len(f) == 1 for f in families) and len({next(iter(f)) for f in families}) == len(families)


def _verifies(row: Row) -> bool:
    return row.address.native.verdict is Verdict.OK and not row.handshake_failed


def _time_problem(cert: CertSummary, at: datetime) -> str:
    if at > cert.not_after:
        return "expired"
    if at < cert.not_before:
        return "not yet valid"
    return ""


def _distinct_leaves(rows: list[Row]) -> list[CertSummary]:
    leaves: dict[str, CertSummary] = {}
    for r in rows:
        leaf = r.leaf
        if leaf is not None:
            leaves.setdefault(leaf.sha256, leaf)
    return list(leaves.values())


def _own_failures(rows: Sequence[Row], at: datetime) -> set[str]:
    """The rows (by `where`) that fail for a reason of their vantage's own (see the module's docstring)."""
    good = [r for r in rows if _verifies(r)]
    chains = {r.chain_fingerprints for r in good}
    paths = {trust_key(r) for r in good}
    return {
        r.where
        for r in rows
        if not _verifies(r)
        and (
            r.chain_fingerprints in chains
            or (
                r.address.native.verdict in TRUST_FAILURES
                and trust_key(r) in paths
                and not any(_time_problem(c, at) for c in r.certificates())
            )
        )
    }


def _verdict_note(rows: list[Row], subjects: Sequence[str], own: set[str], at: datetime) -> str:
    """What these addresses' chains get: the verdicts, and any certificate out of its window at true time
    (a missing root hides an expired leaf from the verdict); a vantage failing for its own reason speaks for
    itself."""
    bad = [r for r in rows if not _verifies(r) and r.where not in own]
    windows = {p.replace(" ", "_") for r in bad for c in r.certificates() if (p := _time_problem(c, at))}
    failing = sorted({str(r.address.native.verdict) for r in bad} | windows)
    if failing:
        return f"{agree('fail', subjects)} verification ({', '.join(failing)}) there"
    apart = list(dict.fromkeys(r.agent for r in rows if not _verifies(r)))
    if apart:
        whose = "its" if len(apart) == 1 else "their"
        return f"{agree('verify', subjects)} there, except on {name_list(apart)}, for a reason of {whose} own"
    return f"{agree('verify', subjects)} there"


def _host_port(observation: Observation) -> tuple[str, int]:
    return observation.request.target.host, observation.request.target.port


# --- DNS difference -------------------------------------------------------------------------------


def _dns_difference(observation: Observation, groups: list[_Group], at: datetime) -> Iterator[Finding]:
    if len(groups) < 2:
        return
    host, port = _host_port(observation)
    agents = tuple(a for g in groups for a in g.agents)
    per_set = _per_group(groups, lambda g: f"{name_list(g.agents)} {agree('get', g.agents)} {capped(g.addresses)}")
    resolved = Evidence("resolved addresses", tuple((a, ", ".join(g.addresses)) for g in groups for a in g.agents))
    if len({g.chains for g in groups}) == 1:
        leaves = _distinct_leaves([r for g in groups for r in g.rows])
        served = " and ".join(cert_brief(c) for c in leaves)
        yield Finding(
            cause=Cause.DNS_DIFFERENCE,
            severity=Severity.INFO,
            summary=(
                f"{host} resolves to different addresses on different vantages ({per_set}), but every address "
                f"serves the same chain, {served}: a harmless split-horizon or geo-DNS answer."
            ),
            agents=agents,
            addresses=tuple(dict.fromkeys(a for g in groups for a in g.addresses)),
            evidence=(resolved,),
            fix="Nothing to fix for TLS; keep every endpoint's certificate renewed together.",
            reproduce=(f"getent ahosts {host}",),
        )
        return

    own = _own_failures([r for g in groups for r in g.rows], at)
    failing = _failing_because_of_sets(groups, own)
    steered = analyse(observation).steered()
    routed = [r for g in groups for r in g.rows if r.where in steered]
    if failing and all(r.where in steered for r in failing):
        severity = Severity.WARNING  # the interception those vantages reach is the cause; this is the route
    elif failing:
        severity = Severity.CRITICAL
    elif all(_verifies(r) for g in groups for r in g.rows):
        # Per-region certificates behind geo-DNS (CDNs) differ by design; while all verify, it is worth knowing only.
        severity = Severity.INFO
    else:
        severity = Severity.WARNING

    def part(g: _Group) -> str:
        served = " and ".join(cert_brief(c) for c in _distinct_leaves(g.rows)[:MAX_NAMED])
        return (
            f"{name_list(g.agents)} {agree('resolve', g.agents)} it to {capped(g.addresses)}, which "
            f"{agree('serve', g.addresses)} {served} and {_verdict_note(g.rows, g.addresses, own, at)}"
        )

    stale = _stale_group(groups, failing)
    failing_agents = list(dict.fromkeys(r.agent for r in failing))
    one = len(failing_agents) == 1
    consequence = (
        f"so {name_list(failing_agents)} {agree('fail', failing_agents)} because of the address family "
        f"{'it uses' if one else 'they use'}"
        if failing and _families_apart(groups)
        else f"so {name_list(failing_agents)} {agree('fail', failing_agents)} because of the answer "
        f"{'it gets' if one else 'they get'}"
        if failing
        else "so which certificate a client gets depends on its resolver"
    )
    summary = f"{host} resolves differently across vantages and the address sets serve different chains: " + (
        _per_group(groups, part) + f"; {consequence}"
    )
    if routed:
        routed_agents = list(dict.fromkeys(r.agent for r in routed))
        routed_addresses = list(dict.fromkeys(r.address.address for r in routed))
        summary += (
            f"; the answer sends {name_list(routed_agents)} to {capped(routed_addresses)}, where a certificate from "
            "an issuer no other vantage sees answers: that is the TLS interception finding, and this DNS answer "
            "is how it reaches them"
        )
    summary += "."
    rows = [r for g in groups for r in g.rows]
    other = next((g for g in groups if g is not stale), groups[0])
    reproduce = [f"getent ahosts {host}", f"dig +short {host}"]
    for g in (stale, other):
        r = g.rows[0]
        reproduce.append(f"{s_client(r.address.address, port, r.result.sni, show_certs=False)} 2>/dev/null | {_SHOW}")
    yield Finding(
        cause=Cause.DNS_DIFFERENCE,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(a for g in groups for a in g.addresses)),
        evidence=(
            resolved,
            Evidence("leaf", tuple((r.where, cert_brief(r.leaf)) for r in rows if r.leaf is not None)),
            Evidence("served chain (sha256, leaf first)", tuple((r.where, _short_chain(r)) for r in rows)),
            Evidence("native verdict", tuple((r.where, str(r.address.native.verdict)) for r in rows)),
        ),
        fix=(
            f"Find why {host} resolves to {capped(list(dict.fromkeys(r.address.address for r in routed)))} on "
            f"{name_list(list(dict.fromkeys(r.agent for r in routed)))} (the /etc/hosts entry, split-horizon zone or "
            "resolver that answers so) and whether that inspection is intended; the TLS interception finding says "
            "what answers there."
            if routed
            else f"Update the certificate on {capped(stale.addresses)}, which {name_list(stale.agents)} "
            f"{'reaches' if len(stale.agents) == 1 else 'reach'}: the sets differ only in address family (hosts "
            "that use only IPv4 or only IPv6), so no resolver is wrong, and a client that changes family meets the "
            "other certificate."
            if _families_apart(groups)
            else f"Make every resolver answer {host} with endpoints that serve the current chain: update the "
            f"certificate on {capped(stale.addresses)} (the set {name_list(stale.agents)} "
            f"{agree('resolve', stale.agents)} to), or fix the split-horizon zone, resolver or /etc/hosts entry that "
            f"sends {'it' if len(stale.agents) == 1 else 'them'} there."
        ),
        reproduce=tuple(reproduce),
    )


def _per_group(groups: list[_Group], say: Callable[[_Group], str]) -> str:
    """One clause per address set, for the first few sets; a resolver per vantage must not make a sentence
    per vantage."""
    text = "; ".join(say(g) for g in groups[:MAX_NAMED])
    if len(groups) > MAX_NAMED:
        rest = groups[MAX_NAMED:]
        text += f"; and {count(len(rest), 'more address set')} ({count(sum(len(g.agents) for g in rest), 'vantage')})"
    return text


def _short_chain(row: Row) -> str:
    return " > ".join(fp[:12] for fp in row.chain_fingerprints)


def _failing_because_of_sets(groups: list[_Group], own: set[str]) -> list[Row]:
    """Rows that fail, not for a reason of their own, while some other set, not served their chain,
    verifies everywhere (`_Group.verifies`): the answer the resolver gave is what breaks them."""
    verifying = [h for h in groups if h.verifies(own)]
    # How many verifying sets are served each chain: a failing row's own set never verifies, so some other
    # verifying set lacks its chain exactly when fewer than all of them have it.
    served_by: dict[tuple[str, ...], int] = defaultdict(int)
    for h in verifying:
        for chain in h.chains:
            served_by[chain] += 1
    failing = []
    for g in groups:
        for r in g.rows:
            if _verifies(r) or r.where in own:
                continue
            if served_by[r.chain_fingerprints] < len(verifying):
                failing.append(r)
    return failing


def _stale_group(groups: list[_Group], failing: list[Row]) -> _Group:
    """The set to fix: the one whose vantages fail, else the one serving the oldest leaf."""
    if failing:
        agent = failing[0].agent
        return next(g for g in groups if agent in g.agents)

    def newest(g: _Group) -> datetime:
        # A set whose leaves none parse (an agent's bytes that are no certificate) reads as the oldest.
        return max((c.not_before for c in _distinct_leaves(g.rows)), default=datetime.min.replace(tzinfo=UTC))

    return min(groups, key=newest)


# --- inconsistent backends ------------------------------------------------------------------------


def _inconsistent_rows(group: _Group) -> list[Row]:
    concerned: dict[str, Row] = {}
    by_agent: dict[str, list[Row]] = defaultdict(list)
    for r in group.rows:
        by_agent[r.agent].append(r)
    for rows in by_agent.values():
        if len({r.leaf_fingerprint for r in rows}) >= 2:
            concerned.update((r.where, r) for r in rows)
    # Vantages of one set may each have reached only some of its addresses: compare addresses that every
    # vantage of the set saw alike.
    by_address: dict[str, list[Row]] = defaultdict(list)
    for r in group.rows:
        by_address[r.address.address].append(r)
    stable = {a: rows for a, rows in by_address.items() if len({r.leaf_fingerprint for r in rows}) == 1}
    if len({rows[0].leaf_fingerprint for rows in stable.values()}) >= 2:
        concerned.update((r.where, r) for rows in stable.values() for r in rows)
    return list(concerned.values())


def _inconsistent_backends(
    observation: Observation, groups: list[_Group], settings: DiagnosisSettings, partial: list[_Group]
) -> Iterator[Finding]:
    """`partial`: the sets that lack an address family the others have (`_family_partial`); a vantage among
    them that fails on one of the differing addresses is concerned too."""
    concerned: dict[str, Row] = {}
    for g in groups:
        concerned.update((r.where, r) for r in _inconsistent_rows(g))
    differing = {r.address.address for r in concerned.values()}
    concerned.update(
        (r.where, r) for g in partial for r in g.rows if r.address.address in differing and not _verifies(r)
    )
    rows = list(concerned.values())
    if not rows:
        return
    host, port = _host_port(observation)
    leaves = _distinct_leaves(rows)
    if not leaves:  # no served leaf parses (bytes an agent sent that are no certificate): none to name
        return
    addresses_by_leaf: dict[str, list[str]] = defaultdict(list)
    rows_by_leaf: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.address.address not in addresses_by_leaf[r.leaf_fingerprint]:
            addresses_by_leaf[r.leaf_fingerprint].append(r.address.address)
        rows_by_leaf[r.leaf_fingerprint].append(r)

    at = judgement_time(observation, settings)
    timed_out = {c.sha256: _time_problem(c, at) for c in leaves if _time_problem(c, at)}
    split_verdict = _split_verdict(rows)
    bad = set(timed_out) | {r.leaf_fingerprint for r in split_verdict if not _verifies(r)}
    severity = Severity.CRITICAL if bad else Severity.WARNING

    judging = _judging(rows)
    parts = []
    for c in leaves[:MAX_NAMED]:
        addrs = addresses_by_leaf[c.sha256]
        notes = [timed_out[c.sha256]] if c.sha256 in timed_out else []
        failing = sorted(
            {str(r.address.native.verdict) for r in rows_by_leaf[c.sha256] if r.agent in judging and not _verifies(r)}
        )
        if failing:
            notes.append(f"failing verification ({', '.join(failing)})")
        note = f", {' and '.join(notes)}" if notes else ""
        parts.append(f"{capped(addrs)} {'serves' if len(addrs) == 1 else 'serve'} {cert_brief(c)}{note}")
    if len(leaves) > MAX_NAMED:
        parts.append(f"and {count(len(leaves) - MAX_NAMED, 'more certificate')}")
    agents = tuple(dict.fromkeys(r.agent for r in rows))
    summary = (
        f"The addresses behind {host} serve different certificates: {'; '.join(parts)} (seen by "
        f"{name_list(agents)}): a half-finished deploy or a backend still serving an old certificate."
    )
    summary += _blind_note(partial, rows)
    to_fix = bad or {c.sha256 for c in leaves} - {max(leaves, key=lambda c: c.not_before).sha256}
    fix_addresses = [a for c in leaves if c.sha256 in to_fix for a in addresses_by_leaf[c.sha256]]
    reproduce = []
    for address in list(dict.fromkeys(r.address.address for r in rows))[:_MAX_REPRODUCE]:
        sni = next(r.result.sni for r in rows if r.address.address == address)
        reproduce.append(f"{s_client(address, port, sni, show_certs=False)} 2>/dev/null | {_SHOW}")
    yield Finding(
        cause=Cause.INCONSISTENT_BACKENDS,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in rows)),
        evidence=(
            Evidence("leaf", tuple((r.where, cert_brief(r.leaf)) for r in rows if r.leaf is not None)),
            Evidence("native verdict", tuple((r.where, str(r.address.native.verdict)) for r in rows)),
        ),
        fix=(
            f"Finish the deploy: install the current certificate (and its chain) on {capped(fix_addresses)}, "
            f"or take {'it' if len(fix_addresses) == 1 else 'them'} out of the pool behind {host}, then probe again."
        ),
        reproduce=tuple(reproduce),
    )


def _blind_note(partial: list[_Group], rows: list[Row]) -> str:
    """Which vantages escape a failing address only because their resolver gives them one address family:
    their verdicts say nothing of it."""
    notes = []
    for g in partial:
        families = {_family(a) for a in g.addresses}
        unseen = list(
            dict.fromkeys(
                r.address.address for r in rows if _family(r.address.address) not in families and not _verifies(r)
            )
        )
        if unseen:
            only = " and ".join(f"IPv{f}" for f in sorted(families))
            notes.append(
                f" {name_list(g.agents)} {agree('resolve', g.agents)} the name to its {only} "
                f"{'address' if len(g.addresses) == 1 else 'addresses'} only ({capped(g.addresses)}), so "
                f"{'it does' if len(g.agents) == 1 else 'they do'} not reach {capped(unseen)}."
            )
    return "".join(notes)


def _judging(rows: list[Row]) -> set[str]:
    """The vantages whose verdicts speak for the backends: those that verify on some address. One that fails
    on every address fails for its own reasons (a missing root, its clock), which are no backend's; when every
    vantage fails everywhere, all of them speak."""
    verifying = {r.agent for r in rows if _verifies(r)}
    return verifying or {r.agent for r in rows}


def _split_verdict(rows: list[Row]) -> list[Row]:
    """Rows of vantages on which some of these addresses verify and others do not."""
    by_agent: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_agent[r.agent].append(r)
    return [r for agent_rows in by_agent.values() if len({_verifies(r) for r in agent_rows}) == 2 for r in agent_rows]
