"""Handshakes that break off after TCP connected: what each says, where the failure lies, and the refusals
over what one side presented (a client certificate, the size of the server's certificate, its key exchange).

Every connected row's handshake ends in one family (`outcome_of`), and each family has one owner:

- COMPLETED: the handshake finished, or only the chain was rejected (the chain rules judge it);
- NEGOTIATION: no common version or cipher (NO_COMMON_VERSION, NO_COMMON_CIPHER, an alert such as
  protocol_version or handshake_failure, or a protocol error after the server chose TLS 1.0 or 1.1):
  `protocol`;
- CLIENT_CERT: the server wants a client certificate, or refuses the one presented: here;
- CERT_TOO_LARGE: the certificate message exceeds what the client accepts (OpenSSL: 100 KiB): here;
- WEAK_KEY_EXCHANGE: the client refused the server's DH/EC group or key as too weak: here;
- INCOMPLETE: everything else (timeout, reset, close, not TLS, other protocol errors and alerts):
  `reachability`.

Where the failure lies (`place`) decides the wording, as everywhere in the diagnosis: when no vantage
completes any handshake it is the server's (or every client's) problem; an address no vantage completes
with, while the same vantages complete with the name's other addresses, is that backend; otherwise it is
the failing vantages' environment, and the server is not blamed.

Findings here (critical where a client fails now):
- client_cert_required: warning when no certificate was presented (configure one for the probe), critical
  when the server refuses a certificate that was presented;
- certificate_too_large: critical;
- weak_key_exchange: critical.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from ...agent.model import Client, Failure, Party, Starttls, TlsVersion
from ..observation import DiagnosisSettings, Observation, Row, rows_of
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client
from .wording import agree, common_name, count, name_list

__all__ = [
    "CLIENT_CERT_ALERTS",
    "LEGACY_VERSIONS",
    "NEGOTIATION_ALERTS",
    "OPENSSL_CERT_LIMIT_KIB",
    "Outcome",
    "Placement",
    "addresses_of",
    "agents_of",
    "comparison",
    "completed_rows",
    "connect_evidence",
    "explained_by_sni",
    "failure_text",
    "findings",
    "handshake_evidence",
    "negotiated",
    "negotiated_evidence",
    "not_the_server",
    "outcome_of",
    "place",
    "placed",
    "python_completes",
    "python_handshake",
    "reached",
    "reason_code",
    "refuser",
    "request_evidence",
    "s_client_with",
    "views_evidence",
]


class Outcome(Enum):
    """How a connected row's handshake ended, by the family of causes that explains it."""

    COMPLETED = "completed"
    NEGOTIATION = "negotiation"
    CLIENT_CERT = "client certificate"
    CERT_TOO_LARGE = "certificate too large"
    WEAK_KEY_EXCHANGE = "weak key exchange"
    INCOMPLETE = "incomplete"


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
# Alerts by which a server that asked for a client certificate refuses the client (the one presented, or
# the lack of one): after a CertificateRequest, none of them is about versions or ciphers.
CLIENT_CERT_ALERTS = frozenset(
    {
        "certificate_required",
        "handshake_failure",
        "bad_certificate",
        "unsupported_certificate",
        "certificate_unknown",
        "certificate_expired",
        "certificate_revoked",
        "unknown_ca",
        "access_denied",
        "decrypt_error",
    }
)
# Versions a current client refuses in part (legacy signature algorithms, SHA-1 MACs at its security level).
LEGACY_VERSIONS = frozenset({"SSLv3", TlsVersion.TLS1_0.value, TlsVersion.TLS1_1.value})
OPENSSL_CERT_LIMIT_KIB = 100  # OpenSSL's default max_cert_list for a Certificate message
_REASON = re.compile(r"\[[A-Z0-9_]+: ([A-Z0-9_]+)\]")


def outcome_of(row: Row) -> Outcome | None:
    """The family of the row's handshake outcome; None when TCP did not connect (reachability's)."""
    if not row.connected:
        return None
    hs = row.address.handshake
    failure = hs.failure
    if failure in (Failure.NONE, Failure.CERT_VERIFY):
        return Outcome.COMPLETED
    if failure is Failure.CLIENT_CERT_REQUIRED:
        return Outcome.CLIENT_CERT
    if hs.client_cert_requested:
        if failure is Failure.TLS_ALERT and hs.alert in CLIENT_CERT_ALERTS:
            return Outcome.CLIENT_CERT
        if hs.client_cert and failure in (Failure.CLOSED, Failure.RESET):
            return Outcome.CLIENT_CERT  # the certificate presented, answered by hanging up
    if failure is Failure.CERT_TOO_LARGE:
        return Outcome.CERT_TOO_LARGE
    if failure is Failure.WEAK_KEY_EXCHANGE:
        return Outcome.WEAK_KEY_EXCHANGE
    if failure in (Failure.NO_COMMON_VERSION, Failure.NO_COMMON_CIPHER):
        return Outcome.NEGOTIATION
    if failure is Failure.TLS_ALERT and hs.alert in NEGOTIATION_ALERTS:
        return Outcome.NEGOTIATION
    if failure is Failure.PROTOCOL_ERROR and hs.tls_version in LEGACY_VERSIONS:
        return Outcome.NEGOTIATION  # the server chose TLS 1.0/1.1, and the client refused what that needs
    return Outcome.INCOMPLETE


