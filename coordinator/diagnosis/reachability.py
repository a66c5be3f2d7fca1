"""Network facts, not TLS verdicts: names that do not resolve, ports that refuse or time out, handshakes that
never complete after TCP connected, and vantages that did not answer at all.

A handshake that never completes (`handshake.Outcome.INCOMPLETE`: a timeout, a reset, a close, an answer
that is not TLS, a protocol error or an alert that names no version, cipher or certificate problem) is
never "no findings". Each says what happened and in which phase (TCP connected; no ServerHello, or closed
right after the ClientHello, or stalled after the ServerHello or the certificate):

- nobody completes a handshake: the server's (or whatever answers on its address for everyone), critical;
- an address no vantage completes with, while the same vantages complete elsewhere: that backend, critical;
- otherwise the failing vantages' environment (a middlebox, a firewall, a proxy, their client's policy),
  critical, and the server is not blamed: others complete with it.

Handshakes that a variant with another SNI setting completes are SNI's finding and held back here.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from collections.abc import Iterator

from ...agent.endpoints import join_host_port
from ...agent.model import Failure, Starttls
from ...agent.probe.starttls import REFUSED_STARTTLS, infer_starttls
from ..observation import DiagnosisSettings, Observation, Row
from .handshake import (
    Outcome,
    addresses_of,
    agents_of,
    comparison,
    connect_evidence,
    handshake_evidence,
    negotiated,
    negotiated_evidence,
    not_the_server,
    outcome_of,
    placed,
    python_completes,
    reached,
    reason_code,
    request_evidence,
    s_client_with,
    views_evidence,
)
from .model import Cause, Evidence, Finding, Severity
from .policy_denied import is_denied
from .reproduce import proxied_authority, s_client, s_client_via
from .wording import MAX_NAMED, agree, capped, count, name_list


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    yield from _dns_failures(observation)
    yield from _connect_failures(observation)
    yield from _incomplete_handshakes(observation)
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


_STARTTLS = frozenset({Failure.STARTTLS_UNSUPPORTED, Failure.STARTTLS_BAD_REPLY})
# The dialogue was still going at the deadline: a slow or held-back server, not one without TLS.
_STALLED = frozenset({Failure.STARTTLS_TIMEOUT})
# Where each protocol's usual server turns STARTTLS on (Debian's Postfix, Dovecot, slapd, ...).
_TLS_ON = {
    Starttls.SMTP: (
        "Postfix `smtpd_tls_security_level = may` and `smtpd_tls_chain_files`: its EHLO then lists STARTTLS, "
        "unless `smtpd_discard_ehlo_keywords` names it"
    ),
    Starttls.IMAP: "Dovecot `ssl = yes` with `ssl_cert` and `ssl_key`",
    Starttls.POP3: "Dovecot `ssl = yes` with `ssl_cert` and `ssl_key`",
    Starttls.LDAP: "slapd `olcTLSCertificateFile` and `olcTLSCertificateKeyFile`, TLSCertificateFile in slapd.conf",
    Starttls.POSTGRES: "PostgreSQL `ssl = on`",
    Starttls.MYSQL: "MySQL or MariaDB `ssl_cert` and `ssl_key`",
    Starttls.FTP: "vsftpd `ssl_enable=YES`, ProFTPD `TLSEngine on`",
    Starttls.XMPP: "a certificate for the domain, without which the server lists no starttls",
}
# Where each protocol's usual server is told its certificate and key: a server with TLS on whose TLS did not start
# refuses STARTTLS when asked (Postfix: 454 4.7.0 TLS not available due to local problem).
_TLS_FILES = {
    Starttls.SMTP: "Postfix `smtpd_tls_chain_files`, or `smtpd_tls_cert_file` and `smtpd_tls_key_file`",
    Starttls.IMAP: "Dovecot `ssl_cert` and `ssl_key`",
    Starttls.POP3: "Dovecot `ssl_cert` and `ssl_key`",
    Starttls.LDAP: "slapd `olcTLSCertificateFile` and `olcTLSCertificateKeyFile`, TLSCertificateFile in slapd.conf",
    Starttls.POSTGRES: "PostgreSQL `ssl = on` with `ssl_cert_file` and `ssl_key_file`",
    Starttls.MYSQL: "MySQL or MariaDB `ssl_cert` and `ssl_key`",
    Starttls.FTP: "vsftpd `rsa_cert_file` and `rsa_private_key_file`, ProFTPD `TLSRSACertificateFile`",
    Starttls.XMPP: "the certificate and key for the domain",
}
# Clients that say how the server answered the request to start TLS ("STARTTLS denied, code 454"), where
# s_client sends its ClientHello anyway and reports the server's plaintext answer as a wrong TLS version.
_CURL_SCHEMES = {Starttls.SMTP: "smtp", Starttls.IMAP: "imap", Starttls.POP3: "pop3", Starttls.FTP: "ftp"}
# The server answered and ended the session before STARTTLS could be asked: a refusal of these hosts.
_TURNED_AWAY = frozenset({Failure.STARTTLS_REFUSED})
_PROXY = frozenset({Failure.PROXY_REFUSED, Failure.PROXY_ERROR})


def _connect_failures(observation: Observation) -> Iterator[Finding]:
    """One finding per way the road to the ClientHello broke: the network (no TCP connection), the STARTTLS
    dialogue (the server answered, TLS was not offered or not understood), the server turning the hosts away
    before it (an error greeting), the HTTPS proxy (CONNECT refused or not answered). Each says what to look
    at; an agent's policy refusal is policy_denied's."""
    failed = [r for r in observation.rows if not r.connected and not is_denied(r)]
    if not failed:
        return
    everyone = not any(r.connected for r in observation.rows)
    families: dict[str, list[Row]] = defaultdict(list)
    for row in failed:
        failure = row.address.connect_failure
        family = (
            "turned away"
            if failure in _TURNED_AWAY
            else "starttls refused"
            if failure is Failure.STARTTLS_UNSUPPORTED and row.address.connect_error.startswith(REFUSED_STARTTLS)
            else "starttls"
            if failure in _STARTTLS
            else "stalled"
            if failure in _STALLED
            else "proxy"
            if failure in _PROXY
            else "network"
        )
        families[family].append(row)
    for family, rows in families.items():
        yield _connect_finding(observation, family, rows, everyone)


def _spoken(observation: Observation, failed: list[Row]) -> Starttls:
    """The protocol the failing agents spoke before TLS: the one asked for, or the one the port implied."""
    spoken = {r.result.starttls for r in failed} - {Starttls.NONE}
    if len(spoken) == 1:
        return spoken.pop()
    asked = observation.request.options.starttls
    return asked if asked is not Starttls.NONE else infer_starttls(observation.request.target.port)


def _named(protocol: Starttls) -> str:
    return protocol.value if protocol is not Starttls.NONE else "the one its port implies"


def _connect_finding(observation: Observation, family: str, failed: list[Row], everyone: bool) -> Finding:
    agents = tuple(dict.fromkeys(r.agent for r in failed))
    addresses = tuple(dict.fromkeys(r.address.address for r in failed))
    kinds = ", ".join(sorted({str(r.address.connect_failure) for r in failed}))
    where = "from every vantage" if everyone else f"from {name_list(agents)}"
    at = ", ".join(addresses)
    target = observation.target
    if family == "starttls":
        spoken = _spoken(observation, failed)
        summary = (
            f"{target} answers {where} at {at}, but TLS does not start inside its protocol ({kinds}): the "
            "server was reached; what it says before TLS is not a STARTTLS it offers and completes."
        )
        on = f"{_TLS_ON[spoken]}; " if spoken in _TLS_ON else ""
        fix = (
            f"Turn TLS on in the service ({on}the server's words are in the evidence), or probe the port with the "
            f"protocol it speaks (`--starttls`; this probe spoke {_named(spoken)}), or its TLS port."
        )
    elif family == "starttls refused":
        spoken = _spoken(observation, failed)
        said = capped(list(dict.fromkeys(_refusal(r) for r in failed)), 2, sep="; ")
        summary = (
            f"{target} refused STARTTLS {where} at {at}: {said}. The server was reached and said no when asked to "
            "start TLS, so TLS never started: this is not a protocol or version mismatch, and no certificate was "
            "seen."
        )
        files = f"{_TLS_FILES[spoken]}: " if spoken in _TLS_FILES else ""
        fix = (
            f"Turn TLS on in the service, or repair it where it is on ({files}the files it names must exist, be "
            "readable by the user the server runs as, and hold a key that fits the certificate): a server refuses "
            "STARTTLS when its TLS is off or it cannot load its certificate or key (Postfix answers `454 4.7.0 TLS "
            "not available due to local problem` when its TLS engine did not start; Dovecot accepts STARTTLS, then "
            "says `TLS initialization failed` and hangs up), and its log names the cause; then probe again. This "
            "probe spoke "
            f"{_named(spoken)}."
        )
    elif family == "stalled":
        spoken = _spoken(observation, failed)
        summary = (
            f"{target} answers {where} at {at}, but the {_named(spoken)} dialogue before TLS was still unfinished "
            f"at the probe's deadline ({kinds}): the server was reached and is slow or holds its answer back "
            "(what it sent last is in the evidence); no TLS verdict was reached."
        )
        fix = (
            "Probe again with more time (`--timeout`; the dialogue gets what the connection and the resolution "
            "leave, and the handshake does not need). A Postfix postscreen sends `220-` and holds the rest of "
            "its greeting back for `postscreen_greet_wait` (6 s by default; the default 10 s `--timeout` waits "
            "it out) and then lets a client it has seen pass at once. A server silent from the first byte may be "
            "waiting for a ClientHello (SMTPS 465, IMAPS 993, POP3S 995, LDAPS 636: probe with `--starttls "
            "none`), or is overloaded."
        )
    elif family == "turned away":
        summary = (
            f"{target} at {at} turns {'every vantage' if everyone else name_list(agents)} away before STARTTLS can "
            f"be asked ({kinds}): the server answered and ended the session with its own words, in the evidence; "
            "TLS itself was never tried."
        )
        fix = (
            "Read the server's words: let these hosts in where it says they are not allowed (a MySQL account for "
            "this host, the SMTP server's client access or postscreen lists, the XMPP domain it serves: `--sni` "
            "names another), or wait out the connection limit it names; then probe again."
        )
    elif family == "proxy":
        return _proxy_finding(observation, failed, everyone)
    elif (apart := _answered_apart(observation, failed)) is not None:
        host = observation.request.target.host
        each = "; ".join(
            f"{agent} resolves {host} to {capped(list(dict.fromkeys(r.address.address for r in mine)))} "
            f"({', '.join(sorted({str(r.address.connect_failure) for r in mine}))})"
            for agent in agents[:MAX_NAMED]
            if (mine := [r for r in failed if r.agent == agent])
        )
        more = f"; and {count(len(agents) - MAX_NAMED, 'more vantage')}" if len(agents) > MAX_NAMED else ""
        summary = (
            f"{target} cannot be reached {where} ({kinds}) at {at}: a network fact, not a TLS verdict. {each}{more}; "
            f"the other vantages resolve it to {capped(apart)} and connect there, so the answer "
            f"{name_list(agents)} {'gets' if len(agents) == 1 else 'get'} is stale or wrong."
        )
        fix = (
            f"Find what answers {host} with {at} on {name_list(agents)}: an /etc/hosts entry left from a "
            "migration, a split-horizon zone or a resolver cache; make it give the addresses the others use "
            f"({capped(apart)}), or make the service listen at {at}."
        )
    else:
        summary = f"{target} cannot be reached {where} ({kinds}) at {at}: a network fact, not a TLS verdict."
        fix = "Check that the service listens on that port and that firewalls or security groups let these hosts in."
    first = failed[0]
    return Finding(
        cause=Cause.UNREACHABLE,
        severity=Severity.CRITICAL if everyone else Severity.WARNING,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=(
            Evidence(
                "connect",
                tuple((r.where, f"{r.address.connect_failure}: {r.address.connect_error}") for r in failed),
            ),
        ),
        fix=fix,
        reproduce=(
            *_curl_first(family, observation, first),
            s_client(first.address.address, observation.request.target.port, first.result.sni),
        ),
    )


_MAX_REFUSAL = 200  # the agent quotes at most 80 characters of the reply; a recording may come from anywhere


def _refusal(row: Row) -> str:
    """The server's refusal as the agent quoted it, kept short and printable for a summary."""
    words = row.address.connect_error.removeprefix(REFUSED_STARTTLS).removeprefix(": ")[:_MAX_REFUSAL]
    return "".join(c if c.isprintable() else "?" for c in words)


