"""The served leaf does not cover the name clients ask for (HOSTNAME_MISMATCH, IP mismatch included).

Names are matched as OpenSSL does with Python's flags (`agent.trust.names.match_name`: subjectAltName only, a
wildcard matching exactly one left-most label of letters, digits and hyphens), as RFC 6125 and browsers do. A
server-side claim, so every answering row with a chain must be served a leaf that misses the name; when some
rows get a covering leaf, the certificates differ by address or vantage and another rule (backends, DNS,
interception) explains it.

Refinements, each with its own wording:
- a wildcard one level too shallow (`*.example.com` for `a.b.example.com`) or used for the bare domain;
- a certificate with no DNS subjectAltName whose subject CN names the host: browsers and Go reject it,
  but OpenSSL-based clients (Python's default context, curl) fall back to the CN and accept it, so
  some runtimes fail and others do not: a warning, not critical;
- an IP target without an IP SAN, or with the address written as a DNS SAN;
- a SAN that names the host with a trailing dot ("host.example."), which OpenSSL compares as written;
- a name asked with a trailing dot ("host.example.") that the leaf covers without it: OpenSSL and Python
  send and check it with the dot and refuse, curl drops the dot and accepts;
- a partial-label wildcard ("f*.example.com"), in a SAN or in the subject CN of a leaf without DNS SANs, that
  OpenSSL's own check accepts and Python, curl, browsers and Go refuse: a warning when the native clients accept
  it, critical when they refuse it too;
- a wildcard that curl's own check takes and OpenSSL does not: what it stands for holds a character other than
  a letter, a digit or a hyphen ("*.example.com" for "a_b.example.com"), or an underscore elsewhere makes the
  pattern a literal name to OpenSSL;
- a DNS SAN no client matches (empty, with a NUL or whitespace, in UTF-8 rather than A-labels), shown escaped;
- who else accepts what OpenSSL refuses, or refuses what it accepts, through the CN: curl reads the CN for an
  IP address of a certificate without SANs, and ignores the CN once a SAN lists IP addresses.

When the probe sent no SNI and a variant that did send SNI got a covering leaf, the server merely picks
another certificate for clients without SNI: the SNI rule explains that, and this one holds back.

A certificate extension that does not parse (a keyUsage that is not a BIT STRING, say) hides every other
extension from `cryptography`, the subjectAltName included. It is never read as "no SAN": names are read
past it (`extensions`), a leaf whose subjectAltName itself is malformed is not judged here at all, and
MALFORMED_CERTIFICATE names the extension and the certificate that carries it, for every vantage served
it: critical when their native clients reject the chain, a warning when OpenSSL still accepts it (stricter
parsers, Go's and browsers', refuse malformed extensions). Long SAN lists are shown by their first few.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from cryptography import x509

from ...agent.model import Verdict
from ...agent.trust.certinfo import CertificateParseError, CertSummary, fingerprint, parse_der, summarize
from ...agent.trust.names import (
    ExpectedName,
    curl_wildcard_matches,
    host_matches,
    match_name,
    openssl_wildcard_matches,
    parse_expected_name,
)
from ..observation import DiagnosisSettings, Observation, Row, rows_of
from .extensions import SAN_OID, BadExtension, covers, malformed_extensions, readable_copy
from .model import Cause, Evidence, Finding, Severity
from .reproduce import s_client, save_chain, verify_at
from .wording import capped, count, name_list

__all__ = ["Mismatch", "NameCheck", "check_name", "findings"]


class Mismatch(StrEnum):
    NONE = "none"  # covered
    NOT_LISTED = "not_listed"
    WILDCARD_TOO_DEEP = "wildcard_too_deep"
    WILDCARD_APEX = "wildcard_apex"
    CN_ONLY_ACCEPTED = "cn_only_accepted"  # no DNS SAN; the CN names the host (OpenSSL clients accept)
    CN_ONLY = "cn_only"  # no DNS SAN, and the CN does not name the host either
    IP_NO_IP_SAN = "ip_no_ip_san"
    IP_AS_DNS = "ip_as_dns"
    IP_NOT_LISTED = "ip_not_listed"
    PARTIAL_WILDCARD = "partial_wildcard"  # "f*.example.com": OpenSSL's own check accepts, Python and curl do not
    WILDCARD_CHARACTERS = "wildcard_characters"  # "*.example.com" for "a_b.example.com": curl accepts, OpenSSL not
    ODD_SAN = "odd_san"  # a DNS SAN that is empty or holds a NUL, a space, non-ASCII: no client matches it
    TRAILING_DOT = "trailing_dot"  # the SAN is "host." and OpenSSL compares it as written
    ASKED_WITH_DOT = "asked_with_dot"  # the name was asked as "host." and the leaf covers "host"


@dataclass(frozen=True)
class NameCheck:
    """Whether a leaf covers the expected name, and if not, why and how to fix it."""

    leaf: CertSummary
    kind: Mismatch
    reason: str  # why the name is not covered, as a clause ("" when covered)
    fix: str
    common_names: tuple[str, ...]

    @property
    def covered(self) -> bool:
        return self.kind is Mismatch.NONE


def _label(cert: CertSummary) -> str:
    return f"'{cert.subject}' (sha256 {cert.short_fingerprint})"


def _shown(name: str) -> str:
    """A certificate's name as printable text: one that is empty or holds a NUL, a space or another odd character
    is quoted with those escaped, so that a report shows what the certificate really says."""
    if name and name.isprintable() and not any(c.isspace() for c in name):
        return name
    escaped = "".join(c if c.isprintable() and not c.isspace() else c.encode("unicode_escape").decode() for c in name)
    return f"'{escaped}'"


def _listed(names: Sequence[str]) -> str:
    return capped([_shown(n) for n in names]) if names else "none"


def _cn_covers(cn: str, dns: str) -> bool:
    """OpenSSL's CN fallback, as Python's contexts take it: the same one-label wildcard rule as for SANs."""
    return host_matches(cn, dns, partial=False)


def _odd(name: str) -> str:
    """What makes a DNS SAN one no client matches, as a noun phrase; "" for an ordinary one."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL byte"
    if any(c.isspace() for c in name):
        return "holds whitespace"
    if not name.isascii():
        return "is not ASCII (a certificate carries internationalized names as xn-- A-labels)"
    return ""


