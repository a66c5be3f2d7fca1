"""The served chain's shape: an issuer the server does not send (INCOMPLETE_CHAIN), a complete chain
that no vantage trusts (UNTRUSTED_CHAIN), and certificates served that are on no path (UNRELATED_CERTIFICATE,
info).

What the shape is comes from `chain_shape.shape_of`, decided by evidence: the paths the stores verified
first (a leaf that a store's root issued directly, as mkcert and small internal CAs do, is complete; a
path through a certificate the server did not send means that certificate is missing), then the
certificates seen anywhere (served elsewhere, fetched from an AIA URL), and only then the usual shapes
(public CAs never sign leaves from a root; an intermediate's unseen issuer is the unsent root).

Which vantages fail on an incomplete chain decides the severity: critical when some host's native
client cannot verify it, warning when every host still verifies (their stores hold the intermediate).
When a fetched issuer completes the chain on one host, the same finding names the failing hosts that
serving it will not fix: their own fetch still fails on trust, or none of their stores has the root set
the chain completed against (they lack the root as well; one sentence, not a second finding).
An incomplete chain that some vantages verify is this module's, not a trust-store difference: the
trust module holds back on exactly the chains `shape_of` calls incomplete.

A chain that an address serves to some vantages while at least as many others get, from that same
address, a leaf from another issuer is left alone: a middlebox may have made it (interception explains
it). The view most vantages share is taken as the server's, and a leaf from the same issuer (backends
behind one address renewed at different times) does not count against it. So is an untrusted chain at an
address a vantage's resolver alone sent it to, where a foreign issuer answers (`issuers`): the
interception finding tells why those vantages reject it.

Chains that differ only in their leaf (`trust_key`: a leaf per backend, region or vantage) ask the hosts
one trust question: none is untrusted while a host trusts one of them.

A served CA that did sign the walk's top, under the name the top names, while the top's Authority Key
Identifier names another key is no missing certificate: OpenSSL never tried that CA, and the finding says
the certificate is malformed (MALFORMED_CERTIFICATE) rather than asking for an issuer that is already served.

Chains that break a verification policy (weak digest or key, invalid CA, path length, purpose, ...) are
the `policy` module's; its findings are made here too, so that the engine's list of rules stays as it is.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from ...agent.model import AiaFetch, TrustStore, Verdict
from ...agent.trust.certinfo import CertificateParseError, CertSummary, fingerprint, parse_der, summarize
from ..observation import TRUST_FAILURES, DiagnosisSettings, Observation, Row
from . import issuers, policy
from .chain_shape import ChainEvidence, ChainShape, Shape, shape_of, trust_key
from .model import Cause, Evidence, Finding, Severity
from .reproduce import save_chain, verify_at
from .wording import agree, count, name_list

__all__ = ["aia_wording", "findings"]

# Verdicts that say a path to a store certificate was found (whatever failed after that).
PATH_FOUND = frozenset(Verdict) - TRUST_FAILURES - {Verdict.NO_CHAIN, Verdict.OTHER}


def aia_wording(urls: Sequence[str], fetched: AiaFetch | None) -> str:
    """What the caIssuers URL means for this chain: fetched or not, and whether that completes it."""
    if fetched is not None and fetched.fetched and fetched.certificate and fetched.completes_chain:
        return (
            f"fetching the caIssuers URL {fetched.url} returns the missing certificate and completes the chain: "
            "browsers fetch that URL, most code does not, which is why it works in a browser and fails elsewhere"
        )
    if fetched is not None and fetched.fetched and fetched.certificate and not fetched.error:
        return (
            f"fetching the caIssuers URL {fetched.url} returns the issuer, but the chain still does not verify "
            f"({fetched.verdict}): even browsers, which fetch that URL, fail"
        )
    if fetched is not None and fetched.error:
        return (
            f"fetching the caIssuers URL {fetched.url or ', '.join(urls)} failed ({fetched.error}): browsers, which "
            "fetch that URL, fail as well as code that does not"
        )
    if urls:
        return (
            f"its caIssuers URL {', '.join(urls)} lets browsers fetch the missing certificate, which is why it "
            "works in a browser; most code (OpenSSL, Python, Go, curl, Java by default) does not fetch it, and "
            "the agents did not (they fetch AIA URLs only when allowed to)"
        )
    return (
        "it names no caIssuers URL (AIA), so no client can fetch the missing certificate, not even a browser: "
        "it must be served"
    )


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    evidence = ChainEvidence.of(observation)
    contested = _Contest(observation)
    # Rows a resolver sent to a foreign issuer are the interception's: it explains why they reject the chain.
    steered = issuers.analyse(observation).steered()
    groups: dict[tuple[str, ...], list[Row]] = {}
    families: dict[tuple[str, ...], list[Row]] = {}
    for row in observation.rows_with_chain:
        groups.setdefault(row.chain_fingerprints, []).append(row)
        families.setdefault(trust_key(row), []).append(row)
    # Chains that differ only in their leaf ask the hosts one trust question: none of them is untrusted
    # while a host trusts one of them, and when no host does, one finding tells it for them all.
    untrusted: dict[tuple[str, ...], tuple[list[Row], ChainShape]] = {}
    for rows in groups.values():
        shape = shape_of(rows[0].certificates(), evidence)
        if shape is None or contested(rows):
            continue
        if shape.shape is Shape.MISSING_ISSUER:
            # Natives that refuse the chain on policy grounds before trust say nothing about its shape.
            if any(r.address.native.verdict in TRUST_FAILURES or _verifies(r) for r in rows):
                signer = _signer_with_other_key_id(rows[0], shape)
                if signer is not None:
                    yield _key_id_mismatch(observation, settings, rows, shape, signer)
                else:
                    yield _incomplete(observation, settings, rows, shape)
            continue
        family = families[trust_key(rows[0])]
        if not any(_trusts(r) for r in family) and all(_distrusts(r) for r in family):
            told = [r for r in rows if r.where not in steered]
            if told:
                untrusted.setdefault(trust_key(rows[0]), ([], shape))[0].extend(told)
        if shape.unrelated:
            yield _unrelated(observation, rows, shape)
    for rows, shape in untrusted.values():
        yield _untrusted(observation, settings, rows, shape)
    yield from policy.findings(observation, settings)


def _issuer_key(row: Row) -> tuple[str, str]:
    leaf = row.leaf
    return (leaf.issuer, leaf.authority_key_id) if leaf is not None else ("", "")


class _Contest:
    """Whether, at some address of a set of rows, at least as many other vantages got a leaf from another
    issuer.

    The same address answering with another CA's leaf is what a middlebox does; the view most vantages
    share is taken as the server's (a tie is left undecided). The vantages' issuers are indexed per
    address once, so that asking for each of many chains costs what those chains' rows cost."""

    def __init__(self, observation: Observation) -> None:
        self._keys: dict[str, dict[str, set[tuple[str, str]]]] = {}  # address -> agent -> leaf issuer keys
        for r in observation.rows_with_chain:
            self._keys.setdefault(r.address.address, {}).setdefault(r.agent, set()).add(_issuer_key(r))
        # Per address: how many agents got a leaf at all, counting each once, and how many got only one
        # issuer's leaves, per issuer.
        self._agents: dict[str, int] = {}
        self._alone: dict[str, Counter[tuple[str, str]]] = {}
        for where, agents in self._keys.items():
            self._agents[where] = len(agents)
            self._alone[where] = Counter(next(iter(keys)) for keys in agents.values() if len(keys) == 1)

    def __call__(self, rows: list[Row]) -> bool:
        key = _issuer_key(rows[0])
        mine_at: dict[str, set[str]] = {}
        for r in rows:
            mine_at.setdefault(r.address.address, set()).add(r.agent)
        for where, mine in mine_at.items():
            agents = self._keys[where]
            alone = self._alone[where]
            # Agents here that got a leaf from another issuer (all but those that got only this one's), less
            # those among `mine`.
            others = self._agents[where] - alone[key]
            others -= sum(1 for a in mine if agents[a] != {key})
            if others and others >= len(mine):
                return True
        return False


