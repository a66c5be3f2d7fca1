"""Trust that differs between hosts (PRIVATE_CA_NOT_TRUSTED) or between stores on one host
(RUNTIME_STORE_DIFFERS), for the very same served chain.

A host "trusts" a chain when its native client (or, when the native verdict says nothing, a system store)
found a path to a certificate it holds, whatever failed afterwards (time, name): those failures would
fail everywhere and belong to other rules. A host "fails on trust" when the verdict is one of the trust
failures (unknown issuer, lone leaf, untrusted root, self-signed). Only those two kinds are compared.

PRIVATE_CA_NOT_TRUSTED needs both kinds of host for one identical served chain. When every host fails,
the chain itself is the problem (the chain module's untrusted or incomplete chain); when the chain lacks
an intermediate (the chain module's `shape_of` says MISSING_ISSUER), the hosts that verify hold that
intermediate, and serving it is the fix: this rule holds back. The root is named from a trusting store's
verified path. Whether it is private is told by certifi (Mozilla's roots, as Node and most browsers
ship): a certifi store that trusts the chain anywhere makes the root public (the failing hosts' bundles
are out of date); certifi failing on trust everywhere it exists makes it private.

RUNTIME_STORE_DIFFERS looks at one host at a time: the native client (or the system store) trusts, and
a runtime's store on the same host fails on trust. NODE_EXTRA_CA_CERTS only adds to Node's built-in
(Mozilla) roots, so its failure counts only when certifi shows the root is not a Mozilla one; with no
certifi verdict anywhere it is not claimed. certifi's failure speaks for Python requests unless the host
sets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE to a store that trusts (requests then uses that instead).
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ...agent.model import StoreVerdict, TrustStore, Verdict
from ..observation import TRUST_FAILURES, DiagnosisSettings, Observation, Row
from .chain_shape import Shape, known_certificates, shape_of
from .model import Cause, Evidence, Finding, Severity
from .reproduce import save_chain, verify_at
from .wording import count, name_list

__all__ = ["RUNTIMES", "findings", "is_system_store"]

PATH_FOUND = frozenset(Verdict) - TRUST_FAILURES - {Verdict.NO_CHAIN, Verdict.OTHER}
_DEFAULT_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Which clients use a store, as the sentence names them.
RUNTIMES: dict[str, str] = {
    "certifi": "Python requests (certifi)",
    "requests_ca_bundle": "Python requests (REQUESTS_CA_BUNDLE)",
    "curl_ca_bundle": "curl (CURL_CA_BUNDLE)",
    "node_extra_ca_certs": "Node.js (NODE_EXTRA_CA_CERTS)",
    "java": "Java (the system cacerts)",
    "java_home": "Java under JAVA_HOME (its cacerts)",
}


def is_system_store(name: str) -> bool:
    """Stores the host's default OpenSSL context reads (the native verdict's own stores)."""
    return name in ("system", "system_dir", "ssl_cert_file", "ssl_cert_dir") or name.startswith("system:")


def _runtime(store: str) -> str:
    if store in RUNTIMES:
        return RUNTIMES[store]
    if store.startswith("extra:"):
        return f"clients configured with the bundle '{store.removeprefix('extra:')}'"
    return f"clients using the '{store}' store"


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    yield from _private_ca(observation, settings)
    yield from _runtime_differs(observation, settings)


# --- shared facts ---------------------------------------------------------------------------------


def _system(row: Row) -> list[StoreVerdict]:
    return [s for s in row.address.stores if is_system_store(s.store)]


def _host_trusts(row: Row) -> bool | None:
    """True: the host's default clients found a path; False: they fail on trust; None: cannot tell."""
    native = row.address.native.verdict
    if native in PATH_FOUND:
        return True
    if native in TRUST_FAILURES:
        return False
    system = [s.at_reference_time for s in _system(row)]
    if any(v in PATH_FOUND for v in system):
        return True
    if any(v in TRUST_FAILURES for v in system):
        return False
    return None