def check_name(der: bytes, expected: ExpectedName) -> NameCheck:
    """Whether a leaf (DER) covers the expected name, and which kind of miss it is.

    Raises CertificateParseError when the bytes are not a certificate, or when its subjectAltName does not
    parse (then which names it covers cannot be read). Other malformed extensions are read past."""
    cert = parse_der(der)
    leaf = summarize(der)
    view = readable_copy(der)
    if view is not None:
        unreadable = [b for b in malformed_extensions(der) if b.oid == SAN_OID]
        if unreadable:
            raise CertificateParseError(f"its subjectAltName does not parse: {unreadable[0].error}")
        cert = parse_der(view)
        leaf = replace(summarize(view), sha256=fingerprint(der))
    cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME))
    ok, _why = match_name(cert, expected)
    if ok:
        return NameCheck(leaf, Mismatch.NONE, "", "", cns)
    if expected.absolute:
        return _asked_with_dot(der, expected, leaf, cns)
    name = str(expected)
    if expected.ip is not None:
        if name in leaf.san_dns:
            return NameCheck(
                leaf,
                Mismatch.IP_AS_DNS,
                f"it lists {name} as a DNS name, not as an IP address SAN, and clients compare an IP only with IP SANs",
                f"Reissue the certificate with subjectAltName IP:{name} (not DNS:{name}).",
                cns,
            )
        if not leaf.san_ip:
            # curl 7.x reads the CN for an address when the certificate has no subjectAltName; OpenSSL never does.
            curl = (
                f"; curl falls back to the subject CN {name} and accepts it, but OpenSSL-based clients (openssl "
                "s_client, Python's ssl module) never compare an IP address with the CN"
                if not leaf.san and name in cns
                else ""
            )
            return NameCheck(
                leaf,
                Mismatch.IP_NO_IP_SAN,
                f"the target is the IP address {name} and the certificate has no IP address in its subjectAltName "
                f"(DNS names: {_listed(leaf.san_dns)}){curl}",
                f"Reissue the certificate with subjectAltName IP:{name}, or connect by a DNS name it covers.",
                cns,
            )
        return NameCheck(
            leaf,
            Mismatch.IP_NOT_LISTED,
            f"its IP address SANs are {_listed(leaf.san_ip)}, not {name}",
            f"Reissue the certificate with subjectAltName IP:{name}, or connect to an address it lists.",
            cns,
        )
    if not leaf.san_dns:
        return _cn_only(leaf, name, cns)
    written = _as_written(leaf, name, cns)
    if written is not None:
        return written
    odd = [(p, _odd(p)) for p in leaf.san_dns if _odd(p)]
    if odd and all(_odd(p) for p in leaf.san_dns):
        pattern, what = odd[0]
        ignored = f", and with a DNS subjectAltName present clients ignore the subject CN {_listed(cns)}" if cns else ""
        return NameCheck(
            leaf,
            Mismatch.ODD_SAN,
            f"its DNS subjectAltName {_shown(pattern)} {what}: no client matches it with {name}{ignored}",
            f"Reissue the certificate with subjectAltName DNS:{name}, and fix the template or program that wrote that "
            "name.",
            cns,
        )
    labels = name.split(".")
    for pattern in leaf.san_dns:
        if not pattern.startswith("*."):
            continue
        base = pattern[2:].rstrip(".").lower()
        if name == base:
            return NameCheck(
                leaf,
                Mismatch.WILDCARD_APEX,
                f"its wildcard {pattern} covers names one label below {base}, not the bare domain {name}",
                f"Add {name} to the certificate's subjectAltName as a name of its own.",
                cns,
            )
        depth = len(base.split("."))
        if name.endswith("." + base) and len(labels) > depth + 1:
            one_level = ".".join(labels[-(depth + 1) :])
            parent = ".".join(labels[1:])
            return NameCheck(
                leaf,
                Mismatch.WILDCARD_TOO_DEEP,
                f"its wildcard {pattern} matches exactly one label, so it covers {one_level} but not {name}, "
                "a level deeper",
                f"Add {name} (or *.{parent}) to the certificate's subjectAltName; a wildcard matches a single label.",
                cns,
            )
    for pattern in leaf.san_dns:
        if curl_wildcard_matches(pattern, name):
            return _wildcard_characters(leaf, name, pattern, cns)
    odd_note = f" (the DNS subjectAltName {_shown(odd[0][0])} {odd[0][1]})" if odd else ""
    return NameCheck(
        leaf,
        Mismatch.NOT_LISTED,
        f"its names are {_listed(leaf.san)}{odd_note}",
        f"Reissue the certificate with {name} in its subjectAltName, or point clients at a name it covers.",
        cns,
    )