def _curl_first(family: str, observation: Observation, first: Row) -> tuple[str, ...]:
    """For a refused STARTTLS in a protocol curl speaks, the curl command that shows the refusal as such."""
    scheme = _CURL_SCHEMES.get(_spoken(observation, [first]))
    if family != "starttls refused" or scheme is None or first.result.proxy:
        return ()
    url = f"{scheme}://{join_host_port(first.address.address, observation.request.target.port)}/"
    return (f"curl -v --ssl-reqd {shlex.quote(url)}",)


# --- handshakes that never complete ------------------------------------------------------------------

_MAX_HANDSHAKE = "1 MiB"  # the agent's cap on handshake data (agent.probe.handshake.MAX_HANDSHAKE_BYTES)
# OpenSSL's reason when a ServerHello lacks renegotiation_info and the client's options do not allow that.
_NO_SECURE_RENEGOTIATION = "UNSAFE_LEGACY_RENEGOTIATION_DISABLED"
_BAD_EXTENSION = "BAD_EXTENSION"


_PROXY_MEANING = {
    403: "its policy refuses that destination",
    407: "it wants credentials the host does not send",
}


def _proxy_finding(observation: Observation, failed: list[Row], everyone: bool) -> Finding:
    """The HTTPS proxy did not open the tunnel: which proxy, asked for what, answered how; the fix follows the
    answer (its policy, its credentials), not the server, which the proxy never reached."""
    authority = proxied_authority(observation)
    by_answer: dict[str, list[Row]] = defaultdict(list)
    for r in failed:
        status = r.address.proxy_status  # 0 from an agent without the field, or a proxy that gave no status
        by_answer[str(status) if status else str(r.address.connect_failure)].append(r)
    parts, fixes = [], []
    for answer, rows in by_answer.items():
        names = list(dict.fromkeys(r.agent for r in rows))
        agents, one = name_list(names), len(names) == 1
        proxies = list(dict.fromkeys(r.result.proxy for r in rows if r.result.proxy))
        meaning = _PROXY_MEANING.get(int(answer)) if answer.isdigit() else None
        said = f"answers {answer}" + (f": {meaning}" if meaning else "") if answer.isdigit() else f"fails ({answer})"
        parts.append(f"for {agents}, {'its' if one else 'their'} proxy {capped(proxies) or '(unnamed)'} {said}")
        if answer == "403":
            fixes.append(
                f"allow {authority} in the policy of the proxy that {agents} {'goes' if one else 'go'} through, or "
                f"exempt the name with NO_PROXY there if {'that host' if one else 'those hosts'} may reach it directly"
            )
        elif answer == "407":
            fixes.append(
                f"give {agents} the proxy credentials {'its' if one else 'their'} applications use (user:password "
                "in HTTPS_PROXY)"
            )
        else:
            fixes.append(
                f"for {agents}, the proxy's answer says why (in the evidence): allow this host and port in the "
                "proxy's policy, give the host the proxy credentials its applications use, or exempt the target "
                "with NO_PROXY"
            )
    scope = "from every vantage" if everyone else "from " + name_list(list(dict.fromkeys(r.agent for r in failed)))
    summary = (
        f"{observation.target} cannot be reached through the HTTPS proxy {scope}: the proxy did not open the "
        f"tunnel to {authority} ({'; '.join(parts)}); the server was never asked, so this says nothing of its TLS."
    )
    fix = "; ".join(fixes)
    reproduce = tuple(
        s_client_via(rows[0].result.proxy, observation, rows[0].result.sni)
        for rows in by_answer.values()
        if rows[0].result.proxy
    )
    return Finding(
        cause=Cause.UNREACHABLE,
        severity=Severity.CRITICAL if everyone else Severity.WARNING,
        summary=summary,
        agents=tuple(dict.fromkeys(r.agent for r in failed)),
        addresses=tuple(dict.fromkeys(r.address.address for r in failed)),
        evidence=(
            Evidence(
                "connect",
                tuple((r.where, f"{r.address.connect_failure}: {r.address.connect_error}") for r in failed),
            ),
        ),
        fix=fix[0].upper() + fix[1:] + ".",
        reproduce=reproduce,
    )