def _verdicts(row: Row) -> list[Verdict]:
    native = row.address.native.verdict
    return [native, *(s.at_agent_time for s in row.address.stores), *(s.at_reference_time for s in row.address.stores)]


def _trusts(row: Row) -> bool:
    """The native client or some store on this host found a path to a certificate it trusts."""
    return any(v in PATH_FOUND for v in _verdicts(row))


def _verifies(row: Row) -> bool:
    """The native client built a path and accepted it, whatever failed after that (time, name); a policy
    refusal (weak key, invalid CA, ...) is not a verification."""
    native = row.address.native.verdict
    return native in PATH_FOUND and native is not Verdict.INVALID


def _distrusts(row: Row) -> bool:
    return any(v in TRUST_FAILURES for v in _verdicts(row))


def _chain_text(row: Row) -> str:
    return " <- ".join(_label(c) for c in row.certificates())


def _label(cert: CertSummary) -> str:
    return f"'{cert.subject}' (sha256 {cert.short_fingerprint})"


def _agents(rows: Iterable[Row]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.agent for r in rows))


def _addresses(rows: Iterable[Row]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.address.address for r in rows))


def _store_verdicts(row: Row) -> str:
    parts = [f"native {row.address.native.verdict}"]
    parts += [f"{s.store} {s.at_reference_time}" for s in row.address.stores]
    return ", ".join(parts)


