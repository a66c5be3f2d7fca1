"""What changed between two runs of the same report: a pure function, one plain sentence per change.

Compared, per target: findings new and resolved (by finding key), the certificates each agent was served
at each address (leaf, issuer, names, expiry, the chain served), and the addresses each agent's resolver
returned; per agent: trust-store roots added or removed (named by subject) and clock jumps.

Only what both runs saw is compared. The first run of a report (previous is None) yields no changes, and
so does a target the previous run did not probe (newly configured, or left out of an abandoned run): there
is no baseline, and the run's findings speak for themselves. A finding is called resolved only when every
agent it concerned answered this time; an agent that went silent resolves nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ...agent.model import Failure, TrustStore
from ...agent.trust.certinfo import CertificateParseError, CertSummary, summarize
from ..diagnosis.clock import humane_offset
from ..diagnosis.model import Finding
from ..observation import Row
from ..outcomes import VantageState
from .history.store import FirstSeen, SeenQuery, key_of
from .report_model import AgentSnapshot, Change, ChangeKind, ReportRun, TargetRun

__all__ = ["DEFAULT_CLOCK_JUMP_MS", "changes_between"]

DEFAULT_CLOCK_JUMP_MS = 1000.0
_MAX_NAMED = 8  # roots, names or places listed in one sentence before "and N more"


def changes_between(
    previous: ReportRun | None,
    current: ReportRun,
    first_seen: FirstSeen | None = None,
    *,
    clock_jump_ms: float = DEFAULT_CLOCK_JUMP_MS,
) -> tuple[Change, ...]:
    """The changes from `previous` to `current`, target by target in the current run's order, then the
    agents'. `first_seen` answers "since when" (see `history.first_seen_lookup`); without it, or when it
    does not know, a change is dated by the current run's start."""
    if previous is None:
        return ()
    if previous.report != current.report:
        raise ValueError(f"cannot compare runs of different reports ({previous.report!r} and {current.report!r})")
    if clock_jump_ms < 0:
        raise ValueError(f"clock jump threshold {clock_jump_ms} ms is negative; accepted: 0 or more")
    since = _Since(previous, current, first_seen)
    before_targets = {t.target: t for t in previous.targets}
    changes: list[Change] = []
    for now in current.targets:
        before = before_targets.get(now.target)
        if before is None:
            continue
        changes += _finding_changes(current.report, before, now, since)
        changes += _certificate_changes(current.report, before, now, since)
        changes += _resolution_changes(current.report, before, now, since)
    before_agents = {a.name: a for a in previous.agents if a.state is VantageState.OK}
    for agent in current.agents:
        was = before_agents.get(agent.name)
        if was is None or agent.state is not VantageState.OK:
            continue
        changes += _clock_jump(current.report, was, agent, since, clock_jump_ms)
    changes += _trust_store_changes(current.report, previous.agents, current.agents, since)
    return tuple(changes)


@dataclass(frozen=True)
class _Since:
    previous: ReportRun
    current: ReportRun
    first_seen: FirstSeen | None

    def __call__(self, query: SeenQuery) -> datetime:
        """When the new state was first seen. An answer outside (previous start, current start] cannot
        be about this change (the previous run did not see the new state), so it is not taken."""
        if self.first_seen is not None:
            when = self.first_seen(query)
            if when is not None and self.previous.started_at < when <= self.current.started_at:
                return when
        return self.current.started_at

    def earliest(self, queries: Iterable[SeenQuery]) -> datetime:
        return min(self(q) for q in queries)


# --- findings -------------------------------------------------------------------------------------------


