"""Protocol or cipher mismatch: the handshake breaks off because the two sides share no TLS version, cipher
suite or ALPN protocol.

Only that failure counts (`handshake.Outcome.NEGOTIATION`): NO_COMMON_VERSION or NO_COMMON_CIPHER from
this host's client, a fatal alert that names a negotiation problem (protocol_version, handshake_failure,
insufficient_security, ...) from the server, or a protocol error after the server chose TLS 1.0 or 1.1
(the client refuses what that version needs). Connect failures, timeouts, resets, closes, other protocol
errors and other alerts are reachability's (handshake_incomplete); a client certificate, a certificate
too large and a weak key exchange are `handshake`'s; a rejected chain (CERT_VERIFY) means the negotiation
itself worked. A handshake that a variant with another SNI setting completes (and that no vantage
completes with the probe's own SNI) is SNI's finding.

Where the failure lies decides the finding (all critical: TLS fails there), and it says who refused:
- nobody completes a handshake: the server accepts none of the offered versions or ciphers (it sent the
  alert), or every vantage's client refuses what the server chose (the server's settings are older or
  narrower than every client's policy);
- an address no vantage completes with, while the same vantages complete with other addresses of the
  name: that backend is configured differently;
- otherwise the failing vantages' clients: others complete with the same server.

A ServerHello that chooses what the ClientHello never offered (a cipher suite OpenSSL calls unknown or wrong
returned, a version code no TLS has) is the server's fault whoever refused it: no client policy explains it.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterator

from ...agent.model import Client, Failure, Party, TlsVersion
from ..observation import DiagnosisSettings, Observation, Row
from .handshake import (
    LEGACY_VERSIONS,
    NEGOTIATION_ALERTS,
    Outcome,
    comparison,
    not_the_server,
    outcome_of,
    placed,
    python_completes,
    reason_code,
    refuser,
    request_evidence,
    s_client_with,
    views_evidence,
)
from .handshake import handshake_evidence as _handshake_evidence
from .handshake import negotiated as _negotiated
from .handshake import negotiated_evidence as _negotiated_evidence
from .model import Cause, Evidence, Finding, Severity
from .wording import agree, count, name_list

__all__ = ["NEGOTIATION_ALERTS", "findings", "is_negotiation_failure"]

_VERSION_ALERTS = frozenset({"protocol_version", "inappropriate_fallback"})
_CIPHER_ALERTS = frozenset({"handshake_failure", "insufficient_security", "illegal_parameter"})
# OpenSSL's reasons when the ServerHello chose a cipher suite the ClientHello did not offer (or not for the version
# chosen): no client policy explains that; the server ignored the offer.
_UNOFFERED_CIPHER = frozenset({"UNKNOWN_CIPHER_RETURNED", "WRONG_CIPHER_RETURNED"})
_COMPARE = "Compare OpenSSL versions and TLS settings of the failing and the working hosts with `tlsfleet agents`."


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    yield from placed(
        observation,
        is_negotiation_failure,
        everywhere=_server_wide,
        backend=_backend,
        clients=_clients,
        kind=_describe,
    )


def is_negotiation_failure(row: Row) -> bool:
    """The handshake broke off because the two sides share no version, cipher or ALPN protocol (as the failure
    and alert say)."""
    return outcome_of(row) is Outcome.NEGOTIATION


def _over(row: Row) -> str:
    """What the two sides could not agree on: 'version', 'cipher', 'alpn' or 'negotiation'."""
    hs = row.address.handshake
    if hs.failure is Failure.NO_COMMON_VERSION or hs.alert in _VERSION_ALERTS:
        return "version"
    if hs.failure is Failure.PROTOCOL_ERROR and hs.tls_version in LEGACY_VERSIONS:
        return "version"
    if hs.failure is Failure.NO_COMMON_CIPHER or hs.alert in _CIPHER_ALERTS:
        return "cipher"
    if hs.alert == "no_application_protocol":
        return "alpn"
    return "negotiation"


def _unoffered(row: Row) -> str:
    """What the server chose that the client never offered ("cipher suite RC4-SHA", "version 0x0305"), as OpenSSL
    refused it; "" when the server chose within the offer."""
    hs = row.address.handshake
    if refuser(row) is not Party.CLIENT:
        return ""
    if hs.failure is Failure.NO_COMMON_CIPHER and reason_code(hs.error) in _UNOFFERED_CIPHER:
        return f"cipher suite {hs.cipher or 'unknown'}"
    if hs.failure is Failure.NO_COMMON_VERSION and hs.tls_version.startswith("0x"):
        return f"version {hs.tls_version}"  # a code no TLS version has: beyond anything a client offers
    return ""


def _describe(row: Row) -> str:
    hs = row.address.handshake
    unoffered = _unoffered(row)
    if unoffered:
        return f"unoffered {unoffered} chosen by the server"
    if hs.failure is Failure.TLS_ALERT:
        return f"alert {hs.alert}"
    if hs.failure is Failure.PROTOCOL_ERROR:
        reason = reason_code(hs.error)
        return f"the server chose {hs.tls_version}, refused by the client{f' ({reason})' if reason else ''}"
    who = ", refused by the client" if refuser(row) is Party.CLIENT else ""
    return f"{str(hs.failure).replace('_', ' ')}{who}"


def _bounds(observation: Observation) -> str:
    o = observation.request.options
    if not (o.min_version or o.max_version):
        return ""
    return f"min {o.min_version or 'default'}, max {o.max_version or 'default'}"


def _evidence(observation: Observation, failing: list[Row], completed: list[Row]) -> tuple[Evidence, ...]:
    evidence = [_handshake_evidence(failing)]
    if completed:
        evidence.append(_negotiated_evidence(completed))
    views = views_evidence(failing)
    if views is not None:
        evidence.append(views)
    evidence += request_evidence(observation)
    return tuple(evidence)


def _fix(rows: list[Row], negotiated: str, who: str) -> str:
    over = {_over(r) for r in rows}
    parts = []
    if "version" in over:
        parts.append(
            f"Align TLS versions: {who} and the server share none (others negotiate {negotiated}); e.g. a server "
            "that only speaks TLS 1.3 and clients capped at TLS 1.2 by MaxProtocol in openssl.cnf or an old "
            "OpenSSL, or a MinProtocol that forbids what the server speaks."
        )
    if "cipher" in over:
        parts.append(
            f"Align the cipher policy: no cipher suite, key-exchange group or signature algorithm that {who} and "
            "the server both accept (CipherString and SECLEVEL in openssl.cnf, FIPS mode, system crypto-policies)."
        )
    if "alpn" in over:
        parts.append("Align ALPN: the server accepts none of the application protocols offered.")
    if not parts:
        parts.append(
            f"Align TLS versions and cipher policy between {who} and the server (MinProtocol, MaxProtocol, "
            "CipherString in openssl.cnf or the runtime's TLS settings)."
        )
    return " ".join(parts)


def _offered_alpn(observation: Observation) -> str:
    return ", ".join(observation.request.options.alpn)


def _reproduce(observation: Observation, row: Row) -> tuple[str, ...]:
    tls12, tls13 = TlsVersion.TLS1_2.value, TlsVersion.TLS1_3.value
    alpn = observation.request.options.alpn
    if _over(row) == "alpn" and alpn:
        # The same offer, then none: without ALPN the server picks its default protocol and completes.
        return (s_client_with(observation, row), s_client_with(observation, row, alpn=False))
    commands = [
        "openssl version",
        s_client_with(observation, row, "-min_protocol", tls13),
        s_client_with(observation, row, "-max_protocol", tls12),
    ]
    if _over(row) == "version" and (row.address.handshake.tls_version in LEGACY_VERSIONS or _refused_modern(row)):
        # Does the server complete at an old version? (Security level 0: TLS 1.0 needs SHA-1 signatures.)
        commands.append(
            s_client_with(observation, row, "-max_protocol", TlsVersion.TLS1_1.value, "-cipher", "DEFAULT@SECLEVEL=0")
        )
    return tuple(commands)


def _refused_modern(row: Row) -> bool:
    return row.address.handshake.alert in _VERSION_ALERTS


def _chosen(rows: list[Row]) -> str:
    """The versions the server chose in its ServerHello, where it got that far."""
    return " and ".join(sorted({r.address.handshake.tls_version for r in rows if r.address.handshake.tls_version}))


def _verdict(rows: list[Row], bounded: str, alpn: str) -> str:
    """Who refused, for a finding where no vantage completes: the server (its alert), every client (what the
    server chose is outside their policy), or each of them for some vantages."""
    over = {_over(r) for r in rows}
    if over == {"alpn"}:
        offered = f"the application protocols offered in ALPN ({alpn})" if alpn else "the client's ALPN protocols"
        return f"the server speaks none of {offered} and refuses the handshake rather than go on without ALPN"
    what = {frozenset({"version"}): "TLS versions", frozenset({"cipher"}): "ciphers"}.get(
        frozenset(over), "versions or ciphers"
    )
    by_server = [r for r in rows if refuser(r) is not Party.CLIENT]
    by_client = [r for r in rows if refuser(r) is Party.CLIENT]
    chosen = _chosen(by_client)
    speaks = f"it chose {chosen}" if chosen else "what it chose"
    if not by_client:
        unusable = ", or has no certificate it can use with them" if _certificate_may_be_why(rows) else ""
        return (
            f"the server accepts none of the offered TLS versions or ciphers{bounded} ({_refuses(over)}){unusable}"
            + _NO_SNI_SENT * _no_sni_sent(rows)
        )
    unoffered = sorted({_unoffered(r) for r in rows})
    if not by_server and all(unoffered):
        return (
            f"every vantage's client refuses the server's choice of {' and '.join(unoffered)}, which it did not "
            f"offer{bounded}: the server ignores the client's offer (a TLS server may choose only among the versions "
            "and cipher suites the ClientHello lists), as a broken TLS stack, or a middlebox answering for it, does"
        )
    if not by_server:
        return (
            f"every vantage's client refuses what the server offers{bounded} ({speaks}): the server's {what} are "
            "older or narrower than every client's policy"
        )
    server_side = name_list(list(dict.fromkeys(r.agent for r in by_server)))
    client_side = name_list(list(dict.fromkeys(r.agent for r in by_client)))
    return (
        f"the server refuses what {server_side} offer{bounded}, and the clients on {client_side} refuse what it "
        f"offers ({speaks}): the server's {what} are older or narrower than what any vantage accepts"
    )


def _refuses(over: set[str]) -> str:
    """What a server's negotiation alert says it refused: a handshake_failure (and the like) names no cipher, and
    is just as much a key-exchange group or signature algorithm it shares with none of the offer."""
    if over == {"version"}:
        return "it refuses the TLS versions"
    if over == {"cipher"}:
        return "it shares no cipher suite, key-exchange group or signature algorithm with what was offered"
    return "it refuses the versions, ciphers, groups or signature algorithms offered"


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
            f"No vantage completes a TLS handshake with {observation.target} ({how}): "
            f"{_verdict(failing, bounded, _offered_alpn(observation))}."
            + (not_the_server(failing) if python_completes(failing) else "")
        ),
        agents=tuple(dict.fromkeys(r.agent for r in failing)),
        addresses=tuple(dict.fromkeys(r.address.address for r in failing)),
        evidence=_evidence(observation, failing, []),
        fix=_host_policy_fix(failing) if python_completes(failing) else _server_fix(observation, failing),
        reproduce=_reproduce(observation, failing[0]),
    )


_NO_SNI_SENT = (
    "; but no SNI was sent, and servers that pick their configuration by SNI (CDNs, strict virtual hosting) refuse "
    "a client that names no host with just such an alert: probe with SNI before changing versions or ciphers"
)


def _no_sni_sent(rows: list[Row]) -> bool:
    """The probe sent no SNI for a DNS name (an IP target is never named in SNI): the refusal may be over that."""
    return all(
        r.result.sni is None and not _is_ip(r.result.expected_name) and refuser(r) is not Party.CLIENT for r in rows
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _certificate_may_be_why(rows: list[Row]) -> bool:
    """The server alerted handshake_failure to every offer: besides no common cipher, that is what OpenSSL
    servers send when their certificate suits none of what the client offers (the served chain is not seen)."""
    return all(r.address.handshake.alert == "handshake_failure" and refuser(r) is not Party.CLIENT for r in rows)


def _server_fix(observation: Observation, failing: list[Row]) -> str:
    over = {_over(r) for r in failing}
    unoffered = sorted({_unoffered(r) for r in failing})
    if all(unoffered):
        return (
            "Fix or replace the server's TLS stack (or whatever answers on its address): it must choose among what "
            f"the client offers, and it chose {' and '.join(unoffered)}, which no vantage offered. Then give it what "
            "current clients offer: TLS 1.2 and 1.3 with ECDHE (X25519, P-256) and AES-GCM or ChaCha20 suites."
        )
    if over == {"alpn"}:
        alpn = _offered_alpn(observation)
        offered = f" {alpn}" if alpn else " none it speaks"
        return (
            f"Offer an application protocol the server speaks: the probe offered{offered}; probe again without "
            "--alpn or with the protocol the clients really use (--alpn http/1.1). If clients need what was "
            "offered, enable it on the server (HTTP/2 for h2: nginx `http2 on`, Apache `Protocols h2 http/1.1`)."
        )
    # The directives Python's default context keeps as configured: its failing alike does not clear them.
    kept = ", ".join(
        [
            *(["MaxProtocol"] if any(r.address.handshake.alert == "protocol_version" for r in failing) else []),
            *(["Groups", "SignatureAlgorithms", "Ciphersuites"] if "cipher" in over else []),
        ]
    )
    narrowed = (
        f" If the hosts' OpenSSL configuration narrows what they offer (openssl.cnf system_default: {kept}, which "
        "Python's default context keeps too), compare it with what the server accepts."
        if kept
        else ""
    )
    first = (
        "Probe with SNI first (without --no-sni, or with --sni NAME): if that completes, the server wants SNI, and "
        "the clients that send none (old Java, health checks by address) must send it. Otherwise: "
        if _no_sni_sent(failing)
        else ""
    )
    return (
        first + "Make the server accept what current clients offer: TLS 1.2 and 1.3 with ECDHE (X25519, P-256) and "
        "AES-GCM or ChaCha20 suites"
        + (f" (it chose {_chosen(failing)})" if _chosen(failing) else "")
        + "; if the probe's version bounds or ALPN caused it, probe again without them."
        + narrowed
        + (_CERTIFICATE_FIX if _certificate_may_be_why(failing) else "")
    )


_CERTIFICATE_FIX = (
    " A server that accepts those still refuses every offer when its certificate suits none of them: an EC key on a "
    "curve the clients do not offer (OpenSSL offers X25519, P-256, X448, P-521 and P-384 by default, not P-224, "
    "brainpool or secp256k1), a DSA key (OpenSSL 3 clients offer no DSS cipher suite by default, and TLS 1.3 has no "
    "DSA at all), or, where only TLS 1.2 is served, an ECDSA leaf whose keyUsage lacks digitalSignature; "
    "read the server's certificate (`openssl x509 -noout -text -in CERT` there) and reissue it with a P-256 key and "
    "keyUsage digitalSignature."
)


def _host_policy_fix(failing: list[Row]) -> str:
    """Python's default context completes where the openssl view fails: the server speaks a current TLS, and
    the hosts' OpenSSL configuration (which Python's context partly replaces) leaves it out."""
    agents = python_completes(failing)
    negotiated = sorted(
        {
            f"{v.tls_version} {v.cipher}".strip()
            for r in failing
            if r.agent in agents
            for v in r.address.views
            if v.client is Client.PYTHON and v.tls_version
        }
    )
    with_python = f" ({' and '.join(negotiated)})" if negotiated else ""
    over = {_over(r) for r in failing}
    directives = "MinProtocol or Protocol" if over == {"version"} else "MinProtocol, CipherString and its @SECLEVEL"
    return (
        f"On {name_list(agents)}, Python's default context completes the handshake{with_python}, so the server "
        f"speaks a current TLS: relax {directives} in the OpenSSL configuration in force there (OPENSSL_CONF or "
        "openssl.cnf, its system_default section; `tlsfleet agents` lists it) to admit it, or make the server "
        "also accept what that configuration asks for."
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
    compared, caveat = comparison(failing, completed)
    other_agents = tuple(dict.fromkeys(c.agent for c in compared))
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