def _answered_apart(observation: Observation, failed: list[Row]) -> list[str] | None:
    """The addresses the other vantages connect to, when the failing vantages connect nowhere and were
    sent only to addresses that no connecting vantage's resolver returned (a stale pin, another zone); else
    None (a dead backend inside a shared pool is the same answer for everyone)."""
    if observation.request.options.pin_address:
        return None
    failing_agents = {r.agent for r in failed}
    if any(r.connected for r in observation.rows if r.agent in failing_agents):
        return None
    connecting = [r for r in observation.rows if r.connected]
    given = {a for r in connecting for a in r.result.resolution.addresses}
    if not connecting or given & {r.address.address for r in failed}:
        return None
    return list(dict.fromkeys(r.address.address for r in connecting))


def _stage(row: Row) -> str:
    """'hello' (nothing from the server yet), 'server hello' or 'certificate': how far the handshake got."""
    if row.address.chain:
        return "certificate"
    return "server hello" if row.address.handshake.tls_version else "hello"


def _seconds(row: Row) -> str:
    return f"{row.address.handshake.duration_ms / 1000:.1f} s"


def _kind(row: Row) -> str:
    """What happened, short: the key findings are grouped by."""
    hs = row.address.handshake
    stage = _stage(row)
    after = {
        "hello": "after the ClientHello",
        "server hello": "after the ServerHello",
        "certificate": "after the certificate",
    }
    match hs.failure:
        case Failure.HANDSHAKE_TIMEOUT:
            return "handshake timeout, no ServerHello" if stage == "hello" else f"handshake timeout {after[stage]}"
        case Failure.CLOSED:
            return f"closed {after[stage]}"
        case Failure.RESET:
            return f"reset {after[stage]}"
        case Failure.NOT_TLS:
            return "not TLS"
        case Failure.TLS_ALERT:
            return f"alert {hs.alert or 'unnamed'}"
        case Failure.TOO_LARGE:
            return f"more than {_MAX_HANDSHAKE} of handshake data"
        case Failure.INTERNAL:
            return "agent internal error"
    if _unoffered_alpn(row):
        return f"ALPN {hs.alpn} selected, not offered"
    reason = reason_code(hs.error)
    return f"protocol error{f' {reason}' if reason else ''}"