def _best_fetch(rows: Sequence[Row], shape: ChainShape) -> AiaFetch | None:
    """The most telling AIA fetch among these rows: one that completes the chain, then any answer, then errors."""
    fetches = [r.address.aia for r in rows if r.address.aia is not None]
    # A fetch follows the last served certificate's URL; it only speaks for this chain when that is the walk's top.
    fetches = [f for f in fetches if not f.url or f.url in shape.top.aia_ca_issuers]
    for good in (
        lambda f: f.fetched and f.completes_chain,
        lambda f: f.fetched and not f.error,
        lambda f: True,
    ):
        match = next((f for f in fetches if good(f)), None)
        if match is not None:
            return match
    return None


def _incomplete(observation: Observation, settings: DiagnosisSettings, rows: list[Row], shape: ChainShape) -> Finding:
    top = shape.top
    leaf = shape.path[0]
    failing = [r for r in rows if r.address.native.verdict in TRUST_FAILURES]
    verifying = [r for r in rows if _verifies(r)]
    severity = Severity.CRITICAL if failing else Severity.WARNING
    addresses = _addresses(rows)
    fingerprints = {c.sha256 for c in shape.issuer_seen}
    elsewhere = [r for r in observation.rows_with_chain if fingerprints & set(r.chain_fingerprints) and r not in rows]
    issuer = f"'{top.issuer}'" + (f" (key id {top.authority_key_id})" if top.authority_key_id else "")

    where = f"{observation.target} at {', '.join(addresses)}"
    if len(shape.path) == 1 and not shape.unrelated:
        what = f"{where} serves only the leaf {_label(leaf)}, without its issuer {issuer}"
    elif len(shape.path) == 1:
        others = ", ".join(_label(c) for c in shape.unrelated)
        what = (
            f"{where} serves the leaf {_label(leaf)} with {others}, which did not issue it; "
            f"its issuer {issuer} is missing"
        )
    else:
        what = f"{where} serves the chain up to {_label(top)} but not its issuer {issuer}"
    if failing:
        impact = f"{name_list(_agents(failing))} cannot verify it"
        if verifying:
            holders = _agents(verifying)
            who = "the other vantage holds" if len(holders) == 1 else f"the other {len(holders)} vantages hold"
            impact += (
                f" ({who} that certificate in a trust store: {name_list(holders)} {agree('verify', holders)} it "
                "only thanks to that, as no client without it can)"
            )
    elif len(verifying) == len(rows):
        impact = (
            "every vantage still verifies it only because their trust stores hold that certificate; "
            "clients without it fail"
        )
    else:
        impact = "clients whose trust store lacks that certificate cannot verify it"
    inconsistent = (
        f"; {name_list([r.where for r in elsewhere])} {'is' if len(elsewhere) == 1 else 'are'} served it, "
        "so the server is configured inconsistently"
        if elsewhere
        else ""
    )
    fetched = _best_fetch(rows, shape)
    beyond = _still_failing(rows, shape, fetched)
    after_fix = ""
    if beyond is not None:
        root, lacking, told = beyond
        them = "it" if len(lacking) == 1 else "they"
        after_fix = (
            f"; and once that issuer is served, {name_list(_agents(lacking))} will still fail unless {them} "
            f"{agree('trust', len(lacking))} the root '{root}' that the completed chain leads to: {told}"
        )
    summary = f"{what}: {impact}{inconsistent}{after_fix}."

    evidence = [
        Evidence("missing issuer", (("served chain", f"{top.issuer}; key id {top.authority_key_id or 'absent'}"),)),
        Evidence("served chain", tuple((r.where, _chain_text(r)) for r in rows)),
        Evidence("AIA caIssuers", ((f"{_label(top)}", aia_wording(top.aia_ca_issuers, fetched)),)),
        Evidence("verdicts", tuple((r.where, _store_verdicts(r)) for r in rows)),
    ]
    if elsewhere:
        evidence.append(
            Evidence(
                "issuer served elsewhere",
                tuple((r.where, ", ".join(_label(c) for c in shape.issuer_seen)) for r in elsewhere),
            )
        )
    if shape.held:
        evidence.append(Evidence("issuer held by a trust store", _holders(observation, shape)))
    if beyond is not None:
        evidence.append(Evidence("root once the issuer is served", _root_evidence(rows, fetched, beyond)))

    source = (
        f"copy it from the chain {elsewhere[0].where} is served"
        if elsewhere
        else (f"download it from {top.aia_ca_issuers[0]}" if top.aia_ca_issuers else "get it from the issuing CA")
    )
    after = "the leaf" if len(shape.path) == 1 else _label(top)
    fix = (
        f"Configure {', '.join(addresses)} to send {issuer} after {after} (a full-chain file: nginx ssl_certificate "
        f"fullchain.pem, Apache SSLCertificateFile with the chain appended, HAProxy crt with the chain); {source}."
    )
    if not shape.issuer_known:
        fix += (
            f" If '{top.issuer}' is itself a root that signs leaves directly, the chain is complete and that root "
            "belongs in the failing hosts' trust stores instead."
        )
    if beyond is not None:
        fix += (
            f" Then install '{beyond[0]}' on {', '.join(_agents(beyond[1]))}: copy it to "
            "/usr/local/share/ca-certificates/ and run update-ca-certificates (update-ca-trust on RHEL), or build it "
            f"into the image {'that host runs' if len(_agents(beyond[1])) == 1 else 'those hosts run'}."
        )
    first = (failing or rows)[0]
    port = observation.request.target.port
    reproduce = [save_chain(first.address.address, port, first.result.sni)]
    reproduce.append(verify_at(settings.reference_time, None))
    if top.aia_ca_issuers:
        url = shlex.quote(top.aia_ca_issuers[0])
        reproduce.append(f"curl -sS -o issuer.der {url} && openssl x509 -inform DER -in issuer.der -noout -subject")
    return Finding(
        cause=Cause.INCOMPLETE_CHAIN,
        severity=severity,
        summary=summary,
        agents=_agents(failing or rows),
        addresses=addresses,
        evidence=tuple(evidence),
        fix=fix,
        reproduce=tuple(reproduce),
    )


