"""The engine's last word: a host whose own OpenSSL clients fail is never left without a finding.

Every rule words the failures it understands; a failure none of them claims (a verdict or verify code in a
combination no rule foresaw) would read as a healthy fleet, the one thing tlsfleet must never say of a host
that fails. So after the rules, each address whose native client failed (its handshake broke off, or its
chain was rejected) and that no finding at warning or above names is told as a critical finding of the
nearest cause, with what the agent saw: its verdict, OpenSSL's code and message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ...agent.model import Failure, Verdict
from ..observation import TIME_FAILURES, TRUST_FAILURES, Observation, Row
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import name_list

__all__ = ["unexplained"]


def unexplained(observation: Observation, found: Sequence[Finding]) -> Iterator[Finding]:
    # Per agent, the addresses of each loud finding that names it (empty: all of them); a finding's agents
    # times its addresses can be millions in a large fleet, so they are never multiplied out.
    named: dict[str, list[frozenset[str]]] = {}
    for f in found:
        if f.severity >= Severity.WARNING:
            addresses = frozenset(f.addresses)
            for agent in f.agents:
                named.setdefault(agent, []).append(addresses)

    def covered(row: Row) -> bool:
        return any(not a or row.address.address in a for a in named.get(row.agent, ()))

    left = [r for r in observation.rows if _fails(r) and not covered(r)]
    groups: dict[tuple[Cause, str], list[Row]] = {}
    for row in left:
        groups.setdefault((_cause(row), _what(row)), []).append(row)
    for (cause, what), rows in groups.items():
        agents = tuple(dict.fromkeys(r.agent for r in rows))
        first = rows[0]
        yield Finding(
            cause=cause,
            severity=Severity.CRITICAL,
            summary=(
                f"On {name_list(agents)}, OpenSSL clients fail against {observation.target} ({what}); no rule "
                "explains it further, so the agents' own words stand as evidence."
            ),
            agents=agents,
            addresses=tuple(dict.fromkeys(r.address.address for r in rows)),
            evidence=(Evidence("seen", tuple((r.where, _seen(r)) for r in rows)),),
            fix="Reproduce it on that host with the command below and read OpenSSL's own error.",
            reproduce=(s_client(first.address.address, observation.request.target.port, first.result.sni),),
        )


def _fails(row: Row) -> bool:
    if not row.connected:
        return False
    failure = row.address.handshake.failure
    return failure not in (Failure.NONE, Failure.CERT_VERIFY) or row.address.native.verdict is not Verdict.OK


def _cause(row: Row) -> Cause:
    verdict = row.address.native.verdict
    if row.address.handshake.failure not in (Failure.NONE, Failure.CERT_VERIFY):
        return Cause.HANDSHAKE_INCOMPLETE
    if verdict in TIME_FAILURES:
        return Cause.EXPIRED if verdict is Verdict.EXPIRED else Cause.NOT_YET_VALID
    if verdict in TRUST_FAILURES:
        return Cause.UNTRUSTED_CHAIN
    if verdict is Verdict.HOSTNAME_MISMATCH:
        return Cause.HOSTNAME_MISMATCH
    return Cause.POLICY_INVALID_CHAIN


def _what(row: Row) -> str:
    failure = row.address.handshake.failure
    if failure not in (Failure.NONE, Failure.CERT_VERIFY):
        return f"handshake {failure}"
    native = row.address.native
    return f"{native.verdict}, verify code {native.verify_code}"


def _seen(row: Row) -> str:
    native = row.address.native
    handshake = row.address.handshake
    parts = [f"native {native.verdict} ({native.verify_code}: {native.verify_message})"]
    if handshake.failure is not Failure.NONE:
        parts.append(f"handshake {handshake.failure}: {handshake.error}")
    return "; ".join(parts)
