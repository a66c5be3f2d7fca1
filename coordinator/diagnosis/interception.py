"""TLS interception: some vantages get, for the same name, a leaf from an issuer no other vantage sees,
at the server's own address or at one their resolver chose (`issuers`, which holds the evidence rules).

- Same address: the server's address answers them with another CA's leaf; the server's issuer is the one
  strictly most vantages see there. On a tie the finding names both sides without deciding.
- Resolver: their resolver (an /etc/hosts entry, a split-horizon zone, a DNS-based inspection service)
  sends them to an address of their own, where what answers re-signs TLS with its CA, which they either
  reject or trust only because it was installed on those hosts alone. The endpoint rule says the DNS
  difference beside this finding. Per-region certificates behind geo-DNS (different leaves from the same
  issuer, all verifying) and another CA that every vantage's stores would trust are not interception.

Critical when a vantage that sees the foreign issuer fails verification; warning when they all trust
it (the interception is invisible to them, but the certificate is not the server's), also when one fails
only on time at its own clock while its stores verify the foreign chain at true time: it trusts the CA,
and its clock (the clock rule's finding) is why it fails, so no advice to install that CA is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ...agent.model import Verdict
from ...agent.trust.certinfo import CertSummary
from ..observation import TIME_FAILURES, DiagnosisSettings, Observation, Row
from .issuers import Foreign, Route, Seen, Undecided, analyse, verifies
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import MAX_LISTED, agree, capped, common_name, count, name_list

__all__ = ["findings"]

_SHOW = "openssl x509 -noout -issuer -fingerprint -sha256"


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    found = analyse(observation)
    if found.undecided is not None:
        yield _undecided(observation, found.undecided)
    # Many foreign issuers share one server side: its vantages are listed once, not once per issuer.
    sides: dict[int, tuple[str, ...]] = {}
    for foreign in found.foreign:
        others = sides.setdefault(id(foreign.genuine), tuple(dict.fromkeys(s.row.agent for s in foreign.genuine)))
        yield _intercepted(observation, foreign, others)


def _issuer_label(leaf: CertSummary) -> str:
    key = f" (key id {leaf.authority_key_id[:12]})" if leaf.authority_key_id else ""
    return f"'{common_name(leaf.issuer)}'{key}"


def _top(leaf_row: Row) -> str:
    """Where the served chain leads: the issuer of its last certificate."""
    certs = leaf_row.certificates()
    return f"'{common_name(certs[-1].issuer)}'" if certs else "-"


def _evidence(rows: Sequence[Seen]) -> list[Evidence]:
    return [
        Evidence("leaf issuer", tuple((s.row.where, s.leaf.issuer) for s in rows)),
        Evidence("leaf authority key id", tuple((s.row.where, s.leaf.authority_key_id or "-") for s in rows)),
        Evidence("served chain leads to", tuple((s.row.where, _top(s.row)) for s in rows)),
        Evidence("leaf sha256", tuple((s.row.where, s.leaf.short_fingerprint) for s in rows)),
        Evidence("native verdict", tuple((s.row.where, str(s.row.address.native.verdict)) for s in rows)),
    ]


def _reproduce(observation: Observation, row: Row, *, resolver: bool = False) -> tuple[str, ...]:
    port = observation.request.target.port
    first = f"getent ahosts {observation.request.target.host}" if resolver else "env | grep -i _proxy"
    return (
        first,
        f"{s_client(row.address.address, port, row.result.sni, show_certs=False)} 2>/dev/null | {_SHOW}",
        s_client(row.address.address, port, row.result.sni),
    )


def _resolved(rows: Sequence[Seen]) -> Evidence:
    return Evidence(
        "resolved addresses",
        tuple(dict.fromkeys((s.row.agent, capped(s.row.result.resolution.addresses)) for s in rows)),
    )


def _intercepted(observation: Observation, foreign: Foreign, others: tuple[str, ...]) -> Finding:
    # The server's side is the comparison: its first rows show it (a fleet may have thousands).
    mine, theirs = foreign.rows, foreign.genuine[:MAX_LISTED]
    agents = foreign.agents
    addresses = foreign.addresses
    foreign_leaf, genuine = mine[0].leaf, theirs[0].leaf
    failing = foreign.failing
    rejecting = [s for s in failing if not _clock_only(s.row)]
    clocked = list(dict.fromkeys(s.row.agent for s in failing if _clock_only(s.row)))
    host = observation.request.target.host
    if rejecting:
        severity = Severity.CRITICAL
        verdicts = ", ".join(sorted({str(s.row.address.native.verdict) for s in rejecting}))
        outcome = f"and they reject it ({verdicts})"
    elif clocked:
        severity = Severity.WARNING
        outcome = (
            "and they trust its CA: the certificate they get is not the server's, and TLS fails there only because "
            f"of the clock of {name_list(clocked)} (it verifies at true time: the clock skew finding)"
        )
    else:
        severity = Severity.WARNING
        outcome = "and they trust its CA, so TLS works for them but the certificate they get is not the server's"
    install = (
        f"add its root CA (the chain leads to {_top(mine[0].row)}) to their trust stores or exempt {host} from "
        "inspection"
        if rejecting
        else f"they already trust its root CA (the chain leads to {_top(mine[0].row)}); exempt {host} from inspection "
        "if it must not be inspected"
    )
    seen_by = f"{name_list(others)} ({count(len(others), 'vantage')}) see it"
    if foreign.route is Route.SAME_ADDRESS:
        summary = (
            f"{name_list(agents)} {agree('see', agents)} the certificate of {host} at {capped(addresses)} issued "
            f"by {_issuer_label(foreign_leaf)}, not by {_issuer_label(genuine)} as {seen_by}: a proxy or "
            f"middlebox on their path re-signs TLS with its own CA, {outcome}."
        )
        fix = (
            f"Check HTTPS_PROXY/https_proxy on {name_list(agents)} and any corporate proxy or TLS-inspection "
            f"appliance on their path: if inspection is intended, {install} (NO_PROXY or the appliance's bypass "
            "list); if it is not intended, this is a man-in-the-middle: find the device that terminates TLS."
        )
        evidence = _evidence([*mine, *theirs])
    else:
        server_addresses = tuple(dict.fromkeys(s.row.address.address for s in foreign.genuine))
        summary = (
            f"{name_list(agents)} {agree('see', agents)} the certificate of {host} issued by "
            f"{_issuer_label(foreign_leaf)}, not by {_issuer_label(genuine)} as {seen_by}: "
            f"{'its' if len(agents) == 1 else 'their'} resolver sends {host} to {capped(addresses)} instead of "
            f"{capped(server_addresses)}, and what answers there re-signs TLS with its own CA ({foreign.why}), "
            f"{outcome}."
        )
        fix = (
            f"Check what {host} resolves to on {name_list(agents)} (/etc/hosts, the resolver and search domains "
            f"they use, a DNS-based inspection service): if a TLS-inspection proxy at {capped(addresses)} is "
            f"intended, {install}; if it is not, a resolver answer sends them to a man-in-the-middle: fix the "
            f"answer so that they reach {capped(server_addresses)}, and find who answers at {capped(addresses)}."
        )
        evidence = [*_evidence([*mine, *theirs]), _resolved([*mine, *theirs])]
        if foreign.stores:
            evidence.append(Evidence("trusted by", foreign.stores))
    return Finding(
        cause=Cause.TLS_INTERCEPTION,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=tuple(evidence),
        fix=fix,
        reproduce=_reproduce(observation, (failing or mine)[0].row, resolver=foreign.route is Route.RESOLVER),
    )


def _clock_only(row: Row) -> bool:
    """Fails on time at the host's clock while a store verifies the chain at true time: its CA is trusted."""
    native = row.address.native.verdict
    return native in TIME_FAILURES and any(s.at_reference_time is Verdict.OK for s in row.address.stores)


