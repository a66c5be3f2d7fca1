"""Network facts, not TLS verdicts: names that do not resolve, ports that refuse or time out, and
vantages that did not answer at all."""

from __future__ import annotations

from collections.abc import Iterator

from ...agent.model import Failure
from ..observation import DiagnosisSettings, Observation
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import name_list


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    yield from _dns_failures(observation)
    yield from _connect_failures(observation)
    yield from _silent_vantages(observation)


def _dns_failures(observation: Observation) -> Iterator[Finding]:
    failed = [o for o in observation.answered if o.result and o.result.resolution.failure is not Failure.NONE]
    if not failed:
        return
    everyone = len(failed) == len(observation.answered)
    agents = tuple(o.vantage.name for o in failed)
    host = observation.request.target.host
    scope = "any vantage" if everyone else f"{name_list(agents)} (the other vantages resolve it)"
    yield Finding(
        cause=Cause.UNREACHABLE,
        severity=Severity.CRITICAL if everyone else Severity.WARNING,
        summary=f"{host} does not resolve from {scope}: a DNS fact, not a TLS verdict.",
        agents=agents,
        evidence=(
            Evidence(
                "resolution",
                tuple(
                    (o.vantage.name, f"{o.result.resolution.failure}: {o.result.resolution.error}")
                    for o in failed
                    if o.result
                ),
            ),
        ),
        fix="Check the name and the resolvers these hosts use (resolv.conf, split-horizon zones, /etc/hosts).",
        reproduce=(f"getent ahosts {host}",),
    )


def _connect_failures(observation: Observation) -> Iterator[Finding]:
    failed = [r for r in observation.rows if not r.connected]
    if not failed:
        return
    reached = [r for r in observation.rows if r.connected]
    everyone = not reached
    agents = tuple(dict.fromkeys(r.agent for r in failed))
    addresses = tuple(dict.fromkeys(r.address.address for r in failed))
    kinds = sorted({str(r.address.connect_failure) for r in failed})
    where = "from every vantage" if everyone else f"from {name_list(agents)}"
    first = failed[0]
    yield Finding(
        cause=Cause.UNREACHABLE,
        severity=Severity.CRITICAL if everyone else Severity.WARNING,
        summary=(
            f"{observation.target} cannot be reached {where} ({', '.join(kinds)}) at {', '.join(addresses)}: "
            "a network fact, not a TLS verdict."
        ),
        agents=agents,
        addresses=addresses,
        evidence=(
            Evidence(
                "connect",
                tuple((r.where, f"{r.address.connect_failure}: {r.address.connect_error}") for r in failed),
            ),
        ),
        fix="Check that the service listens on that port and that firewalls or security groups let these hosts in.",
        reproduce=(s_client(first.address.address, observation.request.target.port, first.result.sni),),
    )


def _silent_vantages(observation: Observation) -> Iterator[Finding]:
    for outcome in observation.silent:
        yield Finding(
            cause=Cause.VANTAGE_UNAVAILABLE,
            severity=Severity.INFO,
            summary=(
                f"{outcome.vantage.name} did not answer ({outcome.state}): what {observation.target} looks like "
                "from there is unknown, and no conclusion here covers it."
            ),
            agents=(outcome.vantage.name,),
            evidence=(Evidence("state", ((outcome.vantage.name, f"{outcome.state}: {outcome.error}"),)),),
            fix=f"Check the agent at {outcome.vantage.address}: is it running, reachable, and does it trust "
            "this coordinator's certificate?",
            reproduce=(f"tlsfleet agents --agents {outcome.vantage.name}",),
        )
