"""Addresses an agent's probe policy refused (`Failure.DENIED_BY_POLICY`): the agent connected nowhere, so
there is nothing to judge there. That is neither healthy nor the server's doing:

- no address was probed by any vantage: a warning that nothing was probed, so a denied run never passes
  quietly (and exits non-zero by default);
- some were: an info finding naming the vantages, the addresses and the rules; the other findings stand
  on what was probed.

The reachability and handshake rules leave denied addresses to this one.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...agent.model import Failure
from ..observation import DiagnosisSettings, Observation, Row
from .model import Cause, Evidence, Finding, Severity
from .wording import capped, name_list

_PREFIX = "denied by policy: "


def is_denied(row: Row) -> bool:
    return row.address.connect_failure is Failure.DENIED_BY_POLICY


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    denied = [r for r in observation.rows if is_denied(r)]
    if not denied:
        return
    probed = any(not is_denied(r) for r in observation.rows)
    agents = tuple(dict.fromkeys(r.agent for r in denied))
    addresses = tuple(dict.fromkeys(r.address.address for r in denied))
    rules = capped(list(dict.fromkeys(_rule(r) for r in denied)), sep="; ")
    where = capped(list(addresses))
    if probed:
        severity = Severity.INFO
        summary = (
            f"{name_list(agents)} did not probe {observation.target} at {where}: the agent's probe policy refused it "
            f"({rules}). What it looks like from there is unknown; the other findings cover only what was probed."
        )
    else:
        severity = Severity.WARNING
        summary = (
            f"Nothing was probed: the probe policy of {name_list(agents)} refused every address of "
            f"{observation.target} ({where}; {rules}), so no conclusion about the server can be drawn."
        )
    yield Finding(
        cause=Cause.POLICY_DENIED,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=(Evidence("policy", tuple((r.where, r.address.connect_error or "denied by policy") for r in denied)),),
        fix=(
            f"Probe it from an agent whose policy allows the address, or widen the policy of {name_list(agents)} "
            "if it should probe there (`tlsfleet agent serve --allow RULE`, or its --policy file); built-in denials "
            "(link-local, cloud metadata, the agent's own listeners) lift only with an exact allow rule."
        ),
        reproduce=(f"tlsfleet agents --agents {','.join(agents)}",),
    )


def _rule(row: Row) -> str:
    text = row.address.connect_error
    return text.removeprefix(_PREFIX) if text.startswith(_PREFIX) else text or "no rule given"