def _wildcard_characters(leaf: CertSummary, name: str, pattern: str, cns: tuple[str, ...]) -> NameCheck:
    """A whole-label wildcard that curl takes for the name and OpenSSL does not: what it stands for holds a
    character other than a letter, a digit or a hyphen, or the pattern is not a wildcard to OpenSSL at all."""
    first = name.split(".")[0]
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in first):
        why = (
            f"OpenSSL lets a wildcard stand for letters, digits and hyphens only, so {pattern} does not cover "
            f"{name}, whose first label {first!r} holds other characters"
        )
    else:
        why = (
            f"OpenSSL takes {_shown(pattern)} for a literal name, not a wildcard: a wildcard's other labels may hold "
            "only letters, digits and inner hyphens"
        )
    return NameCheck(
        leaf,
        Mismatch.WILDCARD_CHARACTERS,
        f"{why}; OpenSSL-based clients (openssl s_client, Python's ssl module) refuse it, while curl, whose own "
        "name check looks at no character, accepts it",
        f"Add {name} to the certificate's subjectAltName as a name of its own (or rename the host to letters, "
        "digits and hyphens: underscores are not valid in host names, and public CAs no longer issue them).",
        cns,
    )


def _cn_only(leaf: CertSummary, name: str, cns: tuple[str, ...]) -> NameCheck:
    """A leaf with no DNS subjectAltName: OpenSSL falls back to the subject CN, with the rules it has for SANs."""
    if any(_cn_covers(cn, name) for cn in cns):
        if leaf.san_ip:
            curl = (
                "Python, openssl s_client and other OpenSSL-based clients still accept the name through OpenSSL's CN "
                f"fallback; curl ignores the CN once a subjectAltName lists IP addresses ({_listed(leaf.san_ip)}), "
                "and refuses it too"
            )
        else:
            curl = "Python, curl and other OpenSSL-based clients still accept the name through their CN fallback"
        return NameCheck(
            leaf,
            Mismatch.CN_ONLY_ACCEPTED,
            f"it names {name} only in its subject CN, with no DNS subjectAltName: browsers and Go ignore the "
            f"CN and reject it, while {curl}",
            f"Reissue the certificate with subjectAltName DNS:{name}; modern clients ignore the subject CN.",
            cns,
        )
    partial = next((cn for cn in cns if openssl_wildcard_matches(cn, name)), "")
    if partial:
        parent = ".".join(name.split(".")[1:])
        return NameCheck(
            leaf,
            Mismatch.PARTIAL_WILDCARD,
            f"it has no DNS subjectAltName, and its subject CN {partial} is a wildcard inside a label: OpenSSL's own "
            "name check (openssl s_client, C programs using X509_check_host) falls back to the CN and accepts it, "
            "but Python's ssl module and curl honour a wildcard only as a whole left-most label, and browsers and Go "
            "ignore the CN: they reject it",
            f"Reissue the certificate with subjectAltName DNS:{name} (or DNS:*.{parent}); modern clients ignore the "
            "subject CN.",
            cns,
        )
    shown = repr(cns[0]) if cns else "(none)"
    ips = f" (it lists IP addresses only: {_listed(leaf.san_ip)})" if leaf.san_ip else ""
    lax = next((cn for cn in cns if curl_wildcard_matches(cn, name)), "")
    curl = (
        f" for OpenSSL-based clients (openssl s_client, Python's ssl module), which let a wildcard stand for letters, "
        f"digits and hyphens only; curl, whose own name check looks at no character, accepts {lax} for it"
        if lax and not leaf.san
        else ""
    )
    return NameCheck(
        leaf,
        Mismatch.CN_ONLY,
        f"it has no DNS subjectAltName{ips}, and its subject CN {shown} does not match {name} either{curl}",
        f"Reissue the certificate with subjectAltName DNS:{name}.",
        cns,
    )