def _default_store(row: Row) -> TrustStore | None:
    """The store an AIA fetch is judged against, as OpenSSL's default: SSL_CERT_FILE when set, else the system's."""
    named = {t.name: t for t in row.result.trust_stores}
    return named.get("ssl_cert_file") or named.get("system")


def _still_failing(
    rows: Sequence[Row], shape: ChainShape, fetched: AiaFetch | None
) -> tuple[str, list[Row], str] | None:
    """When the fetched issuer completes the chain on some host: the root it leads to, the failing rows that
    would still fail once the issuer is served, and why, as a clause. A row says so itself when its own
    fetch of the issuer still ends on trust; a row without a fetch of its own, when none of its stores has
    the root set the chain completed against."""
    if fetched is None or not (fetched.fetched and fetched.completes_chain and fetched.certificate):
        return None
    fetcher = next(r for r in rows if r.address.aia is fetched)
    store = _default_store(fetcher)
    try:
        issuer = summarize(fetched.certificate)
    except CertificateParseError:
        return None
    root = issuer.subject if issuer.is_self_issued else issuer.issuer
    failing = [r for r in rows if r.address.native.verdict in TRUST_FAILURES and r.agent != fetcher.agent]
    own = [
        r
        for r in failing
        if (aia := r.address.aia) is not None and aia.fetched and aia.certificate and aia.verdict in TRUST_FAILURES
    ]
    fingerprint_ = store.fingerprint if store is not None else ""
    unlike = [
        r
        for r in failing
        if r.address.aia is None
        and fingerprint_
        and (held := {t.fingerprint for t in r.result.trust_stores if t.fingerprint})
        and fingerprint_ not in held
    ]
    lacking = [*own, *unlike]
    if not lacking:
        return None
    reasons = []
    if own:
        verdicts = ", ".join(sorted({str(r.address.aia.verdict) for r in own if r.address.aia is not None}))
        reasons.append(f"{name_list(_agents(own))} fetched it too and still cannot verify ({verdicts})")
    if unlike:
        reasons.append(
            f"no store on {name_list(_agents(unlike))} holds the root set the chain completed against on "
            f"{fetcher.agent} (sha256 {fingerprint_[:12]})"
        )
    return root, lacking, "; ".join(reasons)