def completed_rows(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if outcome_of(r) is Outcome.COMPLETED]


def explained_by_sni(observation: Observation) -> set[tuple[str, str]]:
    """(agent, address) where a variant with another SNI setting completed, and no vantage completed
    with the probe's own SNI at that address: the name sent, not the handshake itself, decides there
    (the SNI rule's finding)."""
    main = {(r.agent, r.address.address): r.result.sni for r in observation.rows}
    completed_here = {r.address.address for r in completed_rows(observation.rows)}
    explained: set[tuple[str, str]] = set()
    for variant in observation.variants:
        for r in rows_of(variant.outcomes):
            key = (r.agent, r.address.address)
            if key not in main or main[key] == r.result.sni or key[1] in completed_here:
                continue
            if outcome_of(r) is Outcome.COMPLETED:
                explained.add(key)
    return explained


# --- where the failure lies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Failing rows sorted by where the failure lies."""

    everywhere: tuple[Row, ...] = ()  # nobody completes any handshake: the server's (or every client's)
    backend: tuple[Row, ...] = ()  # addresses nobody completes with, while the same vantages complete elsewhere
    clients: tuple[Row, ...] = ()  # others complete with the same server: the failing vantages' environment


def place(failing: Sequence[Row], completed: Sequence[Row]) -> Placement:
    if not failing:
        return Placement()
    if not completed:
        return Placement(everywhere=tuple(failing))
    completed_at = {c.address.address for c in completed}
    completing = {c.agent for c in completed}
    backend: list[Row] = []
    clients: list[Row] = []
    for r in failing:
        here = r.address.address in completed_at
        elsewhere = r.agent in completing
        (backend if not here and elsewhere else clients).append(r)
    return Placement(backend=tuple(backend), clients=tuple(clients))


def placed(
    observation: Observation,
    is_failing: Callable[[Row], bool],
    *,
    everywhere: Callable[[Observation, list[Row]], Finding],
    backend: Callable[[Observation, list[Row], list[Row]], Finding],
    clients: Callable[[Observation, list[Row], list[Row]], Finding],
    kind: Callable[[Row], str],
) -> Iterator[Finding]:
    """The one way a handshake rule tells where its failures lie: the failing rows (less those another SNI
    explains), one finding for every vantage, one for odd backends, one per kind of client failure."""
    held_back = explained_by_sni(observation)
    failing = [r for r in observation.rows if is_failing(r) and (r.agent, r.address.address) not in held_back]
    if not failing:
        return
    completed = completed_rows(observation.rows)
    placement = place(failing, completed)
    if placement.everywhere:
        yield everywhere(observation, list(placement.everywhere))
    if placement.backend:
        yield backend(observation, list(placement.backend), completed)
    by_kind: dict[str, list[Row]] = defaultdict(list)
    for r in placement.clients:
        by_kind[kind(r)].append(r)
    for rows in by_kind.values():
        yield clients(observation, rows, completed)


def backend_rows(
    failing: Sequence[Row], completed: Sequence[Row]
) -> tuple[list[Row], tuple[str, ...], tuple[str, ...], list[Row], tuple[str, ...]]:
    """For failures placed at some backends: the failing rows, their addresses and agents, the same agents'
    completed rows elsewhere, and those good addresses."""
    agents = agents_of(failing)
    working = [c for c in completed if c.agent in agents]
    return list(failing), addresses_of(failing), agents, working, addresses_of(working)


def comparison(failing: Sequence[Row], completed: Sequence[Row]) -> tuple[list[Row], str]:
    """The completing rows to hold failing vantages against (the same address when possible), and the
    caveat to add when only other addresses completed."""
    agents = {r.agent for r in failing}
    addresses = {r.address.address for r in failing}
    others = [c for c in completed if c.agent not in agents] or list(completed)
    same_address = [c for c in others if c.address.address in addresses]
    if same_address:
        return same_address, ""
    return others, " (the vantages that complete reached other addresses, so that backend may differ too)"