def _asked_with_dot(der: bytes, expected: ExpectedName, leaf: CertSummary, cns: tuple[str, ...]) -> NameCheck:
    """A name asked with a trailing dot that no name of the leaf matches as written: told as such when the leaf
    covers the name without the dot, else as that name's own miss."""
    without = ExpectedName(dns=expected.dns)
    check = check_name(der, without)
    if not check.covered:
        return check
    return NameCheck(
        leaf,
        Mismatch.ASKED_WITH_DOT,
        "OpenSSL-based clients (openssl s_client, Python's ssl module) keep the dot: they send it in SNI and "
        f"compare it with the certificate's names ({_listed(leaf.san or cns)}) as written, so they refuse it "
        "(hostname mismatch), while curl drops the dot and accepts it",
        f"Ask for {without} without the trailing dot (in the URL or the client's configuration), or have the client "
        "drop it before TLS; the certificate needs no change.",
        cns,
    )


def _as_written(leaf: CertSummary, name: str, cns: tuple[str, ...]) -> NameCheck | None:
    """A SAN that names the host but not as OpenSSL compares it, or that only OpenSSL's own check accepts."""
    for pattern in leaf.san_dns:
        if pattern.endswith(".") and host_matches(pattern.rstrip("."), name, partial=False):
            return NameCheck(
                leaf,
                Mismatch.TRAILING_DOT,
                f"its subjectAltName {pattern} ends in a dot, and OpenSSL (and with it Python and openssl s_client) "
                "compares names as written, so it never matches the name without the dot (curl strips the dot and "
                "accepts it)",
                f"Reissue the certificate with subjectAltName DNS:{pattern.rstrip('.')}, without the trailing dot.",
                cns,
            )
    for pattern in leaf.san_dns:
        if openssl_wildcard_matches(pattern, name):
            parent = ".".join(name.split(".")[1:])
            return NameCheck(
                leaf,
                Mismatch.PARTIAL_WILDCARD,
                f"its wildcard {pattern} sits inside a label: OpenSSL's own name check (openssl s_client, openssl "
                "verify, C programs using X509_check_host) accepts it, but Python's ssl module, curl, browsers and "
                "Go honour a wildcard only as a whole left-most label and reject it",
                f"Reissue the certificate with {name} (or *.{parent}) in its subjectAltName; a wildcard is "
                "honoured everywhere only as the whole left-most label.",
                cns,
            )
    return None


def _check(row: Row, memo: dict[tuple[bytes, str], NameCheck | None]) -> NameCheck | None:
    """The row's name check, once per distinct leaf and name however many rows are served it."""
    key = (row.address.chain[0], row.result.expected_name)
    if key not in memo:
        try:
            memo[key] = check_name(key[0], parse_expected_name(key[1]))
        except (CertificateParseError, ValueError):
            memo[key] = None
    return memo[key]


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    rows = observation.rows_with_chain
    if not rows:
        return
    yield from _malformed(observation, settings)
    memo: dict[tuple[bytes, str], NameCheck | None] = {}
    pairs: list[tuple[Row, NameCheck]] = []
    for row in rows:
        check = _check(row, memo)
        if check is None or check.covered:
            return  # some row is covered (or cannot be judged): not a claim about the server's certificate
        pairs.append((row, check))
    if _sni_explains(observation):
        return
    yield _finding(observation, settings, pairs)