def _phase(row: Row) -> str:
    """What happened, and in which phase, as a sentence fragment for a person."""
    hs = row.address.handshake
    stage = _stage(row)
    connect = (
        f"TCP connects ({row.address.connect_ms:.1f} ms)" if row.address.connect_ms is not None else "TCP connects"
    )
    version = hs.tls_version or "?"
    match hs.failure:
        case Failure.HANDSHAKE_TIMEOUT:
            if stage == "hello":
                return f"{connect}, then no ServerHello within {_seconds(row)} of the ClientHello"
            if stage == "server hello":
                return f"{connect}, the ServerHello ({version}) arrives, then nothing more within {_seconds(row)}"
            return f"{connect}, the certificate arrives ({version}), then the handshake stalls for {_seconds(row)}"
        case Failure.CLOSED | Failure.RESET:
            # Said of the connection, not the server: a middlebox closes and resets as well.
            verb = "closed" if hs.failure is Failure.CLOSED else "reset"
            if stage == "hello":
                return f"{connect}, then the connection is {verb} right after the ClientHello, before any ServerHello"
            if stage == "server hello":
                return f"{connect}, then the connection is {verb} after the ServerHello ({version}), mid-handshake"
            return f"{connect}, then the connection is {verb} after the server's certificate ({version}), mid-handshake"
        case Failure.NOT_TLS:
            reason = reason_code(hs.error)
            answer = plain_answer(hs.error)
            said = f": {answer!r}" if answer else ""
            return f"{connect}, but the answer to the ClientHello is not TLS{f' ({reason})' if reason else ''}{said}"
        case Failure.TLS_ALERT:
            return f"{connect}, then the server ends the handshake {reached(row)} with alert {hs.alert or 'unnamed'}"
        case Failure.TOO_LARGE:
            return f"{connect}, then the server sends more than {_MAX_HANDSHAKE} {reached(row)} without finishing"
        case Failure.INTERNAL:
            return f"{connect}, then the agent's probe fails internally ({hs.error or 'no detail'})"
    if _unoffered_alpn(row):
        return (
            f"{connect}, then the client refuses the handshake {reached(row)}: the server selected ALPN protocol "
            f"{hs.alpn!r}, which the client did not offer"
        )
    reason = reason_code(hs.error) or hs.error or "no detail"
    return f"{connect}, then the handshake breaks off {reached(row)} with a protocol error ({reason})"