def python_completes(rows: Iterable[Row]) -> tuple[str, ...]:
    """Agents where Python's default context completed the handshake the openssl view failed: the server does
    complete handshakes, so a failure on every vantage is then the hosts' OpenSSL settings, not the server."""
    return tuple(
        dict.fromkeys(
            r.agent
            for r in rows
            for v in r.address.views
            if v.client is Client.PYTHON and v.failure in (Failure.NONE, Failure.CERT_VERIFY)
        )
    )


def not_the_server(rows: Sequence[Row]) -> str:
    """The sentence that replaces "the server's side" when Python's default context completes on some host."""
    agents = python_completes(rows)
    return (
        f" Python's default context completes it on {name_list(agents)}, so the server does speak TLS there: it is "
        "the OpenSSL configuration of these hosts (openssl.cnf: MinProtocol, CipherString, SECLEVEL, Groups) that "
        "fails, see client_views_differ."
    )


def agents_of(rows: Iterable[Row]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.agent for r in rows))


def addresses_of(rows: Iterable[Row]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.address.address for r in rows))


# --- facts of one handshake ------------------------------------------------------------------------


def reason_code(error: str) -> str:
    """OpenSSL's reason mnemonic in an `ssl.SSLError` text ("DH_KEY_TOO_SMALL"); "" when there is none."""
    match = _REASON.search(error)
    return match.group(1) if match else ""


def reached(row: Row) -> str:
    """How far the handshake got, as a phrase: 'before any ServerHello', 'after the ServerHello (TLSv1.2)'."""
    hs = row.address.handshake
    chose = f"{hs.tls_version or 'version unknown'}{f' {hs.cipher}' if hs.cipher else ''}"
    if row.address.chain:
        return f"after the server's certificate ({chose})"
    if hs.tls_version:
        return f"after the ServerHello ({chose})"
    return "before any ServerHello"


def negotiated(rows: Sequence[Row]) -> str:
    versions = sorted({r.address.handshake.tls_version for r in rows if r.address.handshake.tls_version})
    return " and ".join(versions) if versions else "a handshake"


def refuser(row: Row) -> Party:
    """Who ended the handshake: an alert, a close or a reset comes from the server's side."""
    hs = row.address.handshake
    if hs.failure in (Failure.TLS_ALERT, Failure.CLOSED, Failure.RESET, Failure.CLIENT_CERT_REQUIRED):
        return Party.SERVER
    return hs.refused_by


def failure_text(row: Row) -> str:
    hs = row.address.handshake
    alert = f" (alert {hs.alert})" if hs.alert else ""
    who = hs.refused_by  # as the agent said it
    by = f", refused by the {who}" if who is not Party.NONE else ""
    return f"{hs.failure}{alert}{by}: {hs.error}" if hs.error else f"{hs.failure}{alert}{by}"


# --- evidence --------------------------------------------------------------------------------------


def handshake_evidence(rows: Sequence[Row]) -> Evidence:
    return Evidence("handshake", tuple((r.where, failure_text(r)) for r in rows))


def negotiated_evidence(rows: Sequence[Row]) -> Evidence:
    return Evidence(
        "negotiated",
        tuple(
            (r.where, f"{r.address.handshake.tls_version or '?'} {r.address.handshake.cipher}".strip()) for r in rows
        ),
    )


def views_evidence(rows: Sequence[Row]) -> Evidence | None:
    """The python view where the agent reported one (it differs from the openssl view)."""
    values = []
    for r in rows:
        for view in r.address.views:
            if view.client is Client.PYTHON:
                values.append((r.where, view.detail or f"{view.failure} ({view.verdict})"))
    return Evidence("python view", tuple(values)) if values else None


def connect_evidence(rows: Sequence[Row]) -> Evidence:
    def took(r: Row) -> str:
        ms = r.address.connect_ms
        return f"ok in {ms:.1f} ms" if ms is not None else "ok"

    return Evidence("TCP connect", tuple((r.where, took(r)) for r in rows))


def request_evidence(observation: Observation) -> list[Evidence]:
    o = observation.request.options
    evidence = []
    if o.min_version or o.max_version:
        bounds = f"min {o.min_version or 'default'}, max {o.max_version or 'default'}"
        evidence.append(Evidence("requested TLS versions", (("request", bounds),)))
    if o.alpn:
        evidence.append(Evidence("offered ALPN", (("request", ", ".join(o.alpn)),)))
    if o.client_cert:
        evidence.append(Evidence("client certificate asked for", (("request", o.client_cert),)))
    return evidence


# --- reproduce -------------------------------------------------------------------------------------


def s_client_with(observation: Observation, row: Row, *extra: str, alpn: bool = True) -> str:
    """`openssl s_client` against the row's address with its SNI and the probe's ALPN offer (unless `alpn` is
    False), plus `extra` options."""
    base = s_client(row.address.address, observation.request.target.port, row.result.sni, show_certs=False)
    base = base.removesuffix(" </dev/null")
    offered = observation.request.options.alpn
    if alpn and offered:
        extra = ("-alpn", ",".join(offered), *extra)
    options = " ".join(shlex.quote(e) for e in extra)
    return f"{base} {options} </dev/null" if options else f"{base} </dev/null"


