"""Trust that differs between hosts (PRIVATE_CA_NOT_TRUSTED) or between stores on one host
(RUNTIME_STORE_DIFFERS), for the same served chain.

A host "trusts" a chain when its native client (or, when the native verdict says nothing, a system store)
found a path to a certificate it holds, whatever failed afterwards (time, name): those failures would
fail everywhere and belong to other rules. A host "fails on trust" when the verdict is one of the trust
failures (unknown issuer, lone leaf, untrusted root, self-signed). Only those two kinds are compared.

PRIVATE_CA_NOT_TRUSTED needs both kinds of host for one served chain; chains that differ only in their leaf
(a leaf per backend, region or vantage: `chain_shape.trust_key`) count as one. When every host fails,
the chain itself is the problem (the chain module's untrusted or incomplete chain); when the chain lacks
an intermediate (the chain module's `shape_of` says MISSING_ISSUER, from the stores' verified paths
first), the hosts that verify hold that intermediate, and serving it is the fix: this rule holds back.
A leaf that a root issued directly (mkcert, small internal CAs) is complete when a store verified it
straight to that root: a trust question like any other. The root is named from a trusting store's
verified path. Whether it is private is told by certifi (Mozilla's roots, as Node and most browsers
ship): a certifi store that trusts the chain anywhere makes the root public (the failing hosts' bundles
are out of date); certifi failing on trust everywhere it exists makes it private.

RUNTIME_STORE_DIFFERS looks at one host at a time: the native client (or the system store) trusts, and
a runtime's store on the same host fails on trust. NODE_EXTRA_CA_CERTS only adds to Node's built-in
(Mozilla) roots, so its failure counts only when certifi shows the root is not a Mozilla one; with no
certifi verdict anywhere it is not claimed. A Java keystore whose path ends at a certificate it holds that
is no root (code 2: an imported intermediate) is no gap: Java's PKIX takes any certificate its store holds
as the anchor. certifi's failure speaks for Python requests unless the host sets REQUESTS_CA_BUNDLE or
CURL_CA_BUNDLE to a store that trusts (requests then uses that instead).
What a host's gaps add up to is one finding per host and root, whatever the number of stores: a warning
listing the runtimes that are in use there (`store_use`: named by the operator, or pointed at by a
variable in the agent's environment), each runtime's fix said once; the gaps of runtimes merely found
on the host (a JRE on PATH, a system Python's certifi) are one info note, since no client is known to
fail. Hosts with the very same gaps for the same root share one finding.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ...agent.model import StoreVerdict, TrustStore, Verdict, per_store
from ..observation import TRUST_FAILURES, DiagnosisSettings, Observation, Row
from .anchors import anchor_out_of_window
from .chain_shape import ChainEvidence, ChainShape, Shape, shape_of, trust_key
from .model import Cause, Evidence, Finding, Severity
from .reproduce import save_chain, verify_at
from .store_use import StoreUse, is_system_store, store_use
from .timebase import judgement_time
from .wording import MAX_NAMED, agree, count, name_list

__all__ = ["RUNTIMES", "findings", "is_system_store", "runtime_label"]

PATH_FOUND = frozenset(Verdict) - TRUST_FAILURES - {Verdict.NO_CHAIN, Verdict.OTHER}
# X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT: the path reached a certificate the store holds that is not self-signed.
_ISSUER_OF_STORE_CERT_MISSING = 2
_DEFAULT_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Which clients use a store, as the sentence names them.
RUNTIMES: dict[str, str] = {
    "certifi": "Python requests (certifi)",
    "requests_ca_bundle": "Python requests (REQUESTS_CA_BUNDLE)",
    "curl_ca_bundle": "curl (CURL_CA_BUNDLE)",
    "node_extra_ca_certs": "Node.js (NODE_EXTRA_CA_CERTS)",
    "node": "Node.js (its bundled roots)",
    "java": "Java (the system cacerts)",
    "java_home": "Java under JAVA_HOME (its cacerts)",
}
_DIRECT_CERTIFI = (
    "Python code that uses certifi directly (httpx, pip; requests here follows REQUESTS_CA_BUNDLE or "
    "CURL_CA_BUNDLE, which trusts it)"
)
# What a Java store's OpenSSL verdict cannot show: PKIX also takes a non-root certificate the store holds as its
# anchor (an imported intermediate: no gap at all, code 2; the server's own certificate: the same code as none).
_JAVA_PINNED = (
    " Java would still accept it where its keystore holds the server's own certificate (imported with keytool): Java "
    "trusts any certificate its store holds, while openssl verify, which judged the store, needs a root."
)
# The order runtimes are named in, and the words for each in a fix.
_RUNTIME_ORDER = ("python", "java", "node", "curl", "bundle")


def runtime_label(store: str) -> str:
    """The clients a store speaks for, as a sentence names them; a second store of a kind is named after
    where it lives (certifi:<site-packages dir>, java:<JRE home>)."""
    if store in RUNTIMES:
        return RUNTIMES[store]
    base, _, where = store.partition(":")
    if base == "certifi" and where:
        return f"Python requests (the certifi in {where})"
    if base == "java" and where:
        return f"Java under {where} (its cacerts)"
    if base == "extra":
        return f"clients configured with the bundle '{where}'"
    if base == "node" and where:
        return f"Node.js at {where} (its bundled roots)"
    return f"clients using the '{store}' store"


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    evidence = ChainEvidence.of(observation)
    yield from _private_ca(observation, settings, evidence)
    yield from _runtime_differs(observation, settings, evidence)


# --- shared facts ---------------------------------------------------------------------------------


def _system(row: Row) -> list[StoreVerdict]:
    return [s for s in row.address.stores if is_system_store(s.store)]


def _host_trusts(row: Row, at: datetime) -> bool | None:
    """True: the host's default clients found a path; False: they fail on trust; None: cannot tell (also
    when the path ends at an anchor out of its validity in the host's store: anchors.py's finding). A host
    that fails on a served certificate's dates at true time `at` found its path all the same: it trusts."""
    if anchor_out_of_window(row) and not _served_out_of_window(row, at):
        return None
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


