"""Client views that differ on one host: OpenSSL-based clients (curl, `openssl s_client`, most C programs)
and Python's default context (`ssl.create_default_context()`) reach different conclusions about the same
server, from the same host.

An agent reports the python view only where it differs from the openssl view (`AddressResult.views`), so
every row with a python view is a difference. What decides:

- one client completes and the other fails (a handshake failure or a rejected chain): warning, a client
  on that host fails now; e.g. OpenSSL clients connect with static RSA key exchange that Python's default
  cipher list leaves out, or with TLS 1.0 that Python's minimum of TLS 1.2 refuses;
- both complete, differently (another version, another verdict that is still a pass): info;
- both fail: no finding here; the handshake or chain finding explains it, with the python view in its
  evidence;
- one client rejects the chain on policy grounds (weak digest or key, invalid CA, ...: a verify code the
  policy module words): no finding here; that module's finding names the violation, the certificate and
  which client refuses.

When every vantage that reached those addresses shows the same difference, it is the server's
configuration that leaves one kind of client out everywhere; otherwise it is the hosts named (their
OpenSSL configuration against Python's defaults), and the server is not blamed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from ...agent.model import Client, ClientView, Failure, TlsVersion, Verdict
from ..observation import DiagnosisSettings, Observation, Row
from .handshake import LEGACY_VERSIONS, addresses_of, agents_of, python_handshake, reason_code, s_client_with
from .model import Cause, Evidence, Finding, Severity
from .policy import is_policy_refusal
from .wording import name_list

__all__ = ["findings", "is_static_rsa"]

OPENSSL_CLIENTS = "OpenSSL clients (curl, openssl s_client)"
PYTHON_CLIENTS = "Python's default context"
_CIPHER_ALERTS = frozenset({"handshake_failure", "insufficient_security"})
_VERSION_ALERTS = frozenset({"protocol_version", "inappropriate_fallback"})
_FORWARD_SECRET = ("ECDHE", "DHE", "EDH", "ECDH", "ADH", "AECDH", "PSK", "SRP", "DH-")


def is_static_rsa(cipher: str) -> bool:
    """A TLS <= 1.2 suite with RSA key transport (OpenSSL names such as AES128-GCM-SHA256, DES-CBC3-SHA)."""
    if not cipher or cipher.startswith("TLS_"):
        return False
    return not any(part in cipher for part in _FORWARD_SECRET)


@dataclass(frozen=True)
class _Difference:
    """How the python and openssl views of one row differ, and why."""

    kind: str  # "python fails", "openssl fails", "both complete"
    why: str  # what the failing (or differing) client concludes, and why

    @property
    def severity(self) -> Severity:
        return Severity.INFO if self.kind == "both complete" else Severity.WARNING


def _views(row: Row) -> tuple[ClientView | None, ClientView | None]:
    by_client = {v.client: v for v in row.address.views}
    return by_client.get(Client.OPENSSL), by_client.get(Client.PYTHON)


def _fails(view: ClientView) -> bool:
    return view.failure is not Failure.NONE or view.verdict is not Verdict.OK


def _negotiated(view: ClientView, row: Row) -> tuple[str, str]:
    hs = row.address.handshake
    return view.tls_version or hs.tls_version, view.cipher or hs.cipher


def _refusal(failing: ClientView, working: ClientView, row: Row, failing_label: str) -> str:
    """Why `failing` fails where `working` completes, from the facts (never message text); `failing_label` names
    what decides for the failing client ("Python's default context", "the host's OpenSSL configuration")."""
    version, cipher = _negotiated(working, row)
    failure = failing.failure
    alert = _alert(failing) if failure is Failure.TLS_ALERT else ""
    if failure is Failure.NO_COMMON_CIPHER or (failure is Failure.TLS_ALERT and alert in _CIPHER_ALERTS):
        if is_static_rsa(cipher):
            return (
                f"no common cipher (the server offers only static RSA key exchange, {cipher}, which {failing_label} "
                "leaves out)"
            )
        if cipher.endswith("-SHA"):
            return f"no common cipher (the server offers {cipher}, with a SHA-1 MAC, which {failing_label} leaves out)"
        return f"no common cipher (the server chose {cipher} for the client that connects)"
    if failure is Failure.NO_COMMON_VERSION or (failure is Failure.TLS_ALERT and alert in _VERSION_ALERTS):
        if version in LEGACY_VERSIONS:
            return f"no common version (the server speaks {version}; {failing_label} requires TLS 1.2 or later)"
        if failing.client is Client.OPENSSL and version == TlsVersion.TLS1_2.value:
            # Python's context sets its own minimum (TLS 1.2) and keeps the configured maximum: only the
            # host's minimum can leave out what Python negotiates.
            return (
                f"no common version (the server speaks up to {version}, which {failing_label} leaves out: its "
                "MinProtocol, or a Protocol line, is above it)"
            )
        return f"no common version (the client that connects negotiates {version})"
    if failure is Failure.WEAK_KEY_EXCHANGE:
        return "it refuses the server's key exchange as too weak (its security level is stricter)"
    if failure in (Failure.NONE, Failure.CERT_VERIFY) and failing.verdict is not Verdict.OK:
        code = f" ({failing.verify_code})" if failing.verify_code else ""
        return f"it rejects the chain: {failing.verdict}{code}"
    return f"{failure}{f' (alert {alert})' if alert else ''}"


def _alert(view: ClientView) -> str:
    """The alert a view's failure names; the view keeps no alert field, so its OpenSSL reason says it."""
    reason = reason_code(view.error)
    for prefix in ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_"):
        if reason.startswith(prefix):
            return reason.removeprefix(prefix).lower()
    return ""


