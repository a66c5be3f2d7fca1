"""Protocol or cipher mismatch: the handshake breaks off over versions, ciphers or ALPN.

Only handshakes count: a fatal alert that names a negotiation problem, or a protocol error, on a
connected address. Connect failures are reachability's; a rejected chain (CERT_VERIFY) means the
negotiation itself worked; timeouts and resets (CLOSED) say nothing certain about versions; other
alerts (certificate_required, unknown_ca, access_denied, unrecognized_name, internal_error) name
other causes. A handshake that a variant with another SNI setting completes (and that no vantage
completes with the probe's own SNI) is SNI's finding.

Where the failure lies decides the finding (all critical: TLS fails there):
- nobody completes a handshake: the server accepts none of the offered versions or ciphers;
- an address no vantage completes with, while the same vantages complete with other addresses of the
  name: that backend is configured differently;
- otherwise the failing vantages' clients: others complete with the same server.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from ...agent.model import Failure
from ..observation import DiagnosisSettings, Observation, Row, rows_of
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import agree, count, name_list

# RFC 8446 alert names that mean "we could not agree on how to talk".
NEGOTIATION_ALERTS = frozenset(
    {
        "protocol_version",
        "handshake_failure",
        "insufficient_security",
        "illegal_parameter",
        "no_application_protocol",
        "inappropriate_fallback",
        "unsupported_extension",
    }
)
_VERSION_ALERTS = frozenset({"protocol_version", "inappropriate_fallback"})
_CIPHER_ALERTS = frozenset({"handshake_failure", "insufficient_security", "illegal_parameter"})
_COMPARE = "Compare OpenSSL versions and TLS settings of the failing and the working hosts with `tlsfleet agents`."


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    held_back = _explained_by_sni(observation)
    failing = [
        r for r in observation.rows if is_negotiation_failure(r) and (r.agent, r.address.address) not in held_back
    ]
    if not failing:
        return
    completed = [r for r in observation.rows if _completed(r)]
    if not completed:
        yield _server_wide(observation, failing)
        return
    backend: list[Row] = []
    client: list[Row] = []
    for r in failing:
        here = any(c.address.address == r.address.address for c in completed)
        elsewhere = any(c.agent == r.agent for c in completed)
        (backend if not here and elsewhere else client).append(r)
    if backend:
        yield _backend(observation, backend, completed)
    by_kind: dict[str, list[Row]] = defaultdict(list)
    for r in client:
        by_kind[_describe(r)].append(r)
    for rows in by_kind.values():
        yield _clients(observation, rows, completed)


# Handshakes that broke off over what the two sides would accept of each other. Until each has a finding
# of its own, they are told as protocol mismatches, by name, rather than not at all.
_REFUSED_TERMS = frozenset(
    {
        Failure.PROTOCOL_ERROR,
        Failure.NO_COMMON_VERSION,
        Failure.NO_COMMON_CIPHER,
        Failure.WEAK_KEY_EXCHANGE,
        Failure.CERT_TOO_LARGE,
        Failure.CLIENT_CERT_REQUIRED,
        Failure.NOT_TLS,
    }
)


def is_negotiation_failure(row: Row) -> bool:
    """The handshake broke off over versions, ciphers, key exchange, sizes or ALPN (as the failure and alert
    say)."""
    hs = row.address.handshake
    if not row.connected:
        return False
    return hs.failure in _REFUSED_TERMS or (hs.failure is Failure.TLS_ALERT and hs.alert in NEGOTIATION_ALERTS)


def _completed(row: Row) -> bool:
    return row.connected and row.address.handshake.failure in (Failure.NONE, Failure.CERT_VERIFY)


def _explained_by_sni(observation: Observation) -> set[tuple[str, str]]:
    """(agent, address) where a variant with another SNI setting completed, and no vantage completed
    with the probe's own SNI at that address: the name sent, not the versions, decides there."""
    main = {(r.agent, r.address.address): r.result.sni for r in observation.rows}
    completed_here = {r.address.address for r in observation.rows if _completed(r)}
    explained: set[tuple[str, str]] = set()
    for variant in observation.variants:
        for r in rows_of(variant.outcomes):
            key = (r.agent, r.address.address)
            if key in main and main[key] != r.result.sni and _completed(r) and key[1] not in completed_here:
                explained.add(key)
    return explained


def _describe(row: Row) -> str:
    hs = row.address.handshake
    if hs.failure is Failure.TLS_ALERT:
        return f"alert {hs.alert}"
    if hs.failure is Failure.PROTOCOL_ERROR:
        return "a protocol error"
    return str(hs.failure).replace("_", " ")


def _negotiated(rows: list[Row]) -> str:
    versions = sorted({r.address.handshake.tls_version for r in rows if r.address.handshake.tls_version})
    return " and ".join(versions) if versions else "a handshake"


def _bounds(observation: Observation) -> str:
    o = observation.request.options
    if not (o.min_version or o.max_version):
        return ""
    return f"min {o.min_version or 'default'}, max {o.max_version or 'default'}"


def _evidence(observation: Observation, failing: list[Row], completed: list[Row]) -> tuple[Evidence, ...]:
    def failed(r: Row) -> str:
        hs = r.address.handshake
        alert = f" (alert {hs.alert})" if hs.alert else ""
        return f"{hs.failure}{alert}: {hs.error}" if hs.error else f"{hs.failure}{alert}"

    evidence = [Evidence("handshake", tuple((r.where, failed(r)) for r in failing))]
    if completed:
        evidence.append(
            Evidence(
                "negotiated",
                tuple(
                    (r.where, f"{r.address.handshake.tls_version or '?'} {r.address.handshake.cipher}".strip())
                    for r in completed
                ),
            )
        )
    bounds = _bounds(observation)
    if bounds:
        evidence.append(Evidence("requested TLS versions", (("request", bounds),)))
    alpn = observation.request.options.alpn
    if alpn:
        evidence.append(Evidence("offered ALPN", (("request", ", ".join(alpn)),)))
    return tuple(evidence)


