"""SNI difference: the same address answers differently with no SNI, or with another SNI name.

The main probe's rows are paired with each variant's by vantage and address, so a DNS or backend
difference is never mistaken for an SNI one; and a pair counts only when neither leaf also appears on
the other side at that address (a pool behind one address that hands out two certificates at random
is inconsistent backends, not SNI).

- Critical: the main probe sent no SNI and got a leaf that does not cover the name (or was refused),
  while the same address with SNI serves one that does: the probed client fails for want of SNI.
  Also critical: the main probe's SNI is refused while another SNI setting completes (the name is
  not configured on the server; protocol holds back on these).
- Warning: the main probe (with SNI) is fine, but without SNI the server presents a certificate that
  does not cover the name, or refuses the handshake: clients that send no SNI fail. Also: with SNI
  the certificate does not cover the name while the no-SNI default does (the name is mis-routed).
- Info: a different certificate that still covers the name; different names, different certificates.

`wants_no_sni_variant` and `wants_sni_variant` tell the caller when a variant would settle whether a
name mismatch is the server's default certificate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from ...agent.model import Failure
from ...agent.trust.names import parse_expected_name
from ..observation import DiagnosisSettings, Observation, Row, Variant, rows_of
from .extensions import covers
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import cert_brief, cert_name, name_list

__all__ = ["findings", "wants_no_sni_variant", "wants_sni_variant"]

# The handshake broke off for a reason the name sent may explain (not a timeout or an internal error).
_REFUSALS = frozenset({Failure.TLS_ALERT, Failure.PROTOCOL_ERROR, Failure.CLOSED, Failure.RESET})
_NO_SNI_CLIENTS = "old Java, some health checkers and load-balancer probes send none"


class _Kind(Enum):
    NO_SNI_DEFAULT_BREAKS_PROBE = (Severity.CRITICAL, "the probe sent no SNI and got a certificate for another name")
    NO_SNI_REFUSED_PROBE = (Severity.CRITICAL, "the probe sent no SNI and was refused")
    SNI_REFUSED_PROBE = (Severity.CRITICAL, "the probe's SNI was refused, another SNI setting completes")
    NO_SNI_DEFAULT_BREAKS = (Severity.WARNING, "without SNI a certificate for another name")
    NO_SNI_REFUSED = (Severity.WARNING, "without SNI the handshake is refused")
    SNI_MISROUTED = (Severity.WARNING, "with SNI a certificate for another name")
    OTHER_CERT_STILL_COVERS = (Severity.INFO, "another certificate that still covers the name")
    PER_NAME = (Severity.INFO, "another name, another certificate")

    @property
    def severity(self) -> Severity:
        return self.value[0]


@dataclass(frozen=True)
class _Pair:
    """The same agent and address probed with the request's SNI and with a variant."""

    main: Row
    variant: Row


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    main = {(r.agent, r.address.address): r for r in observation.rows if r.connected}
    for variant in observation.variants:
        groups: dict[tuple[_Kind, str, str], list[_Pair]] = defaultdict(list)
        for pair in _differing_pairs(main, variant):
            kind = _classify(observation, pair)
            if kind is not None:
                groups[(kind, pair.main.leaf_fingerprint, pair.variant.leaf_fingerprint)].append(pair)
        for (kind, _, _), pairs in groups.items():
            yield _finding(observation, variant, kind, pairs)


def wants_no_sni_variant(observation: Observation) -> bool:
    """The main probe sent SNI and some leaf does not cover the name, and no no-SNI variant was run: probing
    again without SNI shows whether the server falls back to its default certificate."""
    if _sent_sni(observation) is not True or not _some_mismatch(observation):
        return False
    if _is_ip(observation.expected_name):
        return False  # no SNI goes out for an IP address anyway: the variant would be the same probe
    return not any(not v.request.options.send_sni for v in observation.variants)


def wants_sni_variant(observation: Observation) -> bool:
    """The main probe sent no SNI and some leaf does not cover the name (or the handshake was refused), and
    no SNI variant was run: probing again with SNI = the expected name shows whether SNI selects the right
    certificate. False when the name is an IP address (SNI cannot carry one)."""
    if _sent_sni(observation) is not False:
        return False
    if not (_some_mismatch(observation) or any(_refused(r) for r in observation.rows if r.connected)):
        return False
    if _is_ip(observation.expected_name):
        return False
    return not any(v.request.options.send_sni and not _is_ip(_variant_name(v)) for v in observation.variants)


# --- facts ----------------------------------------------------------------------------------------


def _is_ip(name: str) -> bool:
    try:
        return parse_expected_name(name).ip is not None
    except ValueError:
        return False


def _variant_name(variant: Variant) -> str:
    options = variant.request.options
    return options.sni or variant.request.target.host