def _root_of(rows: Iterable[Row], stores: Iterable[StoreVerdict]) -> tuple[str, str]:
    """The root the trusting stores verified to: (name, fingerprint); the name is its subject when it was
    served, else the issuer of the certificate below it."""
    anchors: Counter[tuple[str, ...]] = Counter(s.verified_path for s in stores if s.verified_path)
    served = {c.sha256: c for r in rows for c in r.certificates()}
    if anchors:
        path = anchors.most_common(1)[0][0]
        anchor = path[-1]
        if anchor in served:
            return served[anchor].subject, anchor
        below = next((served[fp] for fp in reversed(path[:-1]) if fp in served), None)
        if below is not None:
            return below.issuer, anchor
    shape = shape_of(next(iter(rows)).certificates(), ())
    if shape is None:
        return "an unreadable root", ""
    return (shape.top.subject if shape.top.is_self_issued else shape.top.issuer), ""


def _trust_store(row: Row, name: str) -> TrustStore | None:
    return next((t for t in row.result.trust_stores if t.name == name), None)


def _describe_store(store: TrustStore) -> str:
    text = f"{store.name} {store.path}: {count(store.root_count, 'root')}, sha256 {store.fingerprint[:12]}"
    return f"{text} (error: {store.error})" if store.error else text


def _native_store(row: Row) -> TrustStore | None:
    """The store the native client reads: SSL_CERT_FILE when set, else the system bundle."""
    return _trust_store(row, "ssl_cert_file") or _trust_store(row, "system")


def _certifi_public(rows: Iterable[Row]) -> bool | None:
    """Whether certifi (Mozilla's roots) trusts this chain: True, False, or None when no host has a certifi of
    its own. A certifi that is the host's bundle (Debian's and Fedora's python3-certifi) says nothing about
    Mozilla's list, so it does not count."""
    verdicts = [
        s.at_reference_time for r in rows if _certifi_is_mozillas(r) for s in r.address.stores if s.store == "certifi"
    ]
    if any(v in PATH_FOUND for v in verdicts):
        return True
    if any(v in TRUST_FAILURES for v in verdicts):
        return False
    return None


def _certifi_is_mozillas(row: Row) -> bool:
    identities = {s.name: s.fingerprint for s in row.result.trust_stores}
    certifi = identities.get("certifi")
    host_bundles = {identities.get("system"), identities.get("ssl_cert_file")}
    return bool(certifi) and certifi not in host_bundles


def _agents(rows: Iterable[Row]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.agent for r in rows))


def _others(n: int) -> str:
    return "the other vantage trusts it" if n == 1 else f"the other {n} vantages trust it"


def _cn(dn: str) -> str:
    """The CN value of an RFC 4514 name, for a grep; the whole name when it has none."""
    for part in dn.split(","):
        if part.startswith("CN="):
            return part[3:]
    return dn


# --- PRIVATE_CA_NOT_TRUSTED -----------------------------------------------------------------------