def _fix(rows: list[Row], negotiated: str, who: str) -> str:
    alerts = {r.address.handshake.alert for r in rows}
    parts = []
    if alerts & _VERSION_ALERTS:
        parts.append(
            f"Align TLS versions: {who} and the server share none (others negotiate {negotiated}); e.g. a server "
            "that only speaks TLS 1.3 and clients capped at TLS 1.2 by MaxProtocol in openssl.cnf or an old "
            "OpenSSL, or a MinProtocol that forbids what the server speaks."
        )
    if alerts & _CIPHER_ALERTS:
        parts.append(
            f"Align the cipher policy: no cipher suite, key-exchange group or signature algorithm that {who} and "
            "the server both accept (CipherString and SECLEVEL in openssl.cnf, FIPS mode, system crypto-policies)."
        )
    if "no_application_protocol" in alerts:
        parts.append("Align ALPN: the server accepts none of the application protocols offered.")
    if not parts:
        parts.append(
            f"Align TLS versions and cipher policy between {who} and the server (MinProtocol, MaxProtocol, "
            "CipherString in openssl.cnf or the runtime's TLS settings)."
        )
    return " ".join(parts)


def _reproduce(observation: Observation, row: Row) -> tuple[str, ...]:
    port = observation.request.target.port
    base = s_client(row.address.address, port, row.result.sni, show_certs=False).removesuffix(" </dev/null")
    return ("openssl version", f"{base} -tls1_3 </dev/null", f"{base} -tls1_2 </dev/null")


def _server_wide(observation: Observation, failing: list[Row]) -> Finding:
    by_kind: dict[str, list[str]] = defaultdict(list)
    for r in failing:
        by_kind[_describe(r)].append(r.agent)
    if len(by_kind) == 1:
        how = f"{next(iter(by_kind))} on every vantage"
    else:
        how = "; ".join(f"{kind} on {name_list(agents)}" for kind, agents in by_kind.items())
    bounds = _bounds(observation)
    bounded = f" within the requested bounds ({bounds})" if bounds else ""
    return Finding(
        cause=Cause.PROTOCOL_MISMATCH,
        severity=Severity.CRITICAL,
        summary=(
            f"No vantage completes a TLS handshake with {observation.target} ({how}): the server accepts none of the "
            f"offered TLS versions or ciphers{bounded}, or does not speak TLS on that port."
        ),
        agents=tuple(dict.fromkeys(r.agent for r in failing)),
        addresses=tuple(dict.fromkeys(r.address.address for r in failing)),
        evidence=_evidence(observation, failing, []),
        fix=(
            "Make the server accept what clients offer (TLS 1.2 and 1.3 with current cipher suites); if the probe's "
            "version bounds or ALPN caused it, probe again without them; if the port speaks plain text or needs "
            "STARTTLS, probe it that way."
        ),
        reproduce=_reproduce(observation, failing[0]),
    )


def _backend(observation: Observation, failing: list[Row], completed: list[Row]) -> Finding:
    addresses = tuple(dict.fromkeys(r.address.address for r in failing))
    agents = tuple(dict.fromkeys(r.agent for r in failing))
    working = [c for c in completed if c.agent in agents]
    kinds = ", ".join(dict.fromkeys(_describe(r) for r in failing))
    good = tuple(dict.fromkeys(c.address.address for c in working))
    verb = "refuses" if len(addresses) == 1 else "refuse"
    return Finding(
        cause=Cause.PROTOCOL_MISMATCH,
        severity=Severity.CRITICAL,
        summary=(
            f"{', '.join(addresses)} behind {observation.request.target.host} {verb} the handshake ({kinds}) from "
            f"{name_list(agents)}, which complete it with {', '.join(good)} ({_negotiated(working)}): that backend's "
            "TLS versions or ciphers differ from the rest of the pool."
        ),
        agents=agents,
        addresses=addresses,
        evidence=_evidence(observation, failing, working),
        fix=(
            f"Give {', '.join(addresses)} the same TLS configuration (versions, cipher suites, certificate type) as "
            f"{', '.join(good)}, or take {'it' if len(addresses) == 1 else 'them'} out of the pool."
        ),
        reproduce=_reproduce(observation, failing[0]),
    )


def _clients(observation: Observation, failing: list[Row], completed: list[Row]) -> Finding:
    agents = tuple(dict.fromkeys(r.agent for r in failing))
    addresses = {r.address.address for r in failing}
    others = [c for c in completed if c.agent not in agents] or completed
    same_address = [c for c in others if c.address.address in addresses]
    compared = same_address or others
    other_agents = tuple(dict.fromkeys(c.agent for c in compared))
    caveat = (
        "" if same_address else " (the vantages that complete reached other addresses, so that backend may differ too)"
    )
    who = f"the clients on {name_list(agents)}"
    return Finding(
        cause=Cause.PROTOCOL_MISMATCH,
        severity=Severity.CRITICAL,
        summary=(
            f"{name_list(agents)} cannot complete a TLS handshake with {observation.target} ({_describe(failing[0])}) "
            f"while {name_list(other_agents)} ({count(len(other_agents), 'vantage')}) "
            f"{agree('negotiate', other_agents)} "
            f"{_negotiated(compared)}{caveat}: their TLS version or cipher settings and the server's do not overlap."
        ),
        agents=agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in failing)),
        evidence=_evidence(observation, failing, compared),
        fix=f"{_fix(failing, _negotiated(compared), who)} {_COMPARE}",
        reproduce=_reproduce(observation, failing[0]),
    )