def _served_out_of_window(row: Row, at: datetime) -> bool:
    """A served certificate on a system store's verified path is outside its validity at `at`: the time
    failure is the server's certificate, not the anchor the store holds."""
    served = {fp: c for fp, c in zip(row.chain_fingerprints, row.summaries, strict=True) if c is not None}
    return any(
        not served[fp].not_before <= at <= served[fp].not_after
        for s in _system(row)
        for fp in s.verified_path
        if fp in served
    )


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


def _private_ca(observation: Observation, settings: DiagnosisSettings, evidence: ChainEvidence) -> Iterator[Finding]:
    # Chains that differ only in their leaf (a leaf per backend or per vantage) ask the same trust question.
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in observation.rows_with_chain:
        groups.setdefault(trust_key(row), []).append(row)
    at = judgement_time(observation, settings)
    for rows in groups.values():
        trusting = [r for r in rows if _host_trusts(r, at) is True]
        failing = [r for r in rows if _host_trusts(r, at) is False]
        if not trusting or not failing:
            continue
        # A trusting host's chain carries the stores' verified paths, the strongest evidence of its shape.
        shape = shape_of(trusting[0].certificates(), evidence)
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
    hidden = {r.agent: paths for r in failing if (paths := _cert_file_hides(r)) is not None}
    if hidden and set(hidden) == set(failing_agents):
        # The root is installed; what fails is the variable that sends OpenSSL elsewhere.
        summary = f"{what[0].upper()}{what[1:]} that {observation.target}'s chain leads to is installed on "
        summary += f"{name_list(failing_agents)}, yet {_hidden_clause(hidden)}; {_others(len(trusting_agents))}."
        fix = _hidden_fix(hidden, root)
    elif hidden:
        summary = summary[:-1] + f"; on {name_list(list(hidden))} it is installed, but {_hidden_clause(hidden)}."
        fix += " " + _hidden_fix(hidden, root)
    elif empty := {r.agent: store for r in failing if (store := _empty_cert_file(r)) is not None}:
        agents = list(empty)
        said = [f"SSL_CERT_FILE on {a} names {store.path}, {_what_it_holds(store)}" for a, store in empty.items()]
        more = f"; likewise on {count(len(said) - MAX_NAMED, 'more vantage')}" if len(said) > MAX_NAMED else ""
        summary = f"{summary[:-1]}; {'; '.join(said[:MAX_NAMED])}{more}, so OpenSSL-based clients there trust no "
        summary += "root at all, public ones included."
        fix += f" On {name_list(agents)}, point SSL_CERT_FILE at the bundle the root is added to, or unset it."
    elif any(_trust_store(r, "ssl_cert_file") for r in failing):
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