def _finding_changes(report: str, before: TargetRun, now: TargetRun, since: _Since) -> list[Change]:
    was = {key_of(report, before.target, f): f for f in before.findings}
    is_ = {key_of(report, now.target, f): f for f in now.findings}
    answered = {o.vantage.name for o in now.observation.answered}
    changes = []
    for key, f in sorted(is_.items(), key=lambda item: item[1].rank):
        if key in was:
            continue
        changes.append(
            Change(
                kind=ChangeKind.FINDING_NEW,
                summary=f"New on {now.target} ({f.severity}, {_words(f.cause.value)}): {_sentence(f.summary)}",
                target=now.target,
                agent=_sole(f.agents),
                after=f.summary,
                since=since(SeenQuery(ChangeKind.FINDING_NEW, report, target=now.target, key=key)),
                severity=str(f.severity),
                cause=f.cause.value,
            )
        )
    for key, f in sorted(was.items(), key=lambda item: item[1].rank):
        if key in is_ or not _confirmed_gone(f, answered):
            continue
        changes.append(
            Change(
                kind=ChangeKind.FINDING_RESOLVED,
                summary=f"Resolved on {now.target} ({f.severity}, {_words(f.cause.value)}): {_sentence(f.summary)}",
                target=now.target,
                agent=_sole(f.agents),
                before=f.summary,
                since=since(SeenQuery(ChangeKind.FINDING_RESOLVED, report, target=now.target, key=key)),
                severity=str(f.severity),
                cause=f.cause.value,
            )
        )
    return changes


def _confirmed_gone(finding: Finding, answered: set[str]) -> bool:
    return all(agent in answered for agent in finding.agents)


# --- certificates ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Served:
    """What one agent was served at one address: the facts a certificate change is told by."""

    leaf: str
    issuer: str
    names: tuple[str, ...]
    not_after: str
    chain: tuple[str, ...]  # sha256 of every served certificate, leaf first
    subjects: tuple[str, ...]  # their subjects ("" when one does not parse)


def _served(row: Row) -> _Served:
    summaries = [_summary_or_none(der) for der in row.address.chain]
    leaf = summaries[0]
    return _Served(
        leaf=row.leaf_fingerprint,
        issuer=leaf.issuer if leaf else "",
        names=tuple(sorted(leaf.san)) if leaf else (),
        not_after=leaf.not_after.strftime("%Y-%m-%d %H:%M UTC") if leaf else "",
        chain=row.chain_fingerprints,
        subjects=tuple(s.subject if s else "" for s in summaries),
    )


def _summary_or_none(der: bytes) -> CertSummary | None:
    try:
        return summarize(der)
    except CertificateParseError:
        return None


def _certificate_changes(report: str, before: TargetRun, now: TargetRun, since: _Since) -> list[Change]:
    was = {(r.agent, r.address.address): _served(r) for r in before.observation.rows_with_chain}
    groups: dict[tuple[_Served, _Served], list[tuple[str, str]]] = {}
    for row in now.observation.rows_with_chain:
        place = (row.agent, row.address.address)
        old = was.get(place)
        new = _served(row)
        if old is not None and old != new:
            groups.setdefault((old, new), []).append(place)
    changes = []
    for (old, new), places in groups.items():
        changes.append(
            Change(
                kind=ChangeKind.CERTIFICATE,
                summary=f"{_places(places)} now {'get' if len(places) > 1 else 'gets'} from {now.target} "
                f"{_served_difference(old, new)}.",
                target=now.target,
                agent=_sole(agent for agent, _address in places),
                before=_served_brief(old),
                after=_served_brief(new),
                since=since.earliest(
                    SeenQuery(ChangeKind.CERTIFICATE, report, now.target, agent, address, sha256=new.leaf)
                    for agent, address in places
                ),
            )
        )
    return changes


def _served_difference(old: _Served, new: _Served) -> str:
    parts = []
    if old.leaf != new.leaf:
        parts.append(f"a new leaf certificate {new.leaf[:12]} (was {old.leaf[:12]})")
    if old.issuer != new.issuer:
        parts.append(f"issued by {new.issuer or 'an unreadable issuer'} (was {old.issuer or 'unreadable'})")
    added = [n for n in new.names if n not in old.names]
    removed = [n for n in old.names if n not in new.names]
    if added:
        parts.append(f"now covering {_listing(added)}")
    if removed:
        parts.append(f"no longer covering {_listing(removed)}")
    if old.not_after != new.not_after:
        parts.append(f"valid until {new.not_after} (was {old.not_after})")
    old_rest, new_rest = old.chain[1:], new.chain[1:]
    if old_rest != new_rest:
        dropped_sha = [sha for sha in old_rest if sha not in new_rest]
        gained_sha = [sha for sha in new_rest if sha not in old_rest]
        # A CA reissued under the same name (a new private CA) is told apart by its fingerprint.
        shared_names = {_subject(old, sha) for sha in dropped_sha} & {_subject(new, sha) for sha in gained_sha}
        dropped = [_subject(old, sha, shared_names) for sha in dropped_sha]
        gained = [_subject(new, sha, shared_names) for sha in gained_sha]
        chain = f"a chain of {_count(len(new.chain), 'certificate')} (was {len(old.chain)})"
        details = []
        if dropped:
            details.append(f"{_listing(dropped)} no longer sent")
        if gained:
            details.append(f"{_listing(gained)} now sent")
        if not details:
            details.append("the same certificates in another order")
        parts.append(f"{chain}: {'; '.join(details)}")
    return _and(parts) if parts else "a differently encoded chain"