def _sni_explains(observation: Observation) -> bool:
    """No SNI was sent, and a variant that sent it got a leaf covering the name."""
    rows = observation.rows_with_chain
    if any(r.result.sni is not None for r in rows):
        return False
    try:
        expected = parse_expected_name(rows[0].result.expected_name)
    except ValueError:
        return False
    if expected.ip is not None:
        return False  # an IP target sends no SNI in any variant worth comparing
    for variant in observation.variants:
        for row in rows_of(variant.outcomes):
            if row.result.sni is None or not row.has_chain:
                continue
            if covers(row.address.chain[0], str(expected)):
                return True
    return False


def _finding(observation: Observation, settings: DiagnosisSettings, pairs: list[tuple[Row, NameCheck]]) -> Finding:
    rows = [row for row, _ in pairs]
    name = rows[0].result.expected_name
    distinct = {check.leaf.sha256: check for _, check in pairs}
    openssl_accepts = all(r.address.native.verdict is Verdict.OK for r in rows)
    lenient = all(
        c.kind is Mismatch.CN_ONLY_ACCEPTED or (c.kind is Mismatch.PARTIAL_WILDCARD and openssl_accepts)
        for c in distinct.values()
    )
    if len(distinct) == 1:
        check = next(iter(distinct.values()))
        scope = " for modern clients" if lenient else ""
        summary = (
            f"The certificate {_label(check.leaf)} served for {observation.target} does not cover {name}{scope}: "
            f"{check.reason}"
        )
        if check.kind is Mismatch.ASKED_WITH_DOT:
            summary = (
                f"The certificate {_label(check.leaf)} served for {observation.target} covers {name.rstrip('.')} but "
                f"not {name}, the name as asked, with a trailing dot: {check.reason}"
            )
    else:
        reasons = "; ".join(f"{_label(c.leaf)}: {c.reason}" for c in distinct.values())
        summary = f"None of the {len(distinct)} certificates served for {observation.target} covers {name} ({reasons})"
    no_sni = all(r.result.sni is None for r in rows) and parse_expected_name(name).ip is None
    if no_sni:
        summary += "; the probe sent no SNI, so a client that sends it may be given another certificate"
    summary += "."

    evidence = [
        Evidence("expected name", (("probe", name),)),
        Evidence("subjectAltName", tuple((row.where, _listed(check.leaf.san)) for row, check in pairs)),
    ]
    if any(not c.leaf.san_dns for c in distinct.values()):
        evidence.append(Evidence("subject CN", tuple((row.where, _listed(check.common_names)) for row, check in pairs)))
    evidence.append(
        Evidence(
            "native verdict",
            tuple(
                (
                    row.where,
                    f"{row.address.native.verdict}"
                    + ("" if row.address.native.hostname_checked else " (no name checked)"),
                )
                for row in rows
            ),
        )
    )
    fix = " ".join(dict.fromkeys(c.fix for c in distinct.values()))
    first = rows[0]
    port = observation.request.target.port
    reproduce = [
        f"{s_client(first.address.address, port, first.result.sni)} 2>/dev/null | "
        "openssl x509 -noout -subject -ext subjectAltName"
    ]
    unmatched_sni = not no_sni and parse_expected_name(name).ip is None and first.result.sni is not None
    if unmatched_sni and all(c.kind is Mismatch.NOT_LISTED for c in distinct.values()):
        # A certificate for other names altogether is often the default virtual host answering an SNI name that no
        # server block claims; the certificate for the name may well be on the server already.
        fix += (
            f" If the server already holds a certificate for {name}, the SNI name {name} matches none of its "
            "virtual hosts and its default one answered: add the name to the right one (nginx: server_name in the "
            "server block that listens on this address and port; HAProxy chooses by the names in each certificate "
            "it loads, or by the filters of a `crt-list` line, and answers any other name with the first "
            "certificate of its bind line: put the certificate in the `crt` file or directory, or give its "
            "`crt-list` line the name; the reproduce commands compare the certificate sent without SNI)."
        )
        reproduce.append(
            f"{s_client(first.address.address, port, None)} 2>/dev/null | openssl x509 -noout -subject -ext "
            "subjectAltName"
        )
    if parse_expected_name(name).ip is None:
        reproduce += [
            save_chain(first.address.address, port, first.result.sni),
            verify_at(settings.reference_time, None, name),
        ]
    return Finding(
        cause=Cause.HOSTNAME_MISMATCH,
        severity=Severity.WARNING if lenient else Severity.CRITICAL,
        summary=summary,
        agents=tuple(dict.fromkeys(r.agent for r in rows)),
        addresses=tuple(dict.fromkeys(r.address.address for r in rows)),
        evidence=tuple(evidence),
        fix=fix,
        reproduce=tuple(reproduce),
    )


