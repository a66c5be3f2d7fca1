"""Run every rule over an observation and rank what they find."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from ...agent.logs import get_logger
from ..observation import DiagnosisSettings, Observation
from . import (
    anchors,
    chain,
    client_views,
    clock,
    endpoints,
    handshake,
    interception,
    names,
    policy_denied,
    protocol,
    reachability,
    sni,
    trust,
    validity,
)
from .model import Cause, Evidence, Finding, Severity
from .reproduce import route_options, routed
from .unexplained import unexplained
from .wording import count, name_list

Rule = Callable[[Observation, DiagnosisSettings], Iterable[Finding]]

log = get_logger("tlsfleet.diagnosis")

# Each module owns the causes it names; none knows about the others. A rule holds back a claim that
# another, more specific cause explains (each rule checks the facts itself, from the observation).
RULES: tuple[Rule, ...] = (
    validity.findings,
    anchors.findings,
    names.findings,
    chain.findings,
    trust.findings,
    clock.findings,
    sni.findings,
    endpoints.findings,
    interception.findings,
    protocol.findings,
    handshake.findings,
    client_views.findings,
    reachability.findings,
    policy_denied.findings,
)


# A rule may find the same cause many times over (a skewed clock per vantage, a silent agent per agent):
# beyond this many findings of one cause and severity, the rest are told as one.
MAX_PER_CAUSE = 5


def diagnose(observation: Observation, settings: DiagnosisSettings | None = None) -> tuple[Finding, ...]:
    """Findings ordered by severity, then what explains a failure now before what predicts one, then by
    how many vantages they concern (`Finding.rank`); at most MAX_PER_CAUSE of each cause and severity."""
    settings = settings or DiagnosisSettings.for_request(observation.request)
    found = [finding for rule in RULES for finding in _findings_of(rule, observation, settings)]
    found += unexplained(observation, found)  # a failing host is never left without a finding
    # Every rule writes its s_client commands for TLS from the first byte; the road the probes took (a
    # STARTTLS dialogue, a proxy) is the observation's, so it is added here, once for all of them.
    route = route_options(observation)
    if route:
        found = [replace(f, reproduce=routed(f.reproduce, route, observation)) for f in found]
    return tuple(sorted(bounded(found), key=lambda f: f.rank))


def _findings_of(rule: Rule, observation: Observation, settings: DiagnosisSettings) -> list[Finding]:
    """The rule's findings; none, and an error logged with the traceback, when the rule fails on this
    observation: one rule's bug must not cost the others' findings, and a failing host still gets the
    unexplained finding when no other rule names its cause."""
    try:
        return list(rule(observation, settings))
    except Exception as error:
        target = observation.request.target
        log.error(
            "diagnosis_rule_failed",
            rule=f"{rule.__module__}.{rule.__qualname__}",
            target=f"{target.host}:{target.port}",
            error=f"{type(error).__name__}: {error}",
            exc_info=True,
        )
        return []


def bounded(found: Iterable[Finding], limit: int = MAX_PER_CAUSE) -> list[Finding]:
    """The findings with, per cause and severity, the first `limit - 1` in rank order kept as they are and
    the rest (when there are more than `limit`) merged into one that names all they concern."""
    groups: dict[tuple[Cause, Severity], list[Finding]] = {}
    for f in sorted(found, key=lambda f: f.rank):
        groups.setdefault((f.cause, f.severity), []).append(f)
    out: list[Finding] = []
    for group in groups.values():
        if len(group) <= limit:
            out += group
        else:
            out += group[: limit - 1]
            out.append(_merged(group[limit - 1 :]))
    return out


def _merged(rest: list[Finding]) -> Finding:
    first = rest[0]
    agents = tuple(dict.fromkeys(a for f in rest for a in f.agents))
    fields: dict[str, dict[tuple[str, str], None]] = {}
    for f in rest:
        for e in f.evidence:
            fields.setdefault(e.field, {}).update(dict.fromkeys(e.values))
    return Finding(
        cause=first.cause,
        severity=first.severity,
        summary=(
            f"{count(len(rest), 'finding')} of this cause and severity beyond the {MAX_PER_CAUSE - 1} told on their "
            f"own, together: they concern {name_list(agents)}. The first of them: {first.summary}"
        ),
        agents=agents,
        addresses=tuple(dict.fromkeys(a for f in rest for a in f.addresses)),
        evidence=tuple(Evidence(name, tuple(values)) for name, values in fields.items()),
        fix=f"{first.fix} Likewise for the others it names." if first.fix else "",
        reproduce=first.reproduce,
        prediction=all(f.prediction for f in rest),
    )
