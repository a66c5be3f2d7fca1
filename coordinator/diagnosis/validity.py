"""Validity windows of the served certificates, judged at true time: expired, not yet valid, expiring soon.

Every judgement here compares a served certificate's notBefore/notAfter with true time: the coordinator's
`settings.reference_time`, or the fleet's time when every remote vantage agrees with the others and not
with the coordinator (`timebase.judgement_time`; the clock rule then names the coordinator's clock). Never
with one agent's clock or its verdict at agent time: a host whose clock is wrong sees a valid certificate
as expired, and that is clock skew (another rule), not the server's certificate.

EXPIRED and NOT_YET_VALID are server-side claims, so they need every answering row that got a chain to
be served an out-of-window certificate; when only some addresses serve one, the backends disagree and
that is the inconsistent-backends rule's finding. Rows that `issuers.analyse` finds served by a foreign
issuer (a proxy re-signs on those vantages' path) are left out of every judgement here, expiring soon
included: that chain is not the server's. An
out-of-window intermediate that every row's stores route around (some store verifies at true time through
another path, as with a stale cross-sign) is a warning: clients that follow the served chain literally
fail, the others do not. A served self-issued root is not checked for expiring soon: clients use their own
store's copy, whose dates this rule cannot see. Certificates expiring soon that the same rows are served
make one finding, led by the soonest, which says by address where it is served when only some backends
serve it; expiring soon is a prediction (`Finding.prediction`): a failure now of the same severity
outranks it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ...agent.model import StoreVerdict, Verdict
from ...agent.trust.certinfo import CertSummary
from ..observation import DiagnosisSettings, Observation, Row
from . import issuers
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client, save_chain, verify_at
from .timebase import judgement_time
from .wording import MAX_LISTED, agree, count, name_list, span

__all__ = ["findings"]

# Prints subject and dates of every certificate in chain.pem (openssl x509 reads one per call until EOF).
_SHOW_DATES = "while openssl x509 -noout -subject -dates 2>/dev/null; do :; done < chain.pem"


@dataclass(frozen=True)
class _Served:
    """A served certificate with its position in the chain and the row it was served on."""

    row: Row
    position: int  # 0 for the leaf
    cert: CertSummary

    @property
    def role(self) -> str:
        if self.position == 0:
            return "leaf"
        return "root" if self.cert.is_self_issued else "intermediate"


def _everyone(n: int, what: str = "a chain") -> str:
    return (
        f"the one vantage that got {what} is served it" if n == 1 else f"all {n} vantages that got {what} are served it"
    )


def _proxied_note(proxied: tuple[str, ...]) -> str:
    """What the vantages behind a re-signing proxy get instead of the server's chain; "" for none."""
    if not proxied:
        return ""
    whose = "its" if len(proxied) == 1 else "their"
    return f"; {name_list(proxied)} {agree('get', proxied)} a chain re-signed by another issuer on {whose} path instead"


def _all(n: int) -> str:
    return "the one vantage" if n == 1 else f"all {n} vantages"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _label(cert: CertSummary) -> str:
    return f"'{cert.subject}' (sha256 {cert.short_fingerprint})"


def _served(row: Row) -> list[_Served]:
    return [_Served(row, position, cert) for position, cert in enumerate(row.summaries) if cert is not None]


def _store_ok(verdict: StoreVerdict, fleet_time: bool) -> bool:
    """The store verifies at true time: the fleet's (the agents' own clocks) when the coordinator's is off."""
    return (verdict.at_agent_time if fleet_time else verdict.at_reference_time) is Verdict.OK


def _time_evidence(observation: Observation, settings: DiagnosisSettings, at: datetime) -> Evidence:
    if at == settings.reference_time:
        return Evidence("reference time", (("coordinator", _when(at)),))
    return Evidence(
        "judged at the fleet's time",
        (
            ("fleet", _when(at)),
            ("coordinator", f"{_when(settings.reference_time)} (its clock disagrees with every remote vantage)"),
        ),
    )


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    rows = observation.rows_with_chain
    if not rows:
        return
    at = judgement_time(observation, settings)
    # A chain a proxy re-signed on some vantages' path is not the server's: its dates say nothing of the server.
    intercepted = frozenset(s.row.where for f in issuers.analyse(observation).foreign for s in f.rows)
    yield from _out_of_window(observation, settings, at, intercepted, expired=True)
    yield from _out_of_window(observation, settings, at, intercepted, expired=False)
    yield from _expiring_soon(observation, settings, at, intercepted)