def _subject(served: _Served, sha: str, ambiguous: Collection[str] = ()) -> str:
    subject = served.subjects[served.chain.index(sha)]
    if not subject:
        return f"certificate {sha[:12]}"
    return f"{subject} (sha256 {sha[:12]})" if subject in ambiguous else subject


def _served_brief(s: _Served) -> str:
    return f"leaf {s.leaf[:12]} issued by {s.issuer or '?'}, until {s.not_after or '?'}, chain of {len(s.chain)}"


# --- resolution -----------------------------------------------------------------------------------------


def _resolved(target: TargetRun) -> dict[str, tuple[tuple[str, ...], str]]:
    """Agent -> (sorted addresses, failure) of every agent that answered and resolved the name itself."""
    out = {}
    for o in target.observation.answered:
        assert o.result is not None
        r = o.result.resolution
        out[o.vantage.name] = (tuple(sorted(set(r.addresses))), "" if r.failure is Failure.NONE else str(r.failure))
    return out


def _resolution_changes(report: str, before: TargetRun, now: TargetRun, since: _Since) -> list[Change]:
    if now.observation.request.options.pin_address:
        return []  # a pinned probe resolves nothing
    was = _resolved(before)
    groups: dict[tuple[tuple[tuple[str, ...], str], tuple[tuple[str, ...], str]], list[str]] = {}
    for agent, new in _resolved(now).items():
        old = was.get(agent)
        if old is not None and old != new:
            groups.setdefault((old, new), []).append(agent)
    changes = []
    host = now.observation.request.target.host
    for (old, new), agents in groups.items():
        who = _listing(agents)
        if new[1]:
            text = f"{host} no longer resolves for {who} ({new[1]}); it resolved to {_addresses(old)}."
        else:
            text = f"{host} now resolves to {_addresses(new)} for {who} (was {_addresses(old)})."
        changes.append(
            Change(
                kind=ChangeKind.RESOLUTION,
                summary=text,
                target=now.target,
                agent=_sole(agents),
                before=_addresses(old),
                after=_addresses(new),
                since=since.earliest(SeenQuery(ChangeKind.RESOLUTION, report, now.target, a) for a in agents),
            )
        )
    return changes


def _addresses(state: tuple[tuple[str, ...], str]) -> str:
    addresses, failure = state
    if failure:
        return f"nothing ({failure})"
    return ", ".join(addresses) if addresses else "no address"


# --- agents ---------------------------------------------------------------------------------------------


def _clock_jump(
    report: str, was: AgentSnapshot, now: AgentSnapshot, since: _Since, threshold_ms: float
) -> list[Change]:
    if was.clock_offset_ms is None or now.clock_offset_ms is None:
        return []
    jump = now.clock_offset_ms - was.clock_offset_ms
    # Each estimate is only good to its error bound: a jump must exceed the threshold plus both bounds.
    margin = (was.clock_error_ms or 0.0) + (now.clock_error_ms or 0.0)
    if abs(jump) <= threshold_ms + margin:
        return []
    direction = "ahead" if jump > 0 else "back"
    return [
        Change(
            kind=ChangeKind.CLOCK_JUMP,
            summary=f"{now.name}'s clock jumped {humane_offset(abs(jump))} {direction}, from "
            f"{_signed(was.clock_offset_ms)} to {_signed(now.clock_offset_ms)} relative to the coordinator's clock.",
            agent=now.name,
            before=f"{was.clock_offset_ms:+.0f} ms",
            after=f"{now.clock_offset_ms:+.0f} ms",
            since=since(SeenQuery(ChangeKind.CLOCK_JUMP, report, agent=now.name)),
        )
    ]