def python_handshake(observation: Observation, row: Row) -> str:
    """The handshake Python's default context makes, as a one-liner to run on the host."""
    name = json.dumps(row.result.sni or row.result.expected_name or row.address.address)
    where = json.dumps(row.address.address)
    code = (
        "import socket, ssl; "
        f"s = socket.create_connection(({where}, {observation.request.target.port}), timeout=10); "
        f"c = ssl.create_default_context().wrap_socket(s, server_hostname={name}); "
        "print(c.version(), c.cipher()[0])"
    )
    return f"python3 -c {shlex.quote(code)}"


# --- the rules -------------------------------------------------------------------------------------


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    held_back = explained_by_sni(observation)
    rows = [r for r in observation.rows if (r.agent, r.address.address) not in held_back]
    completed = completed_rows(observation.rows)
    by_outcome: dict[Outcome, list[Row]] = defaultdict(list)
    for r in rows:
        outcome = outcome_of(r)
        if outcome is not None:
            by_outcome[outcome].append(r)
    yield from _client_certificates(observation, by_outcome[Outcome.CLIENT_CERT], completed)
    yield from _asked_without_answer(observation, completed)
    yield from _too_large(observation, by_outcome[Outcome.CERT_TOO_LARGE], completed)
    yield from _weak(observation, by_outcome[Outcome.WEAK_KEY_EXCHANGE], completed)


# client certificates --------------------------------------------------------------------------------


def _ca_names(rows: Sequence[Row]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for r in rows for name in r.address.handshake.acceptable_ca_names))


def _accepts(rows: Sequence[Row]) -> str:
    names = _ca_names(rows)
    if not names:
        return "it names no CA it accepts certificates from"
    return f"it accepts certificates issued by {name_list([repr(common_name(n)) for n in names])}"


def _ended(rows: Sequence[Row]) -> str:
    alerts = sorted({r.address.handshake.alert for r in rows if r.address.handshake.alert})
    if alerts:
        return f"alert {', '.join(alerts)}"
    kinds = sorted({str(r.address.handshake.failure) for r in rows})
    return ", ".join(kinds)


def _client_cert_evidence(
    observation: Observation, rows: Sequence[Row], compared: Sequence[Row]
) -> tuple[Evidence, ...]:
    evidence = [
        handshake_evidence(rows),
        Evidence(
            "client certificate presented", tuple((r.where, r.address.handshake.client_cert or "none") for r in rows)
        ),
        Evidence(
            "acceptable CA names",
            tuple((r.where, "; ".join(r.address.handshake.acceptable_ca_names) or "none listed") for r in rows),
        ),
    ]
    if compared:
        evidence.append(negotiated_evidence(compared))
        asked = tuple(
            (
                c.where,
                f"asked: {'yes' if c.address.handshake.client_cert_requested else 'no'}, presented: "
                f"{c.address.handshake.client_cert or 'none'}",
            )
            for c in compared
        )
        evidence.append(Evidence("client certificate where it completes", asked))
    evidence += request_evidence(observation)
    return tuple(evidence)


def _client_cert_reproduce(observation: Observation, row: Row) -> tuple[str, ...]:
    return (
        f"{s_client_with(observation, row)} 2>&1 | grep -A8 'Acceptable client certificate CA names'",
        s_client_with(observation, row, "-cert", "client.pem", "-key", "client.key"),
    )


_CONFIGURE = (
    "Give the agents a client certificate from one of the accepted CAs (`tlsfleet agent serve --client-cert "
    "NAME=CERT,KEY`) and probe with `tlsfleet probe --client-cert NAME`, so the rest of the handshake can be "
    "judged; clients on these hosts need their own certificate configured too (curl --cert/--key, "
    "requests' cert=, a Java keystore)."
)


def _client_certificates(observation: Observation, rows: list[Row], completed: list[Row]) -> Iterator[Finding]:
    presented = [r for r in rows if r.address.handshake.client_cert]
    missing = [r for r in rows if not r.address.handshake.client_cert]
    if missing:
        yield from _missing_certificate(observation, missing, completed)
    if presented:
        yield _refused_certificate(observation, presented, completed)