def _sent_sni(observation: Observation) -> bool | None:
    """Whether the main probe's answering vantages sent SNI; None when none answered."""
    sent = {o.result.sni is not None for o in observation.answered if o.result is not None}
    return sent.pop() if len(sent) == 1 else (True if sent else None)


def _covers(row: Row, name: str) -> bool | None:
    """Whether the row's leaf covers `name` (RFC 6125, SAN only, read past other malformed extensions); None
    when that cannot be judged. Cached per leaf and name: thousands of rows share a few leaves."""
    if not row.address.chain:
        return None
    return covers(row.address.chain[0], name)


def _some_mismatch(observation: Observation) -> bool:
    return any(_covers(r, observation.expected_name) is False for r in observation.rows_with_chain)


def _refused(row: Row) -> bool:
    return not row.has_chain and row.address.handshake.failure in _REFUSALS


def _differing_pairs(main: dict[tuple[str, str], Row], variant: Variant) -> Iterator[_Pair]:
    rows = [r for r in rows_of(variant.outcomes) if r.connected]
    main_leaves: dict[str, set[str]] = defaultdict(set)
    variant_leaves: dict[str, set[str]] = defaultdict(set)
    for r in main.values():
        if r.has_chain:
            main_leaves[r.address.address].add(r.leaf_fingerprint)
    for r in rows:
        if r.has_chain:
            variant_leaves[r.address.address].add(r.leaf_fingerprint)
    for v in rows:
        m = main.get((v.agent, v.address.address))
        if m is None or m.leaf_fingerprint == v.leaf_fingerprint:
            continue
        if not (m.has_chain or v.has_chain):
            continue
        if (m.has_chain and not v.has_chain and not _refused(v)) or (
            v.has_chain and not m.has_chain and not _refused(m)
        ):
            continue
        address = v.address.address
        # A leaf that shows up on both sides at this address is served with either SNI: not an SNI effect.
        if v.leaf_fingerprint in main_leaves[address] or m.leaf_fingerprint in variant_leaves[address]:
            continue
        yield _Pair(m, v)


def _classify(observation: Observation, pair: _Pair) -> _Kind | None:
    m, v = pair.main, pair.variant
    expected = observation.expected_name
    main_sni, variant_sni = m.result.sni, v.result.sni
    if main_sni is None and variant_sni is not None:
        if _refused(m):
            return _Kind.NO_SNI_REFUSED_PROBE
        if _refused(v):
            return None  # SNI makes it worse: the server's problem with that name, not an SNI-less client's
        main_covers, variant_covers = _covers(m, expected), _covers(v, expected)
        if main_covers is False and variant_covers:
            return _Kind.NO_SNI_DEFAULT_BREAKS_PROBE
        if main_covers and variant_covers is False and _same_name(variant_sni, expected):
            return _Kind.SNI_MISROUTED
        return _Kind.OTHER_CERT_STILL_COVERS if variant_covers else _Kind.PER_NAME
    if main_sni is not None and _refused(m):
        return _Kind.SNI_REFUSED_PROBE if v.has_chain else None
    if main_sni is not None and variant_sni is None:
        if _refused(v):
            return _Kind.NO_SNI_REFUSED if m.has_chain else None
        main_covers, variant_covers = _covers(m, expected), _covers(v, expected)
        if variant_covers is False and main_covers:
            return _Kind.NO_SNI_DEFAULT_BREAKS
        if variant_covers:
            return _Kind.OTHER_CERT_STILL_COVERS
        return None  # neither covers the name: that is the name rule's finding, SNI changes nothing for it
    different_names = main_sni is not None and variant_sni is not None and not _same_name(main_sni, variant_sni)
    return _Kind.PER_NAME if different_names and m.has_chain and v.has_chain else None