def _signed(ms: float) -> str:
    return f"{'-' if ms < 0 else '+'}{humane_offset(abs(ms))}"


@dataclass(frozen=True)
class _StoreDelta:
    store: str
    added: tuple[str, ...]  # subjects
    removed: tuple[str, ...]
    text: str  # what changed, without naming the agent


def _store_delta(old: TrustStore | None, new: TrustStore | None) -> _StoreDelta | None:
    if old is None and new is not None:
        return _StoreDelta(
            new.name, (), (), f"a new trust store {new.name} ({new.path}, {_count(new.root_count, 'root')})"
        )
    if new is None and old is not None:
        return _StoreDelta(old.name, (), (), f"no longer a trust store {old.name} ({old.path})")
    assert old is not None and new is not None
    listed = (old.roots or old.root_count == 0) and (new.roots or new.root_count == 0)
    if listed:
        old_roots = {r.sha256: r.subject for r in old.roots}
        new_roots = {r.sha256: r.subject for r in new.roots}
        added = tuple(sorted(new_roots[s] or s[:12] for s in new_roots.keys() - old_roots.keys()))
        removed = tuple(sorted(old_roots[s] or s[:12] for s in old_roots.keys() - new_roots.keys()))
        if not added and not removed:
            return None
        parts = []
        if added:
            parts.append(f"gained {_count(len(added), 'root')}: {_listing(added)}")
        if removed:
            parts.append(f"lost {_count(len(removed), 'root')}: {_listing(removed)}")
        return _StoreDelta(new.name, added, removed, f"trust store {new.name} {_and(parts)}")
    if old.fingerprint == new.fingerprint:
        return None
    return _StoreDelta(
        new.name,
        (),
        (),
        f"trust store {new.name} changed content ({old.root_count} to {new.root_count} roots; "
        "the roots were not listed, so they cannot be named)",
    )


def _trust_store_changes(
    report: str, previous: Sequence[AgentSnapshot], current: Sequence[AgentSnapshot], since: _Since
) -> list[Change]:
    was = {a.name: a for a in previous if a.state is VantageState.OK and a.stores}
    groups: dict[_StoreDelta, list[str]] = {}
    for agent in current:
        old_agent = was.get(agent.name)
        # An agent that listed no stores this time (it did not answer, or could not read them) shows no change.
        if old_agent is None or agent.state is not VantageState.OK or not agent.stores:
            continue
        old_stores = {s.name: s for s in old_agent.stores}
        new_stores = {s.name: s for s in agent.stores}
        for name in [*new_stores, *(n for n in old_stores if n not in new_stores)]:
            delta = _store_delta(old_stores.get(name), new_stores.get(name))
            if delta is not None:
                groups.setdefault(delta, []).append(agent.name)
    return [
        Change(
            kind=ChangeKind.TRUST_STORE,
            summary=f"On {_listing(agents)}: {delta.text}.",
            agent=_sole(agents),
            before=_listing(delta.removed) if delta.removed else "",
            after=_listing(delta.added) if delta.added else "",
            since=since.earliest(SeenQuery(ChangeKind.TRUST_STORE, report, agent=a) for a in agents),
        )
        for delta, agents in groups.items()
    ]


# --- wording --------------------------------------------------------------------------------------------


def _words(cause: str) -> str:
    return cause.replace("_", " ")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _sole(names: Iterable[str]) -> str:
    """The agent a change concerns, or "" when it concerns several (or none)."""
    distinct = set(names)
    return next(iter(distinct)) if len(distinct) == 1 else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _listing(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) > _MAX_NAMED:
        return f"{', '.join(items[:_MAX_NAMED])} and {len(items) - _MAX_NAMED} more"
    return _and(items)


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _places(places: Sequence[tuple[str, str]]) -> str:
    return _listing([f"{agent}@{address}" for agent, address in places])