def _unoffered_alpn(row: Row) -> bool:
    """The client refused the server's ALPN choice: a protocol it did not offer (OpenSSL's BAD_EXTENSION, with the
    protocol the server named; the agent says so in the error)."""
    hs = row.address.handshake
    return hs.failure is Failure.PROTOCOL_ERROR and bool(hs.alpn) and reason_code(hs.error) == _BAD_EXTENSION


_PLAIN_ANSWER = re.compile(r"; the server answered in plain text: '(.*)'$")


def plain_answer(error: str) -> str:
    """The first line a peer sent instead of TLS, as the agent quotes it in its error; "" when it sent none."""
    match = _PLAIN_ANSWER.search(error)
    return match.group(1) if match else ""


def _family(row: Row) -> str:
    """The kind of explanation that fits: 'silent', 'stalled', 'hung up', 'aborted', 'not tls', ..."""
    hs = row.address.handshake
    stage = _stage(row)
    if hs.failure is Failure.HANDSHAKE_TIMEOUT:
        return "silent" if stage == "hello" else "stalled"
    if hs.failure in (Failure.CLOSED, Failure.RESET):
        if stage != "hello":
            return "aborted"
        return "hung up" if hs.failure is Failure.CLOSED else "reset"
    if hs.failure is Failure.NOT_TLS:
        return "not tls, http" if plain_answer(hs.error).startswith("HTTP/") else "not tls"
    if hs.failure is Failure.TLS_ALERT:
        if hs.alert == "unrecognized_name" and row.result.sni is None:
            return "alert unrecognized_name, no SNI"
        return f"alert {hs.alert}"
    if hs.failure is Failure.INTERNAL:
        return "internal"
    if reason_code(hs.error) == _NO_SECURE_RENEGOTIATION:
        return "no secure renegotiation"
    if reason_code(hs.error) == "BAD_SIGNATURE":
        return "bad signature"
    if _unoffered_alpn(row):
        return "unoffered alpn"
    return "protocol"