def _private_ca(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    known = known_certificates(observation)
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in observation.rows_with_chain:
        groups.setdefault(row.chain_fingerprints, []).append(row)
    for rows in groups.values():
        trusting = [r for r in rows if _host_trusts(r) is True]
        failing = [r for r in rows if _host_trusts(r) is False]
        if not trusting or not failing:
            continue
        shape = shape_of(rows[0].certificates(), known)
        if shape is None or shape.shape is Shape.MISSING_ISSUER:
            continue
        yield _private_ca_finding(
            observation,
            settings,
            rows,
            trusting,
            failing,
            self_signed_leaf=shape.shape is Shape.SELF_SIGNED and len(shape.path) == 1,
        )


def _private_ca_finding(
    observation: Observation,
    settings: DiagnosisSettings,
    rows: list[Row],
    trusting: list[Row],
    failing: list[Row],
    *,
    self_signed_leaf: bool,
) -> Finding:
    trusted_stores = [
        s for r in trusting for s in r.address.stores if s.at_reference_time in PATH_FOUND and s.verified_path
    ]
    root, anchor = _root_of(rows, trusted_stores)
    public = _certifi_public(rows)
    kind = {True: "public root", False: "private root", None: "root"}[public]
    what = f"the self-signed certificate '{root}'" if self_signed_leaf else f"the {kind} '{root}'"
    failing_agents = _agents(failing)
    trusting_agents = tuple(a for a in _agents(trusting) if a not in failing_agents)
    summary = (
        f"{what[0].upper()}{what[1:]} that {observation.target}'s chain leads to is missing from the trust store of "
        f"{name_list(failing_agents)}; {_others(len(trusting_agents))}."
    )
    if public is True:
        fix = (
            f"Update the ca-certificates package on {', '.join(failing_agents)} (their bundle predates '{root}'), "
            "or rebuild their image on a current base."
        )
    else:
        fix = (
            f"Distribute '{root}' to {', '.join(failing_agents)}: copy it to /usr/local/share/ca-certificates/ and "
            "run update-ca-certificates (update-ca-trust on RHEL), or build it into the image those hosts run."
        )
    if any(_trust_store(r, "ssl_cert_file") for r in failing):
        fix += " Where SSL_CERT_FILE is set, the bundle it names must hold it too."

    store_ids: dict[str, str] = {}
    for r in [*failing, *trusting]:
        store = _native_store(r)
        if store is not None:
            store_ids.setdefault(r.agent, _describe_store(store))
    evidence = [
        Evidence(
            "verified root", tuple((r.where, root + (f" (sha256 {anchor[:12]})" if anchor else "")) for r in trusting)
        ),
        Evidence("native verdict", tuple((r.where, str(r.address.native.verdict)) for r in [*failing, *trusting])),
    ]
    if store_ids:
        evidence.append(Evidence("trust store", tuple(store_ids.items())))
    first = failing[0]
    port = observation.request.target.port
    store = _native_store(first)
    bundle = store.path if store is not None and store.path else _DEFAULT_BUNDLE
    reproduce = (
        save_chain(first.address.address, port, first.result.sni),
        verify_at(settings.reference_time, bundle),
        f"awk -v cmd='openssl x509 -noout -subject' '/BEGIN/{{close(cmd)}};{{print | cmd}}' {shlex.quote(bundle)} "
        f"| grep -F {shlex.quote(_cn(root))}",
    )
    return Finding(
        cause=Cause.PRIVATE_CA_NOT_TRUSTED,
        severity=Severity.CRITICAL,
        summary=summary,
        agents=failing_agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in failing)),
        evidence=tuple(evidence),
        fix=fix,
        reproduce=reproduce,
    )


# --- RUNTIME_STORE_DIFFERS ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Miss:
    row: Row
    verdict: StoreVerdict
    base: list[StoreVerdict]  # the system stores that trust, for the root's name