def _policy_refusal(view: ClientView) -> bool:
    return view.failure in (Failure.NONE, Failure.CERT_VERIFY) and is_policy_refusal(view.verdict, view.verify_code)


def _difference(row: Row) -> _Difference | None:
    openssl, python = _views(row)
    if openssl is None or python is None:
        return None
    if _policy_refusal(openssl) != _policy_refusal(python):
        return None  # the policy finding explains it
    if not _fails(openssl) and python.verdict is Verdict.HOSTNAME_MISMATCH:
        # A partial-label wildcard ("f*.example.com", in a SAN or the CN) that OpenSSL's own check takes and Python's
        # (and curl's) does not: the certificate, not the host's settings; the names finding says so.
        return None
    if not _fails(openssl) and _fails(python):
        why = _refusal(python, openssl, row, PYTHON_CLIENTS)
        return _Difference("python fails", why)
    if _fails(openssl) and not _fails(python):
        why = _refusal(openssl, python, row, "the host's OpenSSL configuration")
        return _Difference("openssl fails", why)
    if not _fails(openssl) and not _fails(python):
        version, _ = _negotiated(openssl, row)
        return _Difference(
            "both complete", f"both complete, OpenSSL clients with {version or '?'}, Python with {python.tls_version}"
        )
    return None


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    groups: dict[_Difference, list[Row]] = defaultdict(list)
    for row in observation.rows:
        if not row.connected:
            continue
        difference = _difference(row)
        if difference is not None:
            groups[difference].append(row)
    for difference, rows in groups.items():
        yield _finding(observation, difference, rows)


def _everywhere(observation: Observation, rows: list[Row]) -> bool:
    """Every vantage that reached these addresses shows the difference (and there is more than one)."""
    addresses = set(addresses_of(rows))
    reached = [r for r in observation.rows if r.connected and r.address.address in addresses]
    return len(agents_of(reached)) > 1 and {(r.agent, r.address.address) for r in reached} <= {
        (r.agent, r.address.address) for r in rows
    }