# --- malformed certificates ---------------------------------------------------------------------------


def _malformed(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    """One finding per served certificate with an extension that does not parse, naming who is served it."""
    served: dict[bytes, list[tuple[Row, int]]] = {}
    bad_of: dict[bytes, tuple[BadExtension, ...]] = {}
    for row in observation.rows_with_chain:
        for position, der in enumerate(row.address.chain):
            if der not in bad_of:
                bad_of[der] = malformed_extensions(der) if row.summaries[position] is not None else ()
            if bad_of[der]:
                served.setdefault(der, []).append((row, position))
    for der, places in served.items():
        yield _malformed_finding(observation, settings, der, bad_of[der], places)


def _malformed_finding(
    observation: Observation,
    settings: DiagnosisSettings,
    der: bytes,
    bad: tuple[BadExtension, ...],
    places: list[tuple[Row, int]],
) -> Finding:
    rows = list({row.where: row for row, _ in places}.values())
    cert = rows[0].summaries[places[0][1]]
    assert cert is not None
    role = "leaf" if any(position == 0 for _, position in places) else "CA"
    agents = tuple(dict.fromkeys(r.agent for r in rows))
    everyone = len(agents) == len({r.agent for r in observation.rows_with_chain})
    names = name_list([f"{b.name}{' (critical)' if b.critical else ''}" for b in bad])
    failing = [r for r in rows if r.address.native.verdict is not Verdict.OK]
    verdicts = ", ".join(sorted({str(r.address.native.verdict) for r in failing}))
    unreadable = [b.name for b in bad if b.oid == SAN_OID]
    reads = (
        "so the names it covers cannot be read"
        if unreadable
        else "which hides its other extensions (names, key identifiers, usage) from parsers that read them together"
    )
    if failing:
        severity = Severity.CRITICAL
        impact = (
            f"the native clients of {name_list([r.agent for r in failing])} reject the chain ({verdicts}): a "
            "malformed certificate, not its name or its CA, is what fails"
        )
    else:
        severity = Severity.WARNING
        impact = (
            "OpenSSL still accepts it here, but stricter parsers (Go, browsers, rustls, Python's cryptography) "
            "refuse a certificate whose extensions do not parse"
        )
    scope = (
        f"every vantage ({count(len(agents), 'vantage')}) is served it"
        if everyone
        else f"it is served to {name_list(agents)}"
    )
    summary = (
        f"The {role} certificate '{cert.subject}' (sha256 {cert.short_fingerprint}) served for {observation.target} "
        f"has a malformed {names} extension that does not parse, {reads}; {impact}; {scope}."
    )
    first = rows[0]
    port = observation.request.target.port
    return Finding(
        cause=Cause.MALFORMED_CERTIFICATE,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in rows)),
        evidence=(
            Evidence(
                "malformed extension",
                tuple((f"{role} {cert.short_fingerprint}", f"{b.name} {b.oid}: {b.error}") for b in bad),
            ),
            Evidence("native verdict", tuple((r.where, str(r.address.native.verdict)) for r in rows)),
        ),
        fix=(
            f"Reissue the certificate '{cert.subject}' with well-formed extensions (keyUsage is a DER BIT STRING, "
            "subjectAltName a SEQUENCE of GeneralNames), and fix the template or tool that issued it; the server's "
            "configuration is not the problem."
        ),
        reproduce=(
            save_chain(first.address.address, port, first.result.sni),
            "openssl x509 -in leaf.pem -noout -text" if role == "leaf" else "openssl x509 -in chain.pem -noout -text",
            "openssl asn1parse -in leaf.pem -i",
            verify_at(settings.reference_time, None),
        ),
    )