def _root_evidence(
    rows: Sequence[Row], fetched: AiaFetch | None, beyond: tuple[str, list[Row], str]
) -> tuple[tuple[str, str], ...]:
    root, lacking, _told = beyond
    fetcher = next(r for r in rows if fetched is not None and r.address.aia is fetched)
    store = _default_store(fetcher)
    completed = f"{store.name} {store.path}, sha256 {store.fingerprint[:12]}" if store is not None else "its store"
    out = [(fetcher.where, f"the fetched issuer completes the chain to '{root}' ({completed})")]
    for r in lacking:
        if r.address.aia is not None:
            out.append((r.where, f"its own fetch still fails ({r.address.aia.verdict})"))
        else:
            by_set: dict[str, list[str]] = {}
            for t in r.result.trust_stores:
                if t.fingerprint:
                    by_set.setdefault(t.fingerprint, []).append(t.name)
            sets = "; ".join(f"{', '.join(names)}: sha256 {fp[:12]}" for fp, names in by_set.items())
            out.append((r.where, f"no store with that root set ({sets})"))
    return tuple(out)


def _signer_with_other_key_id(row: Row, shape: ChainShape) -> CertSummary | None:
    """A served certificate that signed the walk's top under the name it names, while the top's Authority Key
    Identifier names another key: OpenSSL links by key identifier first, so it never tries that signature."""
    top = shape.top
    if not top.authority_key_id:
        return None
    by_fp = {fingerprint(der): der for der in row.address.chain}
    child_der = by_fp.get(top.sha256)
    if child_der is None:
        return None
    try:
        child = parse_der(child_der)
    except CertificateParseError:
        return None
    for cert in row.certificates():
        if cert.sha256 == top.sha256 or cert.subject != top.issuer or cert.subject_key_id == top.authority_key_id:
            continue
        try:
            child.verify_directly_issued_by(parse_der(by_fp[cert.sha256]))
        except (CertificateParseError, InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return cert
    return None


def _key_id_mismatch(
    observation: Observation, settings: DiagnosisSettings, rows: list[Row], shape: ChainShape, signer: CertSummary
) -> Finding:
    top = shape.top
    role = "leaf" if len(shape.path) == 1 else "certificate"
    failing = [r for r in rows if r.address.native.verdict in TRUST_FAILURES]
    addresses = _addresses(rows)
    verdicts = ", ".join(sorted({str(r.address.native.verdict) for r in failing}))
    impact = f"{name_list(_agents(failing))} cannot verify it ({verdicts})" if failing else "stricter clients fail"
    summary = (
        f"The {role} {_label(top)} served for {observation.target} at {', '.join(addresses)} was signed by the "
        f"served {_label(signer)}, but its Authority Key Identifier (key id {top.authority_key_id}) names another "
        f"key than that CA's Subject Key Identifier ({signer.subject_key_id or 'absent'}): OpenSSL links a "
        f"certificate to its issuer by key identifier before it checks the signature, so it finds no issuer; "
        f"{impact}. No certificate is missing: the {role} itself is malformed."
    )
    first = (failing or rows)[0]
    port = observation.request.target.port
    return Finding(
        cause=Cause.MALFORMED_CERTIFICATE,
        severity=Severity.CRITICAL if failing else Severity.WARNING,
        summary=summary,
        agents=_agents(failing or rows),
        addresses=addresses,
        evidence=(
            Evidence(
                "key identifiers",
                (
                    (f"{role} {top.short_fingerprint}", f"authorityKeyIdentifier {top.authority_key_id}"),
                    (f"issuer {signer.short_fingerprint}", f"subjectKeyIdentifier {signer.subject_key_id or 'absent'}"),
                ),
            ),
            Evidence("served chain", tuple((r.where, _chain_text(r)) for r in rows)),
            Evidence("verdicts", tuple((r.where, _store_verdicts(r)) for r in rows)),
        ),
        fix=(
            f"Reissue '{top.subject}' from '{signer.subject}' with an Authority Key Identifier equal to its Subject "
            "Key Identifier, and fix the CA software or template that wrote the wrong one; serving other "
            "certificates does not help."
        ),
        reproduce=(
            save_chain(first.address.address, port, first.result.sni),
            "openssl crl2pkcs7 -nocrl -certfile chain.pem | openssl pkcs7 -print_certs -text -noout | "
            "grep -A1 -E 'Subject:|Key Identifier'",
            verify_at(settings.reference_time, None),
        ),
    )


def _holders(observation: Observation, shape: ChainShape) -> tuple[tuple[str, str], ...]:
    """Where a store's verified path passes through the missing issuer: the store supplied it."""
    missing = shape.held[0]
    seen = {c.sha256: c for c in shape.issuer_seen}
    what = _label(seen[missing]) if missing in seen else f"sha256 {missing[:12]}"
    out: dict[str, list[str]] = {}
    for row in observation.rows_with_chain:
        for verdict in row.address.stores:
            if missing in verdict.verified_path:
                out.setdefault(row.where, []).append(verdict.store)
    return tuple((where, f"{what} from the store {', '.join(stores)}") for where, stores in out.items())


def _unrelated(observation: Observation, rows: list[Row], shape: ChainShape) -> Finding:
    """A complete chain that also carries certificates on no path: harmless to OpenSSL, worth tidying."""
    addresses = _addresses(rows)
    extra = ", ".join(_label(c) for c in shape.unrelated)
    n = len(shape.unrelated)
    summary = (
        f"{observation.target} at {', '.join(addresses)} also serves {extra}, which "
        f"{'is' if n == 1 else 'are'} on no path from the leaf {_label(shape.path[0])}: clients ignore "
        f"{'it' if n == 1 else 'them'}, but {'it costs' if n == 1 else 'they cost'} bytes in every handshake "
        "and usually means a stale certificate was left in the chain file."
    )
    return Finding(
        cause=Cause.UNRELATED_CERTIFICATE,
        severity=Severity.INFO,
        summary=summary,
        agents=_agents(rows),
        addresses=addresses,
        evidence=(
            Evidence("served chain", tuple((r.where, _chain_text(r)) for r in rows)),
            Evidence("on no path", tuple((_label(c), f"issuer '{c.issuer}'") for c in shape.unrelated)),
        ),
        fix=(
            f"Remove {extra} from the chain file of {', '.join(addresses)}: send the leaf, then its issuers in order, "
            "up to (not including) the root."
        ),
        reproduce=(save_chain(rows[0].address.address, observation.request.target.port, rows[0].result.sni),),
    )


def _untrusted(observation: Observation, settings: DiagnosisSettings, rows: list[Row], shape: ChainShape) -> Finding:
    top = shape.top
    addresses = _addresses(rows)
    agents = _agents(rows)
    where = f"{observation.target} at {', '.join(addresses)}"
    stores = sum(len(r.address.stores) for r in rows)
    nobody = f"no vantage trusts it ({count(len(agents), 'vantage')}, {count(stores, 'store verdict')})"
    if shape.shape is Shape.SELF_SIGNED and len(shape.path) == 1:
        summary = f"{where} serves the self-signed certificate {_label(top)}, and {nobody}."
        fix = (
            "Replace it with a certificate from a CA the clients trust (a public ACME CA, or your private CA whose "
            "root is distributed); if this self-signed certificate is intended, add it to every client's trust store."
        )
        root = top.subject
    elif shape.shape is Shape.SELF_SIGNED:
        summary = f"{where} serves a chain ending in the self-signed root {_label(top)}, and {nobody}."
        root = top.subject
        fix = (
            f"If '{root}' is your private CA, distribute it to the clients' trust stores (copy it to "
            "/usr/local/share/ca-certificates/ and run update-ca-certificates, or build it into the image); "
            "otherwise reissue the certificate from a CA the clients trust."
        )
    else:
        summary = (
            f"{where} serves a chain that leads to the root '{top.issuer}' (not served, as usual for a root), "
            f"and {nobody}."
        )
        root = top.issuer
        fix = (
            f"If '{root}' is your private CA, distribute its root certificate to the clients' trust stores (copy "
            "it to /usr/local/share/ca-certificates/ and run update-ca-certificates, or build it into the image); "
            f"otherwise reissue the certificate from a CA the clients trust. If '{root}' is an intermediate rather "
            "than a root, the server must serve it too."
        )
    trust_stores = [
        (r.agent, f"{ts.name} {ts.path}: {count(ts.root_count, 'root')}, sha256 {ts.fingerprint[:12]}")
        for r in {r.agent: r for r in rows}.values()
        for ts in r.result.trust_stores
    ]
    evidence = [
        Evidence("chain root", (("served chain", root),)),
        Evidence("served chain", tuple((r.where, _chain_text(r)) for r in rows)),
        Evidence("verdicts", tuple((r.where, _store_verdicts(r)) for r in rows)),
    ]
    if trust_stores:
        evidence.append(Evidence("trust stores", tuple(trust_stores)))
    first = rows[0]
    port = observation.request.target.port
    return Finding(
        cause=Cause.UNTRUSTED_CHAIN,
        severity=Severity.CRITICAL,
        summary=summary,
        agents=agents,
        addresses=addresses,
        evidence=tuple(evidence),
        fix=fix,
        reproduce=(
            save_chain(first.address.address, port, first.result.sni),
            verify_at(settings.reference_time, None),
        ),
    )