def _cert_file_hides(row: Row) -> tuple[TrustStore, str] | None:
    """(the SSL_CERT_FILE store, the system bundle's path) when the host's system bundle verifies the chain
    and the bundle SSL_CERT_FILE names, which OpenSSL's default context reads instead, does not."""
    verdicts = {v.store: v.at_reference_time for v in per_store(row.address.stores)}
    if verdicts.get("ssl_cert_file") not in TRUST_FAILURES:
        return None
    system = next(
        (n for n, v in verdicts.items() if (n == "system" or n.startswith("system:")) and v in PATH_FOUND), None
    )
    cert_file, bundle = _trust_store(row, "ssl_cert_file"), system and _trust_store(row, system)
    if cert_file is None or not bundle:
        return None
    return cert_file, bundle.path


def _empty_cert_file(row: Row) -> TrustStore | None:
    """The SSL_CERT_FILE store when it holds no root at all (missing, unreadable, empty)."""
    store = _trust_store(row, "ssl_cert_file")
    return store if store is not None and store.root_count == 0 else None


def _what_it_holds(store: TrustStore) -> str:
    if store.root_count:
        return "which lacks it"
    return f"which holds no root ({store.error})" if store.error else "which holds no root"


def _hidden_clause(hidden: dict[str, tuple[TrustStore, str]]) -> str:
    parts = [
        f"SSL_CERT_FILE on {agent} names {cert_file.path}, {_what_it_holds(cert_file)}, and clients there that take "
        f"OpenSSL's default paths (openssl s_client, Python's ssl) read that file instead of the system bundle "
        f"{bundle}, which holds it (clients that name the bundle themselves, as curl's built-in CA path and "
        "Debian's certifi do, still verify)"
        for agent, (cert_file, bundle) in list(hidden.items())[:MAX_NAMED]
    ]
    if len(hidden) > MAX_NAMED:
        parts.append(f"likewise on {count(len(hidden) - MAX_NAMED, 'more vantage')}")
    return "; ".join(parts)


def _hidden_fix(hidden: dict[str, tuple[TrustStore, str]], root: str) -> str:
    agents = list(hidden)
    fix = (
        f"On {name_list(agents)}, unset SSL_CERT_FILE or point it at the system bundle (find what sets it: the "
        "service's Environment=, /etc/environment, a profile script)"
    )
    holding = list(dict.fromkeys(c.path for c, _ in hidden.values() if c.root_count))
    if holding:
        fix += f", or add '{root}' to {name_list(holding)}"
    return fix + "; installing the root again does not help while the variable overrides the store."


# --- RUNTIME_STORE_DIFFERS ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gap:
    """One store on one host that lacks the root the system store there trusts."""

    row: Row
    verdict: StoreVerdict
    info: TrustStore | None
    use: StoreUse
    direct: bool  # certifi, while requests there reads REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, which trusts

    @property
    def store(self) -> str:
        return self.verdict.store

    @property
    def label(self) -> str:
        if self.direct:
            return _DIRECT_CERTIFI
        if self.store.partition(":")[0] == "java" and self.info is not None and _named_keystore(self.info):
            return f"Java with the keystore {self.info.path}"
        return runtime_label(self.store)

    @property
    def place(self) -> str:
        if self.info is not None and self.info.path:
            return f"{self.info.path} (its bundled roots)" if self.info.kind == "node" else self.info.path
        return f"the {self.store} store"

    @property
    def broken(self) -> str:
        return f" (the store could not be read: {self.info.error})" if self.info is not None and self.info.error else ""


@dataclass
class _Host:
    """One host's gaps for one root, over the addresses it probed."""

    agent: str
    root: str
    anchor: str
    rows: list[Row] = field(default_factory=list)
    gaps: dict[str, _Gap] = field(default_factory=dict)  # by store name: the first address's