def _undecided(observation: Observation, undecided: Undecided) -> Finding:
    rows = [s for side in undecided.sides for s in side]
    parts = []
    for side in undecided.sides:
        agents = list(dict.fromkeys(s.row.agent for s in side))
        parts.append(f"{name_list(agents)} {agree('see', agents)} {_issuer_label(side[0].leaf)}")
    failing = [s for s in rows if not verifies(s.row)]
    host = observation.request.target.host
    return Finding(
        cause=Cause.TLS_INTERCEPTION,
        severity=Severity.CRITICAL if failing else Severity.WARNING,
        summary=(
            f"Vantages disagree on who issued the certificate of {host} at {capped(undecided.contested)}: "
            f"{'; '.join(parts)} (different issuer name and key): a proxy or middlebox on one side re-signs TLS, "
            "and as many vantages see each issuer, so compare with a host known to reach the server directly."
        ),
        agents=tuple(dict.fromkeys(s.row.agent for s in rows)),
        addresses=undecided.contested,
        evidence=tuple(_evidence(rows)),
        fix=(
            "Find which side's issuer is the server's (ask its owner, or check from the server's own network), then "
            "check HTTPS_PROXY/https_proxy and any TLS-inspection appliance on the other side's path."
        ),
        reproduce=_reproduce(observation, (failing or rows)[0].row),
    )