def _missing_certificate(observation: Observation, rows: list[Row], completed: list[Row]) -> Iterator[Finding]:
    target = observation.target
    placement = place(rows, completed)
    if placement.everywhere:
        failing = list(placement.everywhere)
        agents = agents_of(failing)
        everyone = "every vantage" if len(agents) > 1 else agents[0]
        yield Finding(
            cause=Cause.CLIENT_CERT_REQUIRED,
            severity=Severity.WARNING,
            summary=(
                f"{target} requires a client certificate (mutual TLS) and {everyone} presented none: the server "
                f"ends the handshake with {_ended(failing)} {reached(failing[0])}; {_accepts(failing)}. That is the "
                "server's policy, not a fault; without a certificate the probe cannot see the rest."
            ),
            agents=agents,
            addresses=addresses_of(failing),
            evidence=_client_cert_evidence(observation, failing, []),
            fix=_CONFIGURE,
            reproduce=_client_cert_reproduce(observation, failing[0]),
        )
    if placement.backend:
        failing, addresses, agents, working, good = backend_rows(placement.backend, completed)
        yield Finding(
            cause=Cause.CLIENT_CERT_REQUIRED,
            severity=Severity.WARNING,
            summary=(
                f"{', '.join(addresses)} behind {observation.request.target.host} {agree('require', len(addresses))} "
                f"a client certificate from {name_list(agents)} ({_ended(failing)}; {_accepts(failing)}), while "
                f"{', '.join(good)} {agree('complete', len(good))} the handshake without one: the backends of the "
                "pool are configured differently."
            ),
            agents=agents,
            addresses=addresses,
            evidence=_client_cert_evidence(observation, failing, working),
            fix=(
                f"Give {', '.join(addresses)} the same client-certificate policy as {', '.join(good)} (both require "
                "one, or neither), or take the odd backend out of the pool. " + _CONFIGURE
            ),
            reproduce=_client_cert_reproduce(observation, failing[0]),
        )
    if placement.clients:
        failing = list(placement.clients)
        agents = agents_of(failing)
        compared, caveat = comparison(failing, completed)
        others = agents_of(compared)
        with_cert = [c for c in compared if c.address.handshake.client_cert]
        if with_cert:
            why = (
                f"{name_list(agents_of(with_cert))} {agree('present', agents_of(with_cert))} a client certificate "
                f"({name_list(sorted({c.address.handshake.client_cert for c in with_cert}))}) and "
                f"{agree('complete', agents_of(with_cert))} it"
            )
        else:
            why = (
                f"{name_list(others)} ({count(len(others), 'vantage')}) {agree('complete', others)} it without being "
                "asked for one: the server asks some clients only (by source address, or through another listener "
                "or proxy)"
            )
        yield Finding(
            cause=Cause.CLIENT_CERT_REQUIRED,
            severity=Severity.WARNING,
            summary=(
                f"{target} demands a client certificate from {name_list(agents)}, which presented none "
                f"({_ended(failing)}; {_accepts(failing)}), while {why}{caveat}."
            ),
            agents=agents,
            addresses=addresses_of(failing),
            evidence=_client_cert_evidence(observation, failing, compared),
            fix=_CONFIGURE,
            reproduce=_client_cert_reproduce(observation, failing[0]),
        )


def _asked_without_answer(observation: Observation, completed: list[Row]) -> Iterator[Finding]:
    """A note where the server asked for a client certificate, got none, and let the handshake finish anyway.

    TLS says nothing more there: nginx's `ssl_verify_client on` finishes every such handshake and refuses each
    request above it (HTTP 400), just as `optional` finishes it and serves; no TLS client tells the two apart."""
    rows = [
        r
        for r in completed
        if r.address.handshake.failure is Failure.NONE
        and r.address.handshake.client_cert_requested
        and not r.address.handshake.client_cert
    ]
    if not rows:
        return
    agents = agents_of(rows)
    everyone = "every vantage" if len(agents) > 1 and len(agents) == len(agents_of(completed)) else name_list(agents)
    starttls = observation.request.options.starttls
    yield Finding(
        cause=Cause.CLIENT_CERT_REQUIRED,
        severity=Severity.INFO,
        summary=(
            f"{observation.target} asks for a client certificate (mutual TLS; {_accepts(rows)}) and lets the "
            f"handshake finish without one from {everyone}: TLS succeeds, but the server may still refuse every "
            f"request that comes without a certificate above TLS, {_ABOVE_TLS.get(starttls, _ABOVE_TLS_HTTP)}. "
            "The handshake alone cannot tell which."
        ),
        agents=agents,
        addresses=addresses_of(rows),
        evidence=_client_cert_evidence(observation, rows, []),
        fix=(
            "Send a request without a certificate (the reproduce commands do, with curl): if the server refuses it, "
            "clients of this service need a certificate from one of the accepted CAs. " + _CONFIGURE
        ),
        reproduce=tuple(
            c
            for c in (*_client_cert_reproduce(observation, rows[0]), _curl_without_certificate(observation, rows[0]))
            if c
        ),
    )