_EVERYWHERE = {
    "silent": (
        "the server (or the load balancer in front of it) accepts TCP connections but never answers the "
        "ClientHello: a hung or overloaded TLS listener, an exhausted worker pool, or a port that waits for the "
        "client to speak another protocol first"
    ),
    "stalled": (
        "the server starts the handshake and stalls mid-way: an overloaded or hung TLS listener, or a path that "
        "drops large packets (an MTU black hole: the certificate flight does not get through)"
    ),
    "hung up": (
        "the server hangs up on the ClientHello: it accepts nothing the vantages offer (often a server that speaks "
        "only old TLS versions such as TLS 1.0, or one that does not serve the name sent in SNI), or a proxy or "
        "load balancer in front of it has no backend for the connection"
    ),
    "reset": (
        "the connection is reset on the ClientHello: a firewall or IPS in front of the server that cuts TLS to "
        "this port, a load balancer without a healthy backend, a server that accepts nothing the vantages offer "
        "(only old TLS versions, another SNI name), or one that expects a PROXY protocol header before TLS (nginx "
        "`listen ... proxy_protocol`, HAProxy `accept-proxy`) and is reached directly, not through its load balancer"
    ),
    "aborted": "the server aborts mid-handshake: its TLS stack fails with its certificate, key or settings",
    "not tls": (
        "the port does not speak TLS: plain HTTP, SSH, or a protocol that needs STARTTLS first (SMTP, IMAP, "
        "PostgreSQL, LDAP)"
    ),
    "not tls, http": (
        "the port speaks plain HTTP, not TLS: it answers the ClientHello with an HTTP error, as a listener whose "
        "TLS was never enabled does (HAProxy `bind` without `ssl crt`, nginx `listen` without `ssl`)"
    ),
    "protocol": "the server sends TLS that OpenSSL clients reject",
    "bad signature": (
        "the server's handshake signature does not verify with the key in its certificate: it signs with a private "
        "key that is not the certificate's (a renewal that replaced one and not the other, or the wrong key of a "
        "dual RSA/ECDSA setup), or its TLS stack or HSM signs wrongly"
    ),
    "unoffered alpn": (
        "the server selects an application protocol in ALPN that the client did not offer, which every client must "
        "refuse (RFC 7301): clients whose ALPN offer lacks that protocol cannot connect"
    ),
    "no secure renegotiation": (
        "the server does not support secure renegotiation (RFC 5746: its ServerHello has no renegotiation_info), "
        "which OpenSSL 3 clients refuse unless their configuration allows it (Options = UnsafeLegacyServerConnect)"
    ),
    "internal": "the agents' probes fail internally: this says nothing about the server yet",
    "alert unrecognized_name": (
        "the server does not serve the name sent in SNI: it holds no certificate for it and refuses rather than "
        "answer with a default one (HAProxy `strict-sni`)"
    ),
    "alert unrecognized_name, no SNI": (
        "no SNI was sent, and the server refuses clients that name no host (it serves virtual hosts by SNI only, "
        "as HAProxy does with `strict-sni` whatever certificates it holds)"
    ),
    "alert internal_error": (
        "the server fails internally: its certificate, key, an HSM or a backend, or TLS versions it allows that its "
        "own TLS library can no longer sign for (an OpenSSL 3 server limited to TLS 1.0 or 1.1, such as nginx with "
        "`ssl_protocols TLSv1 TLSv1.1` or HAProxy with `ssl-max-ver TLSv1.1`, answers internal_error to every "
        "client)"
    ),
    "alert access_denied": "the server refuses these clients (an allow list or access policy)",
    "alert bad_record_mac": (
        "the server cannot decrypt what the client sent: with RSA key exchange, a private key that is not the "
        "certificate's (the client encrypts to the certificate's key); otherwise something on the path alters records"
    ),
}