def _out_of_window(
    observation: Observation,
    settings: DiagnosisSettings,
    at: datetime,
    intercepted: frozenset[str],
    *,
    expired: bool,
) -> Iterator[Finding]:
    fleet_time = at != settings.reference_time
    rows = tuple(r for r in observation.rows_with_chain if r.where not in intercepted)
    per_row: list[list[_Served]] = []
    for row in rows:
        bad = [s for s in _served(row) if (at > s.cert.not_after if expired else at < s.cert.not_before)]
        if not bad:
            return  # some address serves a chain in its window: not every client sees this
        per_row.append(bad)
    if not rows:
        return
    distinct = {s.cert.sha256: s for bad in per_row for s in bad}
    # A row routes around the bad certificates when a store verifies it at true time (another path).
    routed = all(any(_store_ok(v, fleet_time) for v in r.address.stores) for r in rows)
    only_chain = all(s.position > 0 for bad in per_row for s in bad)
    severity = Severity.WARNING if routed and only_chain else Severity.CRITICAL
    agents = tuple(dict.fromkeys(r.agent for r in rows))
    addresses = tuple(dict.fromkeys(r.address.address for r in rows))
    field = "notAfter" if expired else "notBefore"

    def moment(cert: CertSummary) -> datetime:
        return cert.not_after if expired else cert.not_before

    def relative(cert: CertSummary) -> str:
        return f"{span(at - moment(cert))} ago" if expired else f"in {span(moment(cert) - at)}"

    proxied = tuple(dict.fromkeys(r.agent for r in observation.rows_with_chain if r.where in intercepted))
    everyone = _everyone(len(agents), "the server's chain" if proxied else "a chain")
    if len(distinct) == 1:
        s = next(iter(distinct.values()))
        state = "expired" if expired else "not yet valid"
        when = f"expired {relative(s.cert)}" if expired else f"becomes valid {relative(s.cert)}"
        summary = (
            f"{observation.target} serves the {state} {s.role} certificate {_label(s.cert)}: it {when} "
            f"({field} {_when(moment(s.cert))}) and {everyone}"
        )
    else:
        labels = name_list([_label(s.cert) for s in distinct.values()])
        state = "an expired" if expired else "a not-yet-valid"
        summary = (
            f"Every address of {observation.target} serves {state} certificate ({len(distinct)} distinct: {labels})"
        )
    summary += _proxied_note(proxied)
    if severity is Severity.WARNING:
        summary += "; every vantage's stores verify through another path, but clients that follow the served chain fail"
    if fleet_time:
        summary += " (judged at the fleet's time: the coordinator's clock disagrees with every remote vantage)"
    summary += "."

    def entries(bad: list[_Served]) -> list[tuple[str, str]]:
        shown = [
            (s.row.where, f"{s.role} {_label(s.cert)}: {_when(moment(s.cert))} ({relative(s.cert)})")
            for s in bad[:MAX_LISTED]
        ]
        if len(bad) > MAX_LISTED:
            shown.append((bad[0].row.where, f"and {count(len(bad) - MAX_LISTED, 'more certificate')}"))
        return shown

    evidence = (
        Evidence(field, tuple(entry for bad in per_row for entry in entries(bad))),
        _time_evidence(observation, settings, at),
        Evidence("native verdict at agent time", tuple((r.where, str(r.address.native.verdict)) for r in rows)),
    )
    leaf_bad = not only_chain
    if expired and leaf_bad:
        fix = (
            f"Renew the certificate for {rows[0].result.expected_name} and install it with its intermediates on "
            f"{', '.join(addresses)}, then reload the server; check why automated renewal (ACME client, cert-manager) "
            "did not run."
        )
    elif expired:
        fix = (
            "Replace the expired intermediate in the served chain file with the CA's current one (download it from "
            "the CA), then reload the server."
        )
    else:
        fix = (
            "The certificate starts in the future: re-issue it with a notBefore in the past, and check the clock of "
            "the machine that issued it (or wait until notBefore)."
        )
    first = rows[0]
    port = observation.request.target.port
    yield Finding(
        cause=Cause.EXPIRED if expired else Cause.NOT_YET_VALID,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=evidence,
        fix=fix,
        reproduce=(
            save_chain(first.address.address, port, first.result.sni),
            _SHOW_DATES,
            verify_at(at, None),
        ),
    )


def _expiring_soon(
    observation: Observation, settings: DiagnosisSettings, at: datetime, intercepted: frozenset[str]
) -> Iterator[Finding]:
    """One finding per audience: the certificates expiring soon that the same rows are served, together
    (a chain of 200 certificates expiring at once is one finding, not 200). Rows served a proxy's chain
    are not the server's audience."""
    warning = timedelta(days=settings.expiry_warning_days)
    server_rows = tuple(r for r in observation.rows_with_chain if r.where not in intercepted)
    by_cert: dict[str, list[_Served]] = {}
    for row in server_rows:
        for s in _served(row):
            if s.role == "root" or not s.cert.not_before <= at <= s.cert.not_after:
                continue
            if s.cert.not_after - at <= warning:
                by_cert.setdefault(s.cert.sha256, []).append(s)
    by_audience: dict[tuple[str, ...], list[list[_Served]]] = {}
    for served in by_cert.values():
        audience = tuple(sorted({s.row.where for s in served}))
        by_audience.setdefault(audience, []).append(served)
    groups = [sorted(g, key=lambda served: served[0].cert.not_after) for g in by_audience.values()]
    for group in sorted(groups, key=lambda g: g[0][0].cert.not_after):
        yield _expiring_finding(observation, settings, at, group, server_rows, intercepted)


def _role(served: list[_Served]) -> str:
    return "leaf" if any(s.position == 0 for s in served) else "intermediate"