# What refuses a certificate-less client above TLS, by the protocol spoken before it (Debian's servers, seen:
# Postfix answers EHLO over TLS with 421, Dovecot lets the handshake finish and refuses the login).
_ABOVE_TLS_HTTP = (
    "as nginx does with `ssl_verify_client on` (HTTP 400, 'No required SSL certificate was sent'); with "
    "`optional` it serves them"
)
_ABOVE_TLS = {
    Starttls.SMTP: (
        "as Postfix does with `smtpd_tls_req_ccert = yes` (its answer to EHLO after TLS is '421 4.7.1 Error: No "
        "client certificate'); with `smtpd_tls_ask_ccert` alone it goes on"
    ),
    Starttls.IMAP: (
        "as Dovecot does with `auth_ssl_require_client_cert = yes` (it refuses the login); with "
        "`ssl_verify_client_cert` alone it serves them"
    ),
    Starttls.POP3: (
        "as Dovecot does with `auth_ssl_require_client_cert = yes` (it refuses the login); with "
        "`ssl_verify_client_cert` alone it serves them"
    ),
}
# curl's URL schemes for the protocols it speaks STARTTLS in (--ssl-reqd); others get no curl command.
_CURL_SCHEMES = {Starttls.NONE: "https", Starttls.SMTP: "smtp", Starttls.IMAP: "imap", Starttls.POP3: "pop3"}


def _curl_without_certificate(observation: Observation, row: Row) -> str:
    port = observation.request.target.port
    name = row.result.sni or row.result.expected_name or row.address.address
    host = f"[{name}]" if ":" in name else name
    address = f"[{row.address.address}]" if ":" in row.address.address else row.address.address
    resolve = shlex.quote(f"{name}:{port}:{address}")
    scheme = _CURL_SCHEMES.get(observation.request.options.starttls, "")
    if scheme == "https":
        url = shlex.quote(f"https://{host}:{port}/")
        return f"curl -sS -o /dev/null -w '%{{http_code}}\\n' --resolve {resolve} {url}"
    if scheme:
        # -v shows the server's answer after TLS (Postfix's 421); SMTP needs a command that sends no mail.
        command = " -X NOOP" if scheme == "smtp" else ""
        return f"curl -sS -v --ssl-reqd{command} --resolve {resolve} {shlex.quote(f'{scheme}://{host}:{port}/')}"
    return ""


def _refused_certificate(observation: Observation, rows: list[Row], completed: list[Row]) -> Finding:
    agents = agents_of(rows)
    names = sorted({r.address.handshake.client_cert for r in rows})
    compared, _caveat = comparison(rows, completed)
    accepted = [c for c in compared if c.address.handshake.client_cert]
    others = ""
    if accepted:
        others = (
            f"; the server accepts {name_list(sorted({c.address.handshake.client_cert for c in accepted}))} from "
            f"{name_list(agents_of(accepted))}"
        )
    certificate = f"client certificate{'s' if len(names) > 1 else ''} {name_list([repr(n) for n in names])}"
    return Finding(
        cause=Cause.CLIENT_CERT_REQUIRED,
        severity=Severity.CRITICAL,
        summary=(
            f"{observation.target} refuses the {certificate} that {name_list(agents)} "
            f"{agree('present', agents)} ({_ended(rows)}, {reached(rows[0])}); {_accepts(rows)}{others}."
        ),
        agents=agents,
        addresses=addresses_of(rows),
        evidence=_client_cert_evidence(observation, rows, accepted),
        fix=(
            "Present a client certificate issued by one of the CAs the server accepts, or add its issuer to the "
            "server's client CA list (nginx ssl_client_certificate, Apache SSLCACertificateFile, openssl s_server "
            "-CAfile); check that it is within its validity, carries clientAuth in its extended key usage, and that "
            "the agent's --client-cert file holds the intermediates it needs."
        ),
        reproduce=_client_cert_reproduce(observation, rows[0]),
    )


# certificate too large ------------------------------------------------------------------------------


def _served_size(observation: Observation, addresses: Iterable[str]) -> int | None:
    """Bytes of the certificates some vantage got from these addresses, when any got them."""
    wanted = set(addresses)
    sizes = [
        sum(len(der) for der in r.address.chain) for r in observation.rows_with_chain if r.address.address in wanted
    ]
    return max(sizes) if sizes else None


def _size_text(size: int | None) -> str:
    if size is None:
        return "its size is unknown: the client stops reading at its limit"
    return f"the certificates come to about {size / 1024:.0f} KiB"