_FIX_EVERYWHERE = {
    "silent": (
        "Check the TLS listener on the server or load balancer: is the process up, overloaded (accept queue, "
        "worker pool), or waiting for another protocol on this port? If it should speak STARTTLS, probe it that "
        "way."
    ),
    "stalled": (
        "Check the TLS listener's load and logs; if the ServerHello arrives and the certificate does not, look for "
        "an MTU black hole on the path (ICMP 'fragmentation needed' blocked: clamp the TCP MSS or lower the MTU)."
    ),
    "hung up": (
        "Check the server's TLS configuration and logs for these handshakes: which versions and names it serves "
        "(the reproduce commands try an older version and no SNI), and any firewall, IPS or load balancer in front."
    ),
    "reset": (
        "Find what sends the reset: a firewall, IPS or load balancer in front of the server (its logs, a packet "
        "capture on the server side), then the server's TLS configuration (the reproduce commands try an older "
        "version and no SNI). A server log of a broken PROXY protocol header (nginx: 'broken header ... while "
        "reading PROXY protocol'; HAProxy: 'Received something which does not look like a PROXY protocol header') "
        "means the port wants its load balancer in front: probe through it, or listen without proxy_protocol "
        "(HAProxy: a `bind` without `accept-proxy`) for direct clients."
    ),
    "aborted": "Check the server's TLS logs: the certificate and key it loads, its cipher and group settings.",
    "not tls": (
        "Probe the port that speaks TLS, or speak the port's protocol first (`openssl s_client -starttls smtp`, "
        "`-starttls postgres`, ...)."
    ),
    "not tls, http": (
        "If clients reach this port with https://, enable TLS on its listener (HAProxy `bind ... ssl crt FILE`, "
        "nginx `listen ... ssl`) and reload; if it is meant to serve plain HTTP, probe the port that serves TLS."
    ),
    "protocol": "Check the server's TLS implementation and version against current OpenSSL clients.",
    "bad signature": (
        "Install the key that belongs to the served certificate: on the server, `openssl x509 -noout -pubkey -in "
        "CERT | openssl sha256` and `openssl pkey -pubout -in KEY | openssl sha256` must print the same digest; "
        "then reload the server."
    ),
    "unoffered alpn": (
        "Make the server choose among the protocols the client offers, and answer no_application_protocol (or "
        "leave ALPN out) when none suits: a listener set to one protocol for every client (h2 or http/1.1 forced, "
        "as some proxies and gRPC servers do) selects it regardless."
    ),
    "no secure renegotiation": (
        "Upgrade or reconfigure the server's TLS stack to support RFC 5746 (every maintained TLS library does). "
        "Only as a stopgap: `Options = UnsafeLegacyServerConnect` in the clients' OpenSSL configuration "
        "(system_default section) lets them through, without protection against renegotiation attacks."
    ),
    "internal": "Check the agents' logs and versions; probe again after upgrading them.",
    "alert unrecognized_name": (
        "Serve the name on the server (its virtual host; HAProxy: a certificate whose names cover it in the bind "
        "line's `crt` directory, or a `crt-list` line for it), or probe the name it serves."
    ),
    "alert unrecognized_name, no SNI": (
        "Send SNI: probe without --no-sni (or with --sni NAME), and make the clients that send none (old Java, "
        "health checks and load-balancer probes by address) send it; or let the server answer clients without "
        "SNI: give it a default certificate, and where HAProxy refuses them with `strict-sni`, a default "
        "certificate is not enough: drop `strict-sni` from the bind line."
    ),
    "alert internal_error": (
        "Check the server's logs for the handshake error: its certificate and key, HSM or backend; 'no suitable "
        "signature algorithm' there means its TLS versions are too old for its OpenSSL: allow TLS 1.2 and 1.3 "
        "(nginx `ssl_protocols TLSv1.2 TLSv1.3;`, HAProxy `ssl-min-ver TLSv1.2` with no `ssl-max-ver` below "
        "TLSv1.2). HAProxy logs no reason, only 'SSL handshake failure' (and answers internal_error even to a "
        "TLS 1.2 ClientHello): read its bind line's `ssl-max-ver` and the global `ssl-default-bind-options`."
    ),
    "alert access_denied": "Check the server's client access policy (allow lists by address or identity).",
    "alert bad_record_mac": (
        "Check that the server's key belongs to its certificate (`openssl x509 -noout -pubkey -in CERT | openssl "
        "sha256` and `openssl pkey -pubout -in KEY | openssl sha256` print the same digest), then any middlebox "
        "on the path that rewrites TLS."
    ),
}


def _reproduce_incomplete(observation: Observation, row: Row) -> tuple[str, ...]:
    port = observation.request.target.port
    family = _family(row)
    commands = [f"nc -vz -w 5 {shlex.quote(row.address.address)} {port}"]
    commands.append(f"timeout 15 {s_client_with(observation, row, '-msg')}")
    if family in ("hung up", "reset", "aborted"):
        commands.append(s_client_with(observation, row, "-max_protocol", "TLSv1.2"))
        commands.append(s_client_with(observation, row, "-max_protocol", "TLSv1.1", "-cipher", "DEFAULT@SECLEVEL=0"))
        if row.result.sni:
            commands.append(s_client(row.address.address, port, None, show_certs=False))
    if family == "alert unrecognized_name":
        # Without SNI a server that has a default certificate answers; one with HAProxy's strict-sni refuses again.
        commands.append(s_client(row.address.address, port, None, show_certs=False))
    if family.startswith("not tls"):
        host = shlex.quote(row.address.address)
        commands.append(
            f"printf 'HEAD / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {host} {port} | head -c 300 | od -c | head"
        )
    return tuple(commands)


def _incomplete_evidence(observation: Observation, failing: list[Row], compared: list[Row]) -> tuple[Evidence, ...]:
    evidence = [
        Evidence("phase", tuple((r.where, _phase(r)) for r in failing)),
        handshake_evidence(failing),
        connect_evidence(failing),
    ]
    if compared:
        evidence.append(negotiated_evidence(compared))
    views = views_evidence(failing)
    if views is not None:
        evidence.append(views)
    evidence += request_evidence(observation)
    return tuple(evidence)


def _incomplete_handshakes(observation: Observation) -> Iterator[Finding]:
    yield from placed(
        observation,
        lambda r: outcome_of(r) is Outcome.INCOMPLETE,
        everywhere=_incomplete_everywhere,
        backend=_incomplete_backend,
        clients=_incomplete_clients,
        kind=_kind,
    )


