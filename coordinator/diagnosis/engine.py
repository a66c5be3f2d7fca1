"""Run every rule over an observation and rank what they find."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..observation import DiagnosisSettings, Observation
from . import chain, clock, endpoints, interception, names, protocol, reachability, sni, trust, validity
from .model import Finding

Rule = Callable[[Observation, DiagnosisSettings], Iterable[Finding]]

# Each module owns the causes it names; none knows about the others. A rule holds back a claim that
# another, more specific cause explains (each rule checks the facts itself, from the observation).
RULES: tuple[Rule, ...] = (
    validity.findings,
    names.findings,
    chain.findings,
    trust.findings,
    clock.findings,
    sni.findings,
    endpoints.findings,
    interception.findings,
    protocol.findings,
    reachability.findings,
)


def diagnose(observation: Observation, settings: DiagnosisSettings | None = None) -> tuple[Finding, ...]:
    """Findings ordered by severity, then by how many vantages they concern."""
    settings = settings or DiagnosisSettings.for_request(observation.request)
    found = [finding for rule in RULES for finding in rule(observation, settings)]
    return tuple(sorted(found, key=lambda f: f.rank))
