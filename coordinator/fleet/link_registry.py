"""Which agents hold a stream to this coordinator, which may, and how alive each one is.

An agent is admitted when its client certificate names the agent it registers as, that name is in the
inventory or matches an allow pattern, and its version is at least the minimum. One stream per identity:
a newer stream replaces the older one, which is told why and closed. Each agent is online (a message
within `stale_after` heartbeat intervals), stale (its stream is open but silent: a stopped process, a
dead route), or offline (no stream; known because it was connected before).
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ...agent.logs import get_logger
from ...agent.naming import LABEL_KEY_PATTERN, MAX_LABEL_VALUE, MAX_LABELS
from ...v1 import link_pb2
from .link_session import LinkSession

log = get_logger("tlsfleet.coordinator")

_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_SHOWN = 64  # characters of an unchecked name quoted back in a refusal


class LinkState(StrEnum):
    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"


@dataclass(frozen=True)
class LinkPolicy:
    inventory_names: frozenset[str] = frozenset()
    allow_patterns: tuple[str, ...] = ()  # shell-style, as in `--agents web-*`
    min_version: str | None = None
    heartbeat_interval_s: float = 5.0
    stale_after: int = 3  # heartbeat intervals without a message
    max_agents: int = 10_000


@dataclass(frozen=True)
class LinkedAgentInfo:
    """One agent as the registry knows it: its last stream's identity and how alive it is."""

    name: str
    version: str
    labels: tuple[tuple[str, str], ...]
    address: str
    state: LinkState
    silent_s: float  # since its last message (since it went offline, when offline)


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from '1.2.3', '1.2', '1.2.3rc1'; None when it does not start like one."""
    match = _VERSION.match(text.strip())
    if not match:
        return None
    return (int(match[1]), int(match[2] or 0), int(match[3] or 0))


def admission_refusal(
    policy: LinkPolicy,
    certificate: tuple[str, str] | None,
    registered_name: str,
    version: str,
    labels: tuple[tuple[str, str], ...] = (),
) -> str | None:
    """Why an agent may not hold a stream, or None when it may."""
    if certificate is None or certificate[0] != "agent":
        what = "no tlsfleet identity" if certificate is None else f"a {certificate[0]} certificate"
        return f"the caller presented {what}; only an agent certificate from the fleet CA may dial in"
    cert_name = certificate[1]
    if registered_name.casefold() != cert_name:
        return (
            f"the certificate names agent {cert_name!r}, but the stream registered as {registered_name[:_SHOWN]!r}; "
            "an agent registers under its certificate's name"
        )
    if cert_name not in policy.inventory_names and not any(
        fnmatch.fnmatchcase(cert_name, p) for p in policy.allow_patterns
    ):
        return (
            f"agent {cert_name!r} is not allowed to dial in: it is not in the inventory and matches no "
            f"[agent_link] allow pattern ({', '.join(policy.allow_patterns) or 'none configured'})"
        )
    if policy.min_version is not None:
        have, need = parse_version(version), parse_version(policy.min_version)
        if have is None or (need is not None and have < need):
            return (
                f"agent {cert_name!r} runs tlsfleet {version[:_SHOWN] or '(no version)'}; this coordinator accepts "
                f"{policy.min_version} or newer: upgrade the agent"
            )
    return _labels_refusal(labels)


def _labels_refusal(labels: tuple[tuple[str, str], ...]) -> str | None:
    if len(labels) > MAX_LABELS:
        return f"the registration has {len(labels)} labels; at most {MAX_LABELS} are accepted"
    for key, value in labels:
        if not LABEL_KEY_PATTERN.match(key) or key == "name" or len(value) > MAX_LABEL_VALUE:
            return (
                f"label {key[:_SHOWN]!r} is not accepted: keys are letters, digits, '_', '.', '-' ('name' is "
                f"reserved), values at most {MAX_LABEL_VALUE} characters"
            )
    return None


class LinkRegistry:
    def __init__(self, policy: LinkPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._sessions: dict[str, LinkSession] = {}
        self._offline: dict[str, tuple[LinkSession, float]] = {}  # name -> (its last session, since when)
        self._stale: set[str] = set()

    @property
    def stale_after_s(self) -> float:
        return self.policy.heartbeat_interval_s * self.policy.stale_after

    def refusal(
        self,
        certificate: tuple[str, str] | None,
        registered_name: str,
        version: str,
        labels: tuple[tuple[str, str], ...] = (),
    ) -> str | None:
        reason = admission_refusal(self.policy, certificate, registered_name, version, labels)
        known = registered_name in self._sessions or registered_name in self._offline
        if reason is None and not known and len(self._sessions) + len(self._offline) >= self.policy.max_agents:
            reason = f"this coordinator already tracks {self.policy.max_agents} agents ([agent_link] max_agents)"
        return reason

    def attach(self, session: LinkSession) -> LinkSession | None:
        """Make `session` the agent's stream; the older one, if any, is closed and returned."""
        old = self._sessions.get(session.name)
        self._sessions[session.name] = session
        self._offline.pop(session.name, None)
        self._stale.discard(session.name)
        if old is not None:
            reason = f"replaced by a newer stream of agent {session.name} from {session.address}"
            # Another live process holds this identity: retrying at once would only take the stream back.
            old.close(reason, link_pb2.CoordinatorMessage(refusal=link_pb2.Refusal(reason=reason, retry=False)))
            log.info("agent_link_replaced", agent=session.name, old=old.address, new=session.address)
        else:
            log.info("agent_link_online", agent=session.name, address=session.address, version=session.version)
        return old

    def detach(self, session: LinkSession, reason: str) -> None:
        """The stream of `session` ended; the agent goes offline unless a newer stream replaced it."""
        session.close(reason)
        if self._sessions.get(session.name) is not session:
            return
        del self._sessions[session.name]
        self._stale.discard(session.name)
        self._offline[session.name] = (session, self._clock())
        log.info("agent_link_offline", agent=session.name, address=session.address, reason=reason)

    def session(self, name: str) -> LinkSession | None:
        return self._sessions.get(name)

    def state(self, name: str) -> LinkState | None:
        """None for an agent this coordinator never had a stream from."""
        session = self._sessions.get(name)
        if session is not None:
            silent = self._clock() - session.last_seen
            return LinkState.STALE if silent > self.stale_after_s else LinkState.ONLINE
        return LinkState.OFFLINE if name in self._offline else None

    def sweep(self) -> list[tuple[str, LinkState]]:
        """Log and return the agents that turned stale or came back since the last sweep."""
        changed: list[tuple[str, LinkState]] = []
        for name, session in self._sessions.items():
            silent = self._clock() - session.last_seen
            if silent > self.stale_after_s and name not in self._stale:
                self._stale.add(name)
                changed.append((name, LinkState.STALE))
                log.warning("agent_link_stale", agent=name, address=session.address, silent_s=round(silent, 1))
            elif silent <= self.stale_after_s and name in self._stale:
                self._stale.discard(name)
                changed.append((name, LinkState.ONLINE))
                log.info("agent_link_recovered", agent=name, address=session.address)
        return changed

    def agents(self) -> list[LinkedAgentInfo]:
        """Every agent known, connected first, each by name."""
        connected = [self._info(name) for name in sorted(self._sessions)]
        return connected + [self._info(name) for name in sorted(self._offline)]

    def agent(self, name: str) -> LinkedAgentInfo | None:
        """One agent by name, without listing them all (a fan-out asks for each of thousands)."""
        return self._info(name) if name in self._sessions or name in self._offline else None

    def _info(self, name: str) -> LinkedAgentInfo:
        now = self._clock()
        session = self._sessions.get(name)
        if session is not None:
            silent = now - session.last_seen
            state = LinkState.STALE if silent > self.stale_after_s else LinkState.ONLINE
            return LinkedAgentInfo(name, session.version, session.labels, session.address, state, silent)
        last, since = self._offline[name]
        return LinkedAgentInfo(name, last.version, last.labels, last.address, LinkState.OFFLINE, now - since)

    def close_all(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            self.detach(session, reason)