def _how(failing: list[Row]) -> str:
    by_kind: dict[str, list[str]] = defaultdict(list)
    for r in failing:
        by_kind[_phase_brief(r)].append(r.agent)
    if len(by_kind) == 1:
        agents = next(iter(by_kind.values()))
        scope = "every vantage" if len(set(agents)) > 1 else name_list(agents)
        return f"{next(iter(by_kind))}, on {scope}"
    return "; ".join(f"{kind} on {name_list(agents)}" for kind, agents in by_kind.items())


def _phase_brief(row: Row) -> str:
    """The phase without the connect time (which differs per row), for summaries."""
    text = _phase(row)
    if text.startswith("TCP connects ("):
        text = "TCP connects" + text[text.index(")") + 1 :]
    return text


def _incomplete_everywhere(observation: Observation, failing: list[Row]) -> Finding:
    families = list(dict.fromkeys(_family(r) for r in failing))
    why = "; or ".join(_EVERYWHERE.get(f, f"the server refuses every vantage's handshake ({f})") for f in families)
    fixes = " ".join(
        dict.fromkeys(
            _FIX_EVERYWHERE.get(f, "Check the server's TLS logs for why it sends that alert.") for f in families
        )
    )
    return Finding(
        cause=Cause.HANDSHAKE_INCOMPLETE,
        severity=Severity.CRITICAL,
        summary=(
            f"No TLS handshake with {observation.target} completes ({_how(failing)}): {why}."
            + (
                not_the_server(failing)
                if python_completes(failing)
                else " It happens to every vantage, so it is the server's side (or whatever answers on its address), "
                "not the clients'."
            )
        ),
        agents=agents_of(failing),
        addresses=addresses_of(failing),
        evidence=_incomplete_evidence(observation, failing, []),
        fix=fixes,
        reproduce=_reproduce_incomplete(observation, failing[0]),
    )


def _incomplete_backend(observation: Observation, failing: list[Row], completed: list[Row]) -> Finding:
    addresses = addresses_of(failing)
    agents = agents_of(failing)
    working = [c for c in completed if c.agent in agents]
    good = addresses_of(working)
    kinds = ", ".join(dict.fromkeys(_kind(r) for r in failing))
    return Finding(
        cause=Cause.HANDSHAKE_INCOMPLETE,
        severity=Severity.CRITICAL,
        summary=(
            f"{', '.join(addresses)} behind {observation.request.target.host} never {agree('complete', len(addresses))}"
            f" a TLS handshake with {name_list(agents)} ({kinds}; {_phase_brief(failing[0])}), which complete it with "
            f"{', '.join(good)} ({negotiated(working)}): that backend is hung, misconfigured or not speaking TLS."
        ),
        agents=agents,
        addresses=addresses,
        evidence=_incomplete_evidence(observation, failing, working),
        fix=(
            f"Check the TLS listener on {', '.join(addresses)} (process, load, configuration, the port it serves) "
            f"against {', '.join(good)}, or take {'it' if len(addresses) == 1 else 'them'} out of the pool."
        ),
        reproduce=_reproduce_incomplete(observation, failing[0]),
    )


def _incomplete_clients(observation: Observation, failing: list[Row], completed: list[Row]) -> Finding:
    agents = agents_of(failing)
    compared, caveat = comparison(failing, completed)
    others = agents_of(compared)
    if {_family(r) for r in failing} == {"no secure renegotiation"}:
        fix = (
            f"{_FIX_EVERYWHERE['no secure renegotiation']} {name_list(others)} {agree('get', others)} through: an "
            "older OpenSSL there, or that option."
        )
    else:
        fix = (
            f"Compare the path and TLS settings of {name_list(agents)} with those of {name_list(others)}: proxy "
            "variables (HTTPS_PROXY), egress firewalls and TLS-inspecting middleboxes between them and the server, "
            "OpenSSL version and policy (`tlsfleet agents`); run the reproduce commands on both and compare where "
            "the handshake stops."
        )
    return Finding(
        cause=Cause.HANDSHAKE_INCOMPLETE,
        severity=Severity.CRITICAL,
        summary=(
            f"{name_list(agents)} cannot complete a TLS handshake with {observation.target} "
            f"({_phase_brief(failing[0])}) while {name_list(others)} ({count(len(others), 'vantage')}) "
            f"{agree('complete', others)} it ({negotiated(compared)}){caveat}: something in the environment of "
            f"{name_list(agents)} breaks TLS there — a middlebox, firewall or proxy on their path that lets TCP "
            "through, or their client's TLS policy (what their ClientHello offers) — not the server."
        ),
        agents=agents,
        addresses=addresses_of(failing),
        evidence=_incomplete_evidence(observation, failing, compared),
        fix=fix,
        reproduce=_reproduce_incomplete(observation, failing[0]),
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