def _finding(observation: Observation, difference: _Difference, rows: list[Row]) -> Finding:
    agents = agents_of(rows)
    target = observation.target
    everywhere = _everywhere(observation, rows)
    where = f"every vantage ({name_list(agents)})" if everywhere else name_list(agents)
    first = rows[0]
    openssl, python = _views(first)
    assert openssl is not None and python is not None
    if difference.kind == "python fails":
        version, cipher = _negotiated(openssl, first)
        said = (
            f"On {where}, {OPENSSL_CLIENTS} connect to {target} ({version} {cipher}".rstrip()
            + f") but {PYTHON_CLIENTS} refuses: {difference.why}"
        )
    elif difference.kind == "openssl fails":
        version, cipher = _negotiated(python, first)
        said = (
            f"On {where}, {PYTHON_CLIENTS} connects to {target} ({version} {cipher}".rstrip()
            + f") but {OPENSSL_CLIENTS} fail: {difference.why}"
        )
    else:
        said = f"On {where}, {OPENSSL_CLIENTS} and {PYTHON_CLIENTS} reach {target} differently: {difference.why}"
    scope = (
        "; it is the same on every vantage, so the server's configuration leaves these clients out everywhere."
        if everywhere
        else "; the other vantages' clients agree, so it is these hosts' client settings, not the server."
    )
    return Finding(
        cause=Cause.CLIENT_VIEWS_DIFFER,
        severity=difference.severity,
        summary=said + scope,
        agents=agents,
        addresses=addresses_of(rows),
        evidence=_evidence(rows),
        fix=_fix(difference, everywhere, agents),
        reproduce=(s_client_with(observation, first), python_handshake(observation, first)),
    )


def _view_text(view: ClientView, row: Row) -> str:
    version, cipher = _negotiated(view, row) if not _fails(view) or view.tls_version else ("", "")
    outcome = "ok" if not _fails(view) else str(view.failure if view.failure is not Failure.NONE else view.verdict)
    negotiated = f" {version} {cipher}".rstrip() if version else ""
    detail = f": {view.detail}" if view.detail else (f": {view.error}" if view.error and _fails(view) else "")
    return f"{outcome}{negotiated}{detail}"


def _evidence(rows: list[Row]) -> tuple[Evidence, ...]:
    openssl_values, python_values = [], []
    for r in rows:
        openssl, python = _views(r)
        if openssl is not None:
            openssl_values.append((r.where, _view_text(openssl, r)))
        if python is not None:
            python_values.append((r.where, _view_text(python, r)))
    return (Evidence("openssl view", tuple(openssl_values)), Evidence("python view", tuple(python_values)))


def _fix(difference: _Difference, everywhere: bool, agents: tuple[str, ...]) -> str:
    why = difference.why
    if "static RSA" in why:
        server = (
            "Offer ECDHE suites on the server (ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384) and TLS 1.3 "
            "besides static RSA key exchange, which has no forward secrecy."
        )
        client = "A Python service could widen its own cipher list (ctx.set_ciphers('DEFAULT')), keeping that weakness."
    elif "MinProtocol" in why:
        server = f"Enable {TlsVersion.TLS1_3.value} on the server."
        client = (
            "Lower MinProtocol to TLSv1.2 in the OpenSSL configuration in force (OPENSSL_CONF or openssl.cnf, its "
            "system_default section; `tlsfleet agents` lists it), or drop the Protocol line that excludes TLS 1.2."
        )
    elif "no common version" in why:
        server = f"Enable TLS 1.2 and {TlsVersion.TLS1_3.value} on the server."
        client = (
            "Python's default context refuses versions below TLS 1.2 (ctx.minimum_version); lowering it keeps the "
            "server's weakness."
        )
    elif "rejects the chain" in why:
        server = "Serve a chain both clients accept (keys of 2048 bits or more, SHA-256 signatures, the intermediates)."
        client = "Compare the trust stores and security levels the two clients use on that host (`tlsfleet agents`)."
    else:
        server = "Configure the server with current versions and cipher suites that both clients accept."
        client = (
            "Compare the host's OpenSSL configuration (openssl.cnf: MinProtocol, CipherString, SECLEVEL) with "
            "Python's defaults (`tlsfleet agents` lists the policy in force)."
        )
    if difference.kind == "both complete":
        return f"Nothing fails; {client}"
    if everywhere:
        return f"{server} {client}"
    return f"On {name_list(agents)}: {client} {server}"