def _runtime_differs(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    known = known_certificates(observation)
    public = _certifi_public(observation.rows_with_chain)
    groups: dict[tuple[str, bool], list[_Miss]] = {}
    for row in observation.rows_with_chain:
        if _host_trusts(row) is not True:
            continue
        shape = shape_of(row.certificates(), known)
        if shape is None or shape.shape is Shape.MISSING_ISSUER:
            continue  # a store that lacks a missing intermediate: the chain module names the real fix
        base = [s for s in _system(row) if s.at_reference_time in PATH_FOUND]
        for verdict in row.address.stores:
            if is_system_store(verdict.store) or verdict.at_reference_time not in TRUST_FAILURES:
                continue
            if verdict.store == "node_extra_ca_certs" and public is not False:
                continue  # Node's built-in roots may hold it: only a non-Mozilla root fails Node
            direct = verdict.store == "certifi" and _requests_overridden(row)
            groups.setdefault((verdict.store, direct), []).append(_Miss(row, verdict, base))
    for (store, direct), misses in groups.items():
        yield _runtime_finding(observation, settings, store, direct, misses)


def _requests_overridden(row: Row) -> bool:
    """requests reads REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) instead of certifi when set."""
    for name in ("requests_ca_bundle", "curl_ca_bundle"):
        verdict = next((s for s in row.address.stores if s.store == name), None)
        if verdict is not None:
            return verdict.at_reference_time in PATH_FOUND
    return False


def _runtime_finding(
    observation: Observation, settings: DiagnosisSettings, store: str, direct: bool, misses: Sequence[_Miss]
) -> Finding:
    rows = [m.row for m in misses]
    agents = _agents(rows)
    root, _anchor = _root_of(rows, [s for m in misses for s in m.base])
    runtime = (
        "Python code that uses certifi directly (httpx, pip; requests here follows REQUESTS_CA_BUNDLE or "
        "CURL_CA_BUNDLE, which trusts it)"
        if direct
        else _runtime(store)
    )
    first = rows[0]
    info = _trust_store(first, store)
    path = info.path if info is not None and info.path else ""
    place = path or f"the {store} store"
    system = _native_store(first)
    system_path = system.path if system is not None and system.path else _DEFAULT_BUNDLE
    broken = f" (the store could not be read: {info.error})" if info is not None and info.error else ""
    summary = (
        f"On {name_list(agents)}, {runtime} rejects {observation.target}: its store "
        f"{place}{broken} lacks the root '{root}', which the system store on the same host trusts."
    )
    fixes = {
        "certifi": (
            f"Point Python at the system bundle: set REQUESTS_CA_BUNDLE={system_path} (SSL_CERT_FILE for httpx) in "
            "the service's environment, or use the truststore package; do not edit certifi's file, upgrades "
            "replace it."
        ),
        "requests_ca_bundle": (
            f"REQUESTS_CA_BUNDLE names {place}, which lacks the root: point it at {system_path} or add the root to it."
        ),
        "curl_ca_bundle": (
            f"CURL_CA_BUNDLE names {place}, which lacks the root: point it at {system_path} or add the root to it."
        ),
        "node_extra_ca_certs": (
            f"Add '{root}' to {place} (NODE_EXTRA_CA_CERTS), or start Node with --use-openssl-ca so that it uses "
            f"{system_path}."
        ),
    }
    # Without a known path, the shell expands JAVA_HOME on that host.
    keystore = shlex.quote(path) if path else '"$JAVA_HOME/lib/security/cacerts"'
    java_fix = (
        f"Import the root into {place}: keytool -importcert -trustcacerts -alias {shlex.quote(_cn(root))} "
        f"-file root.pem -keystore {keystore} -storepass changeit "
        f"(export root.pem from {system_path}); "
        "on Debian/Ubuntu, ca-certificates-java keeps it in step with update-ca-certificates."
    )
    if store in ("java", "java_home"):
        fix = java_fix
    else:
        fix = fixes.get(store, f"Add '{root}' to {place}, or point those clients at {system_path}.")
    evidence = [
        Evidence(
            "store verdicts",
            tuple(
                (
                    m.row.where,
                    f"{m.verdict.store} {m.verdict.at_reference_time}; "
                    + ", ".join(f"{s.store} {s.at_reference_time}" for s in m.base),
                )
                for m in misses
            ),
        ),
        Evidence(
            "trust stores",
            tuple(
                (r.agent, _describe_store(t))
                for r in {r.agent: r for r in rows}.values()
                for t in (_trust_store(r, store), _native_store(r))
                if t is not None
            ),
        ),
    ]
    port = observation.request.target.port
    checks: list[str] = []
    if store in ("java", "java_home") and path:
        checks.append(
            f"keytool -list -v -keystore {shlex.quote(path)} -storepass changeit | grep -F 'Owner:' | grep -F "
            f"{shlex.quote(_cn(root))}"
        )
    elif path:
        checks.append(verify_at(settings.reference_time, path))
    elif store == "certifi":
        # The path certifi resolves to on that host; shell-substituted, so not quoted as a literal.
        checks.append(verify_at(settings.reference_time, "CERTIFI").replace("CERTIFI", '"$(python3 -m certifi)"'))
    return Finding(
        cause=Cause.RUNTIME_STORE_DIFFERS,
        severity=Severity.WARNING,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in rows)),
        evidence=tuple(evidence),
        fix=fix,
        reproduce=(save_chain(first.address.address, port, first.result.sni), *checks),
    )