def _runtime_differs(
    observation: Observation, settings: DiagnosisSettings, evidence: ChainEvidence
) -> Iterator[Finding]:
    public = _certifi_public(observation.rows_with_chain)
    hosts: dict[tuple[str, str], _Host] = {}
    shapes: dict[tuple[str, ...], ChainShape | None] = {}
    at = judgement_time(observation, settings)
    for row in observation.rows_with_chain:
        if _host_trusts(row, at) is not True:
            continue
        if row.chain_fingerprints not in shapes:
            shapes[row.chain_fingerprints] = shape_of(row.certificates(), evidence)
        shape = shapes[row.chain_fingerprints]
        if shape is None or shape.shape is Shape.MISSING_ISSUER:
            continue  # a store that lacks a missing intermediate: the chain module names the real fix
        gaps = [gap for verdict in row.address.stores if (gap := _gap(row, verdict, public)) is not None]
        if not gaps:
            continue
        base = [s for s in _system(row) if s.at_reference_time in PATH_FOUND]
        root, anchor = _root_of([row], base)
        host = hosts.setdefault((row.agent, anchor or root), _Host(row.agent, root, anchor))
        host.rows.append(row)
        for gap in gaps:
            host.gaps.setdefault(gap.store, gap)
    # One finding per host and root (and per kind: in use or not); hosts with the very same gaps share it.
    groups: dict[tuple[str, bool, tuple[tuple[str, bool], ...]], list[tuple[_Host, list[_Gap]]]] = {}
    for host in hosts.values():
        for in_use in (True, False):
            gaps = [g for g in host.gaps.values() if g.use.in_use is in_use]
            if gaps:
                key = (host.anchor or host.root, in_use, tuple(sorted((g.store, g.direct) for g in gaps)))
                groups.setdefault(key, []).append((host, gaps))
    for (_root, in_use, _stores), members in groups.items():
        yield _runtime_finding(observation, settings, in_use, members)


def _gap(row: Row, verdict: StoreVerdict, public: bool | None) -> _Gap | None:
    if is_system_store(verdict.store) or verdict.at_reference_time not in TRUST_FAILURES:
        return None
    if verdict.store == "node_extra_ca_certs" and (public is not False or _judged_as_node(row)):
        # Node's bundled roots may hold it: only a non-Mozilla root fails Node, and where the agent asked
        # node itself for its roots, that store (bundled roots and this file together) answers for Node.
        return None
    info = _trust_store(row, verdict.store)
    use = store_use(verdict.store, info)
    if use.runtime == "java" and _reference_code(verdict) == _ISSUER_OF_STORE_CERT_MISSING:
        # The path ends at a certificate the store holds that is no root (an imported intermediate): OpenSSL
        # wants a self-signed root above it, Java's PKIX takes any certificate its store holds as the anchor.
        return None
    direct = verdict.store.partition(":")[0] == "certifi" and _requests_overridden(row)
    return _Gap(row, verdict, info, use, direct)


def _reference_code(verdict: StoreVerdict) -> int:
    """The OpenSSL code at the reference time (recordings made before it was kept: the agent-time code when
    both verdicts agree)."""
    if verdict.reference_verify_code or verdict.at_reference_time is not verdict.at_agent_time:
        return verdict.reference_verify_code
    return verdict.verify_code


def _judged_as_node(row: Row) -> bool:
    return any(s.store.partition(":")[0] == "node" for s in row.address.stores)


def _requests_overridden(row: Row) -> bool:
    """requests reads REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) instead of certifi when set."""
    for name in ("requests_ca_bundle", "curl_ca_bundle"):
        verdict = next((s for s in row.address.stores if s.store == name), None)
        if verdict is not None:
            return verdict.at_reference_time in PATH_FOUND
    return False


def _by_runtime(gaps: Sequence[_Gap]) -> list[tuple[str, list[_Gap]]]:
    """The gaps grouped by runtime, in the order runtimes are named."""
    grouped: dict[str, list[_Gap]] = {}
    for gap in gaps:
        grouped.setdefault(gap.use.runtime, []).append(gap)
    order = {r: i for i, r in enumerate(_RUNTIME_ORDER)}
    return sorted(grouped.items(), key=lambda item: order.get(item[0], len(order)))