def _same_name(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


# --- wording --------------------------------------------------------------------------------------


def _label(sni: str | None) -> str:
    return f"SNI {sni}" if sni else "no SNI"


def _served(row: Row) -> str:
    leaf = row.leaf
    if leaf is not None:
        return cert_brief(leaf)
    hs = row.address.handshake
    return f"refused: {hs.failure}" + (f" (alert {hs.alert})" if hs.alert else "")


def _refusal(row: Row) -> str:
    hs = row.address.handshake
    return f"alert {hs.alert}" if hs.alert else str(hs.failure)


def _finding(observation: Observation, variant: Variant, kind: _Kind, pairs: list[_Pair]) -> Finding:
    expected = observation.expected_name
    first = pairs[0]
    m, v = first.main, first.variant
    m_name = cert_name(m.leaf) if m.leaf else "no certificate"
    v_name = cert_name(v.leaf) if v.leaf else "no certificate"
    agents = tuple(dict.fromkeys(p.main.agent for p in pairs))
    addresses = tuple(dict.fromkeys(p.main.address.address for p in pairs))
    where = f"{name_list(addresses)} from {name_list(agents)}"
    v_sni = v.result.sni or expected
    fix: str
    match kind:
        case _Kind.NO_SNI_DEFAULT_BREAKS_PROBE:
            summary = (
                f"Clients that send no SNI get the server's default certificate {m_name}, which does not cover "
                f"{expected}, while with SNI {v_sni} they get {v_name}, which does ({where}): send SNI (most HTTP "
                f"clients do; {_NO_SNI_CLIENTS})."
            )
            fix = (
                f"Make the failing clients send SNI {expected}; if clients without SNI must work, make the "
                f"certificate the server presents without SNI (its default) cover {expected}."
            )
        case _Kind.NO_SNI_REFUSED_PROBE:
            summary = (
                f"The server refuses clients that send no SNI ({_refusal(m)}) but completes with SNI {v_sni} "
                f"({where}): send SNI (most HTTP clients do; {_NO_SNI_CLIENTS})."
            )
            fix = (
                f"Make the failing clients send SNI {expected}; if clients without SNI must work, give the server a "
                f"default certificate covering {expected}."
            )
        case _Kind.SNI_REFUSED_PROBE:
            summary = (
                f"The server refuses the handshake when the SNI is {m.result.sni} ({_refusal(m)}) but completes "
                f"with {_label(v.result.sni)}, presenting {v_name} ({where}): it has no certificate or virtual host "
                f"configured for {m.result.sni}."
            )
            fix = (
                f"Configure {m.result.sni} on the server (a certificate covering it and a virtual host or "
                "server_name block that selects it), or point clients at a name the server serves."
            )
        case _Kind.NO_SNI_DEFAULT_BREAKS:
            summary = (
                f"Clients that send no SNI get the server's default certificate {v_name}, which does not cover "
                f"{expected} (with SNI they get {m_name}, which does; {where}): clients without SNI fail "
                f"({_NO_SNI_CLIENTS})."
            )
            fix = (
                f"If clients without SNI talk to {expected}, make the server's default certificate cover it (or make "
                f"{expected} the default virtual host); otherwise make those clients send SNI."
            )
        case _Kind.NO_SNI_REFUSED:
            summary = (
                f"The server refuses clients that send no SNI ({_refusal(v)}) while it completes with SNI "
                f"{m.result.sni} ({where}): clients without SNI fail ({_NO_SNI_CLIENTS})."
            )
            fix = (
                f"If clients without SNI talk to {expected}, configure a default certificate covering it; "
                "otherwise make those clients send SNI."
            )
        case _Kind.SNI_MISROUTED:
            summary = (
                f"With SNI {v_sni} the server presents {v_name}, which does not cover {expected}, while its "
                f"default certificate {m_name} does ({where}): the server's SNI configuration for {v_sni} selects "
                "the wrong certificate, and every client that sends SNI fails."
            )
            fix = f"Fix the server's certificate selection for SNI {v_sni} (its virtual host or server_name block)."
        case _Kind.OTHER_CERT_STILL_COVERS:
            summary = (
                f"With {_label(v.result.sni)} the server presents {v_name} instead of {m_name} "
                f"({_label(m.result.sni)}; {where}); both cover {expected}, so clients work either way."
            )
            fix = "Nothing breaks; keep both certificates renewed (each has its own expiry)."
        case _Kind.PER_NAME:
            summary = (
                f"With {_label(v.result.sni)} the server presents {v_name}, with {_label(m.result.sni)} {m_name} "
                f"({where}): it selects certificates by the name sent."
            )
            fix = "Nothing to fix if intended: each name must be covered by the certificate it selects."
    main_label = f"main probe, {_label(m.result.sni)}"
    variant_label = variant.label
    evidence = (
        Evidence(f"served ({main_label})", tuple((p.main.where, _served(p.main)) for p in pairs)),
        Evidence(f"served ({variant_label})", tuple((p.variant.where, _served(p.variant)) for p in pairs)),
        Evidence(
            f"covers {expected}",
            tuple(
                (f"{p.main.where} ({side})", _yes_no(_covers(row, expected)))
                for p in pairs
                for side, row in ((main_label, p.main), (variant_label, p.variant))
                if row.has_chain
            ),
        ),
    )
    port = observation.request.target.port
    show = "openssl x509 -noout -subject -ext subjectAltName"
    reproduce = (
        f"{s_client(m.address.address, port, None, show_certs=False)} 2>/dev/null | {show}",
        f"{s_client(m.address.address, port, v.result.sni or m.result.sni or expected, show_certs=False)}"
        f" 2>/dev/null | {show}",
    )
    return Finding(
        cause=Cause.SNI_DIFFERENCE,
        severity=kind.severity,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=evidence,
        fix=fix,
        reproduce=tuple(dict.fromkeys(reproduce)),
    )


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "cannot tell"}[value]