_SMALLER = (
    "Serve a smaller certificate message: fewer names per certificate (split a long SAN list over several "
    "certificates chosen by SNI), no root or cross-signed extras in the chain file, no bulky extensions; measure "
    "it on the server with `openssl crl2pkcs7 -nocrl -certfile CHAIN.pem | openssl pkcs7 -outform DER | wc -c`. "
    f"OpenSSL-based clients (curl, Python, most C programs) stop at {OPENSSL_CERT_LIMIT_KIB} KiB and can raise "
    "that only in code (SSL_CTX_set_max_cert_list)."
)


def _too_large_reproduce(observation: Observation, row: Row) -> tuple[str, ...]:
    return (f"{s_client_with(observation, row)} 2>&1 | grep -i -m1 'excessive message size'",)


def _too_large(observation: Observation, rows: list[Row], completed: list[Row]) -> Iterator[Finding]:
    target = observation.target
    placement = place(rows, completed)
    evidence_extra = request_evidence(observation)
    if placement.everywhere:
        failing = list(placement.everywhere)
        size = _served_size(observation, addresses_of(failing))
        yield Finding(
            cause=Cause.CERTIFICATE_TOO_LARGE,
            severity=Severity.CRITICAL,
            summary=(
                f"The certificate message {target} sends is larger than OpenSSL clients accept "
                f"({OPENSSL_CERT_LIMIT_KIB} KiB): every vantage's client refuses it {reached(failing[0])} as an "
                f"excessive message size ({_size_text(size)}), so no OpenSSL-based client can connect. The server "
                "must send a smaller one."
            ),
            agents=agents_of(failing),
            addresses=addresses_of(failing),
            evidence=(handshake_evidence(failing), *evidence_extra),
            fix=_SMALLER,
            reproduce=_too_large_reproduce(observation, failing[0]),
        )
    if placement.backend:
        failing, addresses, agents, working, good = backend_rows(placement.backend, completed)
        yield Finding(
            cause=Cause.CERTIFICATE_TOO_LARGE,
            severity=Severity.CRITICAL,
            summary=(
                f"{', '.join(addresses)} behind {observation.request.target.host} {agree('send', len(addresses))} a "
                f"certificate message larger than {name_list(agents)} accept ({OPENSSL_CERT_LIMIT_KIB} KiB for "
                f"OpenSSL), while {', '.join(good)} {agree('serve', len(good))} one they accept "
                f"({_size_text(_served_size(observation, good))}): that backend's certificate differs."
            ),
            agents=agents,
            addresses=addresses,
            evidence=(handshake_evidence(failing), negotiated_evidence(working), *evidence_extra),
            fix=f"Give {', '.join(addresses)} the certificate the rest of the pool serves. {_SMALLER}",
            reproduce=_too_large_reproduce(observation, failing[0]),
        )
    if placement.clients:
        failing = list(placement.clients)
        agents = agents_of(failing)
        compared, caveat = comparison(failing, completed)
        others = agents_of(compared)
        yield Finding(
            cause=Cause.CERTIFICATE_TOO_LARGE,
            severity=Severity.CRITICAL,
            summary=(
                f"The clients on {name_list(agents)} refuse {target}'s certificate message as too large "
                f"{reached(failing[0])}, while {name_list(others)} ({count(len(others), 'vantage')}) "
                f"{agree('accept', others)} it ({_size_text(_served_size(observation, addresses_of(compared)))})"
                f"{caveat}: the TLS library on {name_list(agents)} has a lower limit."
            ),
            agents=agents,
            addresses=addresses_of(failing),
            evidence=(handshake_evidence(failing), negotiated_evidence(compared), *evidence_extra),
            fix=(
                f"Compare the TLS libraries of {name_list(agents)} and of the vantages that connect with `tlsfleet "
                f"agents` (OpenSSL build and version). {_SMALLER}"
            ),
            reproduce=_too_large_reproduce(observation, failing[0]),
        )


# weak key exchange ----------------------------------------------------------------------------------

_WEAK_WHAT = {
    "DH_KEY_TOO_SMALL": (
        "the server's Diffie-Hellman group is smaller than the client's security level allows (OpenSSL wants "
        "2048 bits or more at level 2, 1024 at level 1)"
    ),
    "WRONG_CURVE": "the server chose an elliptic-curve group the client does not allow",
    "UNSUPPORTED_ELLIPTIC_CURVE": "the server chose an elliptic-curve group the client does not allow",
    "EE_KEY_TOO_SMALL": "the server certificate's key is smaller than the client's security level allows",
    "CA_KEY_TOO_SMALL": "a CA key in the served chain is smaller than the client's security level allows",
    "CA_MD_TOO_WEAK": "a CA certificate in the served chain is signed with a digest the client refuses (SHA-1, MD5)",
}
_WEAK_DEFAULT = "the server's key-exchange parameters are below the client's security level"