def _runtime_fix(runtime: str, gaps: Sequence[_Gap], root: str, system_path: str) -> str:
    """What to do for one runtime, whatever the number of its stores, in one go."""
    places = name_list([g.place for g in gaps])
    if runtime == "python":
        parts = []
        requests_bundle = [g for g in gaps if g.store == "requests_ca_bundle"]
        if any(g.store != "requests_ca_bundle" for g in gaps):
            parts.append(
                f"Python: point it at the system bundle: set REQUESTS_CA_BUNDLE={system_path} (SSL_CERT_FILE for "
                "httpx) in the service's environment, or use the truststore package; do not edit certifi's file, "
                "upgrades replace it."
            )
        if requests_bundle:
            parts.append(
                f"REQUESTS_CA_BUNDLE names {requests_bundle[0].place}, which lacks the root: point it at "
                f"{system_path} or add the root to it."
            )
        return " ".join(parts)
    if runtime == "java":
        file, source = _root_file(_cn(root), system_path)
        commands = "; ".join(
            f"keytool -importcert -trustcacerts -alias {shlex.quote(_cn(root))} -file {shlex.quote(file)} -keystore "
            f"{_keystore(g)} -storepass changeit"
            for g in gaps
        )
        return (
            f"Java: import the root into {places}: {commands} ({source}); on "
            "Debian/Ubuntu, ca-certificates-java keeps the system cacerts in step with update-ca-certificates."
        )
    if runtime == "node":
        named = (_trust_store(g.row, "node_extra_ca_certs") for g in gaps)
        extra = list(dict.fromkeys(t.path for t in named if t is not None and t.path))
        added = (
            f"add '{root}' to {name_list(extra)} (NODE_EXTRA_CA_CERTS)"
            if extra
            else (
                f"save '{root}' as PEM and name that file in NODE_EXTRA_CA_CERTS in the service's environment (node "
                "reads it when it starts)"
            )
        )
        return f"Node.js: {added}, or start Node with --use-openssl-ca so that it uses {system_path}."
    if runtime == "curl":
        return f"CURL_CA_BUNDLE names {places}, which lacks the root: point it at {system_path} or add the root to it."
    them = "it" if len(gaps) == 1 else "them"
    return f"Add '{root}' to {places}, or point the clients that use {them} at {system_path}."


def _root_file(cn: str, system_path: str) -> tuple[str, str]:
    """The file keytool imports the root from, and where that file comes from, as a clause. The file is named
    after the root; a system store that already bears that name is the file itself."""
    slug = re.sub(r"[^a-z0-9]+", "-", cn.lower()).strip("-") or "root"
    file = f"{slug}.pem"
    if os.path.basename(system_path) == file:
        return (
            system_path,
            f"{system_path} holds the root '{cn}'; if it holds other certificates too, save '{cn}' alone as PEM "
            "and import that file",
        )
    return file, f"{file}: the root '{cn}' saved as PEM from the system store {system_path}"


def _node_check(node: str, address: str, port: int, sni: str | None) -> str:
    """What that node itself concludes of the server; run it with the service's environment (NODE_EXTRA_CA_CERTS,
    NODE_OPTIONS), which decides the roots it trusts."""
    options: dict[str, str | int] = {"host": address, "port": port}
    if sni:
        options["servername"] = sni
    script = (
        f"const s=require('tls').connect({json.dumps(options)},()=>{{console.log('trusted');s.end()}});"
        "s.on('error',e=>{console.log(e.code||e.message);process.exitCode=1})"
    )
    return f"{shlex.quote(node)} -e {shlex.quote(script)}"


def _named_keystore(info: TrustStore) -> bool:
    """A keystore named itself (`--runtime java=KEYSTORE`, as a service passes javax.net.ssl.trustStore), not a
    JRE's own lib/security/cacerts, which "the system cacerts" and "its cacerts" name."""
    return info.kind == "java-keystore" and bool(info.path) and f"--runtime java={info.path}" in info.found_by


def _keytool_fingerprint(row: Row) -> str:
    """The served leaf's SHA-256 fingerprint as `keytool -list -v` prints it (AB:CD:...)."""
    hexed = row.leaf_fingerprint.upper()
    return ":".join(hexed[i : i + 2] for i in range(0, len(hexed), 2))


def _keystore(gap: _Gap) -> str:
    """The keystore a keytool command names; without a known path, the shell expands JAVA_HOME on that host."""
    path = gap.info.path if gap.info is not None and gap.info.path else ""
    return shlex.quote(path) if path else '"$JAVA_HOME/lib/security/cacerts"'