def _expiring_finding(
    observation: Observation,
    settings: DiagnosisSettings,
    at: datetime,
    group: list[list[_Served]],
    server_rows: tuple[Row, ...],
    intercepted: frozenset[str],
) -> Finding:
    served = group[0]  # the soonest
    cert = served[0].cert
    left = cert.not_after - at
    rows = [s.row for s in served]
    agents = tuple(dict.fromkeys(r.agent for r in rows))
    addresses = tuple(dict.fromkeys(r.address.address for r in rows))
    role = _role(served)
    roles = {_role(g) for g in group}
    wheres = tuple(dict.fromkeys(r.where for r in rows))
    every = {r.where for r in server_rows}
    all_agents = tuple(dict.fromkeys(r.agent for r in server_rows))
    all_addresses = tuple(dict.fromkeys(r.address.address for r in server_rows))
    proxied = tuple(dict.fromkeys(r.agent for r in observation.rows_with_chain if r.where in intercepted))
    if len(wheres) == len(every):
        scope = _everyone(len(agents), "the server's chain" if proxied else "a chain")
    elif len(agents) == len(all_agents) and len(addresses) < len(all_addresses):
        # Every vantage gets it, but not at every address: what the backends serve differs, so say it by address.
        elsewhere = tuple(a for a in all_addresses if a not in addresses)
        scope = (
            f"{name_list(addresses)} {agree('serve', addresses)} it ({len(addresses)} of "
            f"{count(len(all_addresses), 'address', 'addresses')}; {name_list(elsewhere)} {agree('serve', elsewhere)} "
            f"another certificate) to {_all(len(agents))}"
        )
    elif len(agents) == len(all_agents):
        scope = (
            f"it is served on {name_list(wheres)} ({len(wheres)} of {len(every)} "
            "vantage@address pairs; the others get another certificate)"
        )
    else:
        scope = (
            f"it is served to {name_list(agents)} ({len(agents)} of {len(all_agents)} vantages; "
            "the others get another certificate)"
        )
        if len(addresses) < len(all_addresses):
            scope += f" at {name_list(addresses)} ({len(addresses)} of {len(all_addresses)} addresses)"
    summary = (
        f"The {role} certificate {_label(cert)} served for {observation.target} expires in {span(left)} "
        f"(notAfter {_when(cert.not_after)})"
    )
    if len(group) > 1:
        # The leaf before the rest: it is the certificate the server's owner renews.
        rest = sorted(group[1:], key=lambda g: _role(g) != "leaf")
        others = [f"{_role(g)} {_label(g[0].cert)} in {span(g[0].cert.not_after - at)}" for g in rest]
        summary += (
            f", and {count(len(others), 'more certificate')} in the same served chain "
            f"{'expires' if len(others) == 1 else 'expire'} within {span(timedelta(days=settings.expiry_warning_days))}"
            f" ({name_list(others)})"
        )
    summary += f"; {scope}{_proxied_note(proxied)}."
    fixes = []
    if "leaf" in roles:
        fixes.append(
            f"Renew it before {_when(cert.not_after)} and deploy it on {', '.join(addresses)}; if renewal is "
            "automated (ACME client, cert-manager), check why it has not run: most renew 30 days before expiry."
            if role == "leaf"
            else f"Renew the leaf and deploy it on {', '.join(addresses)}; check why automated renewal has not run."
        )
    if "intermediate" in roles:
        fixes.append(
            f"The CA's intermediate expires {_when(cert.not_after)}: get its successor from the CA, serve it "
            "instead, and make sure the leaf is reissued under it."
            if role == "intermediate" and len(group) == 1
            else "Replace the expiring intermediates in the served chain with their successors from the CA, and "
            "drop certificates the chain does not need."
        )
    listed = [(s.row.where, f"{role} {_label(cert)}: {_when(cert.not_after)}") for s in served]
    listed += [(g[0].row.where, f"{_role(g)} {_label(g[0].cert)}: {_when(g[0].cert.not_after)}") for g in group[1:]]
    if len(listed) > len(served) + MAX_LISTED:
        hidden = len(listed) - len(served) - MAX_LISTED
        listed = [*listed[: len(served) + MAX_LISTED], ("served chain", f"and {count(hidden, 'more certificate')}")]
    first = rows[0]
    port = observation.request.target.port
    return Finding(
        cause=Cause.EXPIRING_SOON,
        severity=Severity.CRITICAL if left <= timedelta(days=settings.expiry_critical_days) else Severity.WARNING,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=(
            Evidence("notAfter", tuple(listed)),
            Evidence("time left", ((_clock_label(settings, at), f"{span(left)} at {_when(at)}"),)),
        ),
        fix=" ".join(fixes),
        reproduce=(
            f"{s_client(first.address.address, port, first.result.sni)} 2>/dev/null | "
            "openssl x509 -noout -subject -enddate"
            if role == "leaf" and len(group) == 1
            else f"{save_chain(first.address.address, port, first.result.sni)} && {_SHOW_DATES}",
        ),
        prediction=True,
    )


def _clock_label(settings: DiagnosisSettings, at: datetime) -> str:
    return "coordinator" if at == settings.reference_time else "fleet"