def _weak_what(rows: Sequence[Row]) -> str:
    reasons = list(dict.fromkeys(reason_code(r.address.handshake.error) for r in rows))
    return "; ".join(dict.fromkeys(_WEAK_WHAT.get(reason, _WEAK_DEFAULT) for reason in reasons))


def _weak_fix(rows: Sequence[Row]) -> str:
    reasons = {reason_code(r.address.handshake.error) for r in rows}
    parts = []
    if "DH_KEY_TOO_SMALL" in reasons or not reasons & set(_WEAK_WHAT):
        parts.append(
            "Give the server a Diffie-Hellman group of 2048 bits or more (`openssl dhparam -out dh.pem 2048`, or "
            "the RFC 7919 ffdhe2048 group), or better, prefer ECDHE suites and drop DHE."
        )
    if reasons & {"WRONG_CURVE", "UNSUPPORTED_ELLIPTIC_CURVE"}:
        parts.append("Offer X25519 or P-256 on the server (its ECDH groups / curves setting).")
    if reasons & {"EE_KEY_TOO_SMALL", "CA_KEY_TOO_SMALL", "CA_MD_TOO_WEAK"}:
        parts.append("Reissue the certificate (or its CA) with an RSA key of 2048 bits or more (or ECDSA) and SHA-256.")
    return " ".join(parts)


def _weak_reproduce(observation: Observation, row: Row) -> tuple[str, ...]:
    version = row.address.handshake.tls_version
    bounds = ("-max_protocol", version) if version and version != TlsVersion.TLS1_3.value else ()
    return (
        s_client_with(observation, row, *bounds),
        # At security level 0 the handshake goes through, and OpenSSL names the group and its size.
        f"{s_client_with(observation, row, '-cipher', 'DEFAULT@SECLEVEL=0', *bounds)} 2>/dev/null | "
        "grep -E 'Server Temp Key|Peer signing|Server public key'",
    )


def _weak(observation: Observation, rows: list[Row], completed: list[Row]) -> Iterator[Finding]:
    target = observation.target
    placement = place(rows, completed)
    extra = request_evidence(observation)
    if placement.everywhere:
        failing = list(placement.everywhere)
        yield Finding(
            cause=Cause.WEAK_KEY_EXCHANGE,
            severity=Severity.CRITICAL,
            summary=(
                f"Every vantage's client refuses {target}'s key exchange as too weak {reached(failing[0])}: "
                f"{_weak_what(failing)}."
                + (
                    not_the_server(failing)
                    if python_completes(failing)
                    else " The server's parameters are the problem, not the clients."
                )
            ),
            agents=agents_of(failing),
            addresses=addresses_of(failing),
            evidence=(handshake_evidence(failing), *extra),
            fix=_weak_fix(failing),
            reproduce=_weak_reproduce(observation, failing[0]),
        )
    if placement.backend:
        failing, addresses, agents, working, good = backend_rows(placement.backend, completed)
        yield Finding(
            cause=Cause.WEAK_KEY_EXCHANGE,
            severity=Severity.CRITICAL,
            summary=(
                f"{name_list(agents)} refuse the key exchange of {', '.join(addresses)} behind "
                f"{observation.request.target.host} as too weak ({_weak_what(failing)}), and complete it with "
                f"{', '.join(good)} ({negotiated(working)}): that backend's TLS parameters differ from the pool's."
            ),
            agents=agents,
            addresses=addresses,
            evidence=(handshake_evidence(failing), negotiated_evidence(working), *extra),
            fix=f"Give {', '.join(addresses)} the TLS configuration of {', '.join(good)}. {_weak_fix(failing)}",
            reproduce=_weak_reproduce(observation, failing[0]),
        )
    if placement.clients:
        failing = list(placement.clients)
        agents = agents_of(failing)
        compared, caveat = comparison(failing, completed)
        others = agents_of(compared)
        yield Finding(
            cause=Cause.WEAK_KEY_EXCHANGE,
            severity=Severity.CRITICAL,
            summary=(
                f"The clients on {name_list(agents)} refuse {target}'s key exchange as too weak "
                f"{reached(failing[0])} ({_weak_what(failing)}), while {name_list(others)} "
                f"({count(len(others), 'vantage')}) {agree('accept', others)} it ({negotiated(compared)}){caveat}: "
                f"the security level on {name_list(agents)} is stricter."
            ),
            agents=agents,
            addresses=addresses_of(failing),
            evidence=(handshake_evidence(failing), negotiated_evidence(compared), *extra),
            fix=(
                f"Compare SECLEVEL and groups in openssl.cnf (or crypto-policies) on {name_list(agents)} with the "
                "vantages that connect (`tlsfleet agents`); strengthening the server beats weakening the clients: "
                + _weak_fix(failing)
            ),
            reproduce=_weak_reproduce(observation, failing[0]),
        )