def _runtime_finding(
    observation: Observation,
    settings: DiagnosisSettings,
    in_use: bool,
    members: Sequence[tuple[_Host, list[_Gap]]],
) -> Finding:
    hosts = [host for host, _ in members]
    agents = tuple(dict.fromkeys(h.agent for h in hosts))
    rows = [r for h in hosts for r in h.rows]
    first, gaps = members[0]
    root = first.root
    grouped = _by_runtime(gaps)
    ordered = [g for _, group in grouped for g in group]
    labels = [g.label for g in ordered]
    one = len(ordered) == 1
    if one:
        gap = ordered[0]
        path = gap.place if gap.info is not None and gap.info.path else ""
        stores = f"its store{' ' + path if path else ''}{gap.broken} lacks"
    else:
        stores = f"their stores ({', '.join(g.place + g.broken for g in ordered)}) lack"
    native = _native_store(first.rows[0])
    system_path = native.path if native is not None and native.path else _DEFAULT_BUNDLE
    fixes = " ".join(_runtime_fix(runtime, group, root, system_path) for runtime, group in grouped)
    if in_use:
        summary = (
            f"On {name_list(agents)}, {name_list(labels)} {agree('reject', len(labels))} {observation.target}: "
            f"{stores} the root '{root}', which the system store on the same host trusts."
        )
        fix = fixes
        why = Evidence(
            "in use", tuple((h.agent, "; ".join(f"{g.store}: {g.use.declared}" for g in gs)) for h, gs in members)
        )
    else:
        summary = (
            f"On {name_list(agents)}, {name_list(labels)} would reject {observation.target} ({stores} the root "
            f"'{root}', which the system store trusts), but nothing there declares {'it' if one else 'them'} in "
            "use, so no client is known to fail."
        )
        fix = (
            f"Nothing to do unless a service on {', '.join(agents)} uses {'it' if one else 'them'}; then: {fixes} "
            "To have the agent count such a runtime as in use, name it with `--runtime` (or start the agent with "
            "the variable the service sets: REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, JAVA_HOME)."
        )
        why = Evidence(
            "not declared in use",
            tuple(
                (h.agent, "; ".join(f"{g.store}: {g.use.found or 'found on the host'}" for g in gs))
                for h, gs in members
            ),
        )
    if any(g.use.runtime == "java" for g in ordered):
        summary += _JAVA_PINNED
    evidence = [
        Evidence(
            "store verdicts",
            tuple(
                (
                    r.where,
                    "; ".join(
                        [
                            *(f"{g.store} {g.verdict.at_reference_time}" for g in gs),
                            *(
                                f"{s.store} {s.at_reference_time}"
                                for s in _system(r)
                                if s.at_reference_time in PATH_FOUND
                            ),
                        ]
                    ),
                )
                for h, gs in members
                for r in h.rows
            ),
        ),
        why,
        Evidence(
            "trust stores",
            tuple(
                (h.agent, _describe_store(t))
                for h, gs in members
                for t in (*(g.info for g in gs), _native_store(h.rows[0]))
                if t is not None
            ),
        ),
    ]
    port = observation.request.target.port
    checks: list[str] = []
    for gap in ordered:
        path = gap.info.path if gap.info is not None and gap.info.path else ""
        if gap.use.runtime == "java" and path and gap.info is not None and gap.info.kind == "java-keystore":
            listing = f"keytool -list -v -keystore {shlex.quote(path)} -storepass changeit"
            checks.append(f"{listing} | grep -F 'Owner:' | grep -F {shlex.quote(_cn(root))}")
            if gap.row.leaf_fingerprint:
                # Java also trusts the server's own certificate where the keystore holds it (_JAVA_PINNED).
                checks.append(f"{listing} | grep -F {shlex.quote('SHA256: ' + _keytool_fingerprint(gap.row))}")
        elif gap.info is not None and gap.info.kind == "node" and path:
            checks.append(_node_check(path, gap.row.address.address, port, gap.row.result.sni))
        elif path:
            checks.append(verify_at(settings.reference_time, path))
        elif gap.store == "certifi":
            # The path certifi resolves to on that host; shell-substituted, so not quoted as a literal.
            checks.append(verify_at(settings.reference_time, "CERTIFI").replace("CERTIFI", '"$(python3 -m certifi)"'))
    lead = first.rows[0]
    return Finding(
        cause=Cause.RUNTIME_STORE_DIFFERS,
        severity=Severity.WARNING if in_use else Severity.INFO,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in rows)),
        evidence=tuple(evidence),
        fix=fix,
        reproduce=(save_chain(lead.address.address, port, lead.result.sni), *dict.fromkeys(checks)),
    )
