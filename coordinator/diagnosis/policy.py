"""Chains that break a verification policy (POLICY_INVALID_CHAIN): a path exists, or would, but OpenSSL
refuses a certificate on it: a weak digest (68), a weak key (66 leaf, 67 CA), an issuer that is not a
CA (79; 24 in OpenSSL 1.1; 32 keyUsage without keyCertSign), an unhandled critical extension (34), a
chain too long (22), a path length constraint exceeded (25), a purpose other than TLS server (26), a
signature that does not verify (7), or any other code OpenSSL files as a policy violation; a revoked
certificate (23) or a code the agent could not classify is told here too, by its code, so that a chain
OpenSSL refuses is never met with silence.

What decides is the OpenSSL verify code (native, the python view, every store verdict), never the text
beside it. The certificate to blame is found in the served certificates by the fact the code names
(the signature algorithm, the key, basicConstraints and keyUsage, the critical extensions, the path
length constraint, the extendedKeyUsage); where the culprit is the root, which servers do not send, the
finding says so. Severity: critical when a host's default clients (native or python view) refuse now; a
warning when only another store refuses and that store is in use (`store_use`), info otherwise.

Where OpenSSL accepts but the CA/Browser Forum profile that browsers and Go apply would refuse (the
agent's `strict_note`), this is at most one info note per served chain, naming the reason.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from ...agent.model import Client, Failure, TrustStore, Verdict
from ...agent.trust.certinfo import CertificateParseError, parse_der, unhandled_critical
from ...agent.trust.purpose import server_purpose_refusal
from ...agent.trust.strict_profile import key_description
from ..observation import DiagnosisSettings, Observation, Row
from .model import Cause, Evidence, Finding, Severity
from .reproduce import save_chain, verify_at
from .store_use import is_system_store, store_use
from .wording import agree, name_list

__all__ = ["POLICY_CODES", "findings", "is_policy_refusal", "violation_kind"]

# OpenSSL's X509_V_ERR codes this module words (OpenSSL 3 numbering, 24 as 1.1 numbered "invalid CA").
SIGNATURE_FAILURE = 7
CHAIN_TOO_LONG = 22
CERT_REVOKED = 23
INVALID_CA_1_1 = 24
PATH_LENGTH_EXCEEDED = 25
INVALID_PURPOSE = 26
KEYUSAGE_NO_CERTSIGN = 32
UNHANDLED_CRITICAL_EXTENSION = 34
# Name constraints: a name outside the permitted subtrees, inside an excluded one, or a constraint OpenSSL cannot apply.
PERMITTED_VIOLATION = 47
EXCLUDED_VIOLATION = 48
SUBTREE_MINMAX = 49
UNSUPPORTED_CONSTRAINT_TYPE = 51
UNSUPPORTED_CONSTRAINT_SYNTAX = 52
UNSUPPORTED_NAME_SYNTAX = 53
EE_KEY_TOO_SMALL = 66
CA_KEY_TOO_SMALL = 67
CA_MD_TOO_WEAK = 68
INVALID_CA = 79

_KINDS: dict[int, str] = {
    SIGNATURE_FAILURE: "signature",
    CERT_REVOKED: "revoked",
    CHAIN_TOO_LONG: "chain_too_long",
    INVALID_CA_1_1: "invalid_ca",
    PATH_LENGTH_EXCEEDED: "path_length",
    INVALID_PURPOSE: "purpose",
    KEYUSAGE_NO_CERTSIGN: "invalid_ca",
    UNHANDLED_CRITICAL_EXTENSION: "critical_extension",
    EE_KEY_TOO_SMALL: "leaf_key",
    CA_KEY_TOO_SMALL: "ca_key",
    CA_MD_TOO_WEAK: "weak_digest",
    INVALID_CA: "invalid_ca",
    **dict.fromkeys(
        (
            PERMITTED_VIOLATION,
            EXCLUDED_VIOLATION,
            SUBTREE_MINMAX,
            UNSUPPORTED_CONSTRAINT_TYPE,
            UNSUPPORTED_CONSTRAINT_SYNTAX,
            UNSUPPORTED_NAME_SYNTAX,
        ),
        "name_constraints",
    ),
}
POLICY_CODES = frozenset(_KINDS)
# Codes that are not about policy even where OpenSSL's verdict reads "invalid" (1: could not judge at all).
_NOT_POLICY = frozenset({0, 1})
# Verdicts whose codes no other rule words: told here by their code.
_OTHER_REFUSALS = frozenset({Verdict.INVALID, Verdict.REVOKED, Verdict.OTHER})

_WEAK_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_MD5,
        SignatureAlgorithmOID.RSA_WITH_SHA1,
        SignatureAlgorithmOID._RSA_WITH_SHA1,
        SignatureAlgorithmOID.ECDSA_WITH_SHA1,
        SignatureAlgorithmOID.DSA_WITH_SHA1,
    }
)


def violation_kind(code: int) -> str:
    """What an OpenSSL verify code refuses, as this module groups them ("code:N" for the others)."""
    return _KINDS.get(code, f"code:{code}")


def is_policy_refusal(verdict: Verdict, code: int) -> bool:
    """A verdict and verify code that this module explains: a path that breaks a verification policy, or
    any other refusal no rule words (a revoked certificate, a code the agent could not classify), so that a
    rejected chain is never silent."""
    return code in POLICY_CODES or (verdict in _OTHER_REFUSALS and code not in _NOT_POLICY)


@dataclass(frozen=True)
class _Refusal:
    """A client on one row refusing the chain for a policy reason (the OpenSSL code says which)."""

    row: Row
    client: str  # "native", "python", or the store's name
    code: int

    @property
    def now(self) -> bool:
        """The host's default clients refuse (not only a store judged offline)."""
        return self.client in ("native", "python")


def _refusals(row: Row) -> list[_Refusal]:
    out: list[_Refusal] = []
    native = row.address.native
    if is_policy_refusal(native.verdict, native.verify_code):
        out.append(_Refusal(row, "native", native.verify_code))
    for view in row.address.views:
        if view.client is Client.PYTHON and is_policy_refusal(view.verdict, view.verify_code):
            out.append(_Refusal(row, "python", view.verify_code))
    for store in row.address.stores:
        if is_policy_refusal(store.at_reference_time, store.reference_verify_code):
            out.append(_Refusal(row, store.store, store.reference_verify_code))
        elif is_policy_refusal(store.at_agent_time, store.verify_code):
            out.append(_Refusal(row, store.store, store.verify_code))
    return out


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in observation.rows_with_chain:
        groups.setdefault(row.chain_fingerprints, []).append(row)
    for rows in groups.values():
        by_kind: dict[str, list[_Refusal]] = {}
        for row in rows:
            for refusal in _refusals(row):
                by_kind.setdefault(violation_kind(refusal.code), []).append(refusal)
        for kind, refusals in by_kind.items():
            yield _policy_finding(observation, settings, rows, kind, refusals)
        note = _strict_finding(observation, rows, refused={r.row.where for rs in by_kind.values() for r in rs})
        if note is not None:
            yield note


# --- the certificates ---------------------------------------------------------------------------


def _parsed(row: Row) -> list[x509.Certificate]:
    out = []
    for der in row.address.chain:
        try:
            out.append(parse_der(der))
        except CertificateParseError:
            continue
    return out


def _linked(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The served certificates linked from the leaf by name (as served chains are walked), leaf first."""
    if not certs:
        return []
    path = [certs[0]]
    left = list(certs[1:])
    while path[-1].subject != path[-1].issuer:
        nxt = next((c for c in left if c.subject == path[-1].issuer), None)
        if nxt is None:
            break
        path.append(nxt)
        left.remove(nxt)
    return path


def _name(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}'"


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _above_top(path: Sequence[x509.Certificate]) -> str:
    """The unsent certificate above the served path, as the path's top names it."""
    top = path[-1]
    return f"'{top.issuer.rfc4514_string()}' (not served: usually the root)" if not _self_issued(top) else ""


@dataclass(frozen=True)
class _Violation:
    """One certificate's breach of a policy, worded for the summary and its fix."""

    what: str  # the violation, naming the certificate: a clause for the summary
    culprit: str  # the certificate's name, or the place it must be
    fix: str


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", "")
    return name if name and name != "Unknown OID" else oid.dotted_string


def _digest_name(cert: x509.Certificate) -> str:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    return algorithm.name.upper().replace("SHA", "SHA-") if algorithm is not None else "a weak digest"


def _weak_digest(path: Sequence[x509.Certificate]) -> _Violation | None:
    signed = path[:-1] if len(path) > 1 and _self_issued(path[-1]) else path  # an anchor's own signature is not used
    weak = [c for c in signed if c.signature_algorithm_oid in _WEAK_SIGNATURES]
    if not weak:
        return None
    cert = weak[0]
    return _Violation(
        what=f"{_name(cert)} is signed with {_digest_name(cert)} ({_signature_name(cert)}), a digest OpenSSL refuses",
        culprit=_name(cert),
        fix=(
            f"Have '{cert.issuer.rfc4514_string()}' sign {_name(cert)} again with SHA-256 (reissue it); SHA-1 and "
            "MD5 signatures are refused by OpenSSL at security level 1 and above, and by every browser."
        ),
    )


# OpenSSL's security levels, each with the smallest RSA (or DSA) and EC key it accepts; level 2 is the default.
_LEVELS = ((1, 1024, 160), (2, 2048, 224), (3, 3072, 256), (4, 7680, 384), (5, 15360, 512))
_CURVE_AT_LEAST = {160: "P-256", 224: "P-256", 256: "P-256", 384: "P-384", 512: "P-521"}


def _refused_from(cert: x509.Certificate) -> int | None:
    """The lowest OpenSSL security level that refuses the certificate's key; None when none does or the key
    is of another kind (Ed25519: 128 bits, refused from level 4, is not told apart here)."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        return next((level for level, rsa_bits, _ in _LEVELS if key.key_size < rsa_bits), None)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return next((level for level, _, ec_bits in _LEVELS if key.curve.key_size < ec_bits), None)
    return None


def _key_needed(refused_from: int | None) -> str:
    """The key to reissue with, for a key refused from `refused_from` on: the default level's need when that
    covers it, else what that level and the next need (which one the host runs is not known here)."""
    if refused_from is None or refused_from <= 2:
        return "an RSA key of at least 2048 bits or an ECDSA P-256 key"
    needs = [
        f"at least {rsa_bits} bits of RSA or ECDSA {_CURVE_AT_LEAST[ec_bits]} at security level {level}"
        for level, rsa_bits, ec_bits in _LEVELS
        if level in (refused_from, refused_from + 1)
    ]
    return f"a key the host's security level (CipherString @SECLEVEL) accepts: {' and '.join(needs)}"


def _refusal_note(refused_from: int | None) -> str:
    return f" (refused from security level {refused_from} on)" if refused_from is not None and refused_from > 2 else ""


def _a(words: str) -> str:
    """The indefinite article for key descriptions, read as letters: 'an RSA 1024', 'an EC secp224r1', 'a DSA 1024'."""
    return f"an {words}" if words[:1] in "AEFHILMNORSX" else f"a {words}"


def _leaf_key(path: Sequence[x509.Certificate]) -> _Violation:
    leaf = path[0]
    key = key_description(leaf) or "its key"
    level = _refused_from(leaf)
    return _Violation(
        what=f"the leaf {_name(leaf)} has {_a(key)} key, too small for OpenSSL's security level{_refusal_note(level)}",
        culprit=_name(leaf),
        fix=(
            f"Reissue the leaf {_name(leaf)} with {_key_needed(level)} (a new key and a new certificate: the key "
            "size cannot be changed in place)."
        ),
    )


def _ca_key(path: Sequence[x509.Certificate]) -> _Violation:
    # The CA refused at the lowest level is the one the host's level refuses first.
    weak = sorted((level, i) for i, c in enumerate(path[1:], start=1) if (level := _refused_from(c)) is not None)
    if weak:
        level, index = weak[0]
        ca = path[index]
        return _Violation(
            what=(
                f"the CA {_name(ca)} has {_a(key_description(ca))} key, too small for OpenSSL's security level"
                f"{_refusal_note(level)}"
            ),
            culprit=_name(ca),
            fix=f"Replace the CA {_name(ca)} with one whose key is {_key_needed(level)}, and reissue the certificates "
            "it signed.",
        )
    above = _above_top(path) or "a CA certificate of the path"
    return _Violation(
        what=f"a CA key on the path is too small for OpenSSL's security level: {above}",
        culprit=above,
        fix=f"Replace that CA with one whose key is {_key_needed(None)}, and reissue below it.",
    )


def _not_a_ca(cert: x509.Certificate) -> str:
    if cert.version is x509.Version.v1 and cert.issuer != cert.subject:
        # OpenSSL takes a v1 certificate as a CA only when it is a self-signed trust anchor.
        return "is an X.509 v1 certificate, which has no basicConstraints: OpenSSL accepts v1 CAs only as roots"
    bc = _ext(cert, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints):
        return "has no basicConstraints"
    if not bc.ca:
        return "says CA:FALSE in its basicConstraints"
    ku = _ext(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        return "has a keyUsage without keyCertSign"
    return ""


def _invalid_ca(path: Sequence[x509.Certificate], code: int) -> _Violation | None:
    for cert in path[1:]:
        why = _not_a_ca(cert)
        if why:
            return _Violation(
                what=f"{_name(cert)} issues certificates but is not a CA: it {why}",
                culprit=_name(cert),
                fix=(
                    f"Reissue {_name(cert)} as a CA (basicConstraints CA:TRUE, critical; keyUsage keyCertSign and "
                    "cRLSign) and have it sign the leaf again, or serve the intermediate that really is the CA."
                ),
            )
    if code == INVALID_CA_1_1:
        return None  # OpenSSL 3's 24 (no issuer public key), when no certificate shows an invalid CA
    above = _above_top(path) or "a certificate of the path"
    return _Violation(
        what=f"a certificate that issues others is not a CA OpenSSL accepts: {above}",
        culprit=above,
        fix="Reissue that certificate as a CA (basicConstraints CA:TRUE, keyUsage keyCertSign).",
    )


def _critical_extension(path: Sequence[x509.Certificate]) -> _Violation | None:
    for cert in path:
        unknown = unhandled_critical(cert)
        if unknown:
            names = ", ".join(
                o.dotted_string
                if getattr(o, "_name", "Unknown OID") == "Unknown OID"
                else f"{o._name} ({o.dotted_string})"
                for o in unknown
            )
            return _Violation(
                what=f"{_name(cert)} carries the critical extension {names}, which OpenSSL does not handle",
                culprit=_name(cert),
                fix=f"Reissue {_name(cert)} without {names}, or with it marked non-critical.",
            )
    return None


def _path_length(path: Sequence[x509.Certificate]) -> _Violation | None:
    for index, ca in enumerate(path[1:], start=1):
        bc = _ext(ca, x509.BasicConstraints)
        if not isinstance(bc, x509.BasicConstraints) or bc.path_length is None:
            continue
        below = sum(1 for c in path[1:index] if not _self_issued(c))
        if below > bc.path_length:
            return _Violation(
                what=(
                    f"{_name(ca)} allows {bc.path_length} CA certificate(s) below it (pathLenConstraint) and the path "
                    f"has {below}"
                ),
                culprit=_name(ca),
                fix=(
                    f"Issue the leaf from a CA within the path length limit of {_name(ca)}, or reissue {_name(ca)} "
                    "with a larger pathLenConstraint."
                ),
            )
    above = _above_top(path)
    if not above:
        return None
    return _Violation(
        what=f"a path length constraint above the served chain is exceeded: {above}",
        culprit=above,
        fix="Issue the leaf from a CA within that CA's path length limit, or reissue that CA with a larger limit.",
    )


def _purpose(path: Sequence[x509.Certificate]) -> _Violation | None:
    for index, cert in enumerate(path):
        why = server_purpose_refusal(cert, leaf=index == 0)
        if not why:
            continue
        role = "the leaf" if index == 0 else "the CA"
        return _Violation(
            what=f"{role} {_name(cert)} is not for TLS servers: {why}",
            culprit=_name(cert),
            fix=_purpose_fix(cert, why),
        )
    return None


def _purpose_fix(cert: x509.Certificate, why: str) -> str:
    if "nsCertType" in why:
        return f"Reissue {_name(cert)} without the Netscape nsCertType extension (or with SSL server in it)."
    if "keyUsage" in why and "extendedKeyUsage" not in why:
        return f"Reissue {_name(cert)} with keyUsage digitalSignature (and keyEncipherment for an RSA key exchange)."
    return f"Reissue {_name(cert)} with extendedKeyUsage serverAuth (keep clientAuth beside it if needed)."


def _bad_signature(path: Sequence[x509.Certificate]) -> _Violation | None:
    for child, issuer in itertools.pairwise(path):
        try:
            child.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return _Violation(
                what=f"the signature of {_name(child)} does not verify with the key of {_name(issuer)}",
                culprit=_name(child),
                fix=(
                    f"Serve the issuer that really signed {_name(child)}: {_name(issuer)} has the same name but "
                    "another key (a re-keyed CA, or a chain file assembled from two generations)."
                ),
            )
    return None


def _name_constraints(path: Sequence[x509.Certificate], code: int) -> _Violation | None:
    """The CA whose nameConstraints the path breaks, and the names that break them: OpenSSL checks every
    certificate below a constrained CA (its subject, its subjectAltNames; the leaf's CN when it looks like a
    host name and no DNS SAN is there) against the constraints of each CA above it."""
    has = [
        (i, ca) for i, ca in enumerate(path) if i and isinstance(_ext(ca, x509.NameConstraints), x509.NameConstraints)
    ]
    if not has:
        return _unserved_constraints(path, code)
    breaking = [(ca, bad) for i, ca in has if (bad := _names_breaking(path[:i], _constraints(ca), code))]
    constrained, bad = breaking[0] if breaking else (has[0][1], [])
    constraints = _constraints(constrained)
    permitted = ", ".join(_subtree(n) for n in constraints.permitted_subtrees or ()) or "none"
    excluded = ", ".join(_subtree(n) for n in constraints.excluded_subtrees or ()) or "none"
    which = name_list(bad) if bad else "a name below it"
    verb = "is" if len(bad) <= 1 else "are"
    broken = {
        PERMITTED_VIOLATION: f"{which} {verb} outside the names it permits",
        EXCLUDED_VIOLATION: f"{which} {verb} inside a subtree it excludes",
    }.get(code, _unapplied(path[: path.index(constrained)], constraints))
    if code == PERMITTED_VIOLATION and bad:
        fix = (
            f"Issue the certificate from {_name(constrained)} only for names inside {permitted}, or from a CA whose "
            f"constraints permit {name_list(bad)} (or none at all); reissuing {_name(constrained)} with permitted "
            "subtrees that cover them works too."
        )
    elif code == EXCLUDED_VIOLATION and bad:
        fix = (
            f"{_name(constrained)} excludes {excluded}: issue the certificate for {name_list(bad)} from another CA, "
            "or leave those names out of it."
        )
    elif code == UNSUPPORTED_CONSTRAINT_TYPE and "OpenSSL does not apply" in broken:
        fix = (
            f"Reissue {_name(constrained)} without the constraint forms OpenSSL does not apply (keep DNS, IP, email, "
            "URI and directory name subtrees), or issue the certificate without names of those forms."
        )
    else:
        fix = (
            f"Issue the certificate from a CA whose name constraints cover its names, or reissue {_name(constrained)} "
            "with constraints that cover them (the leaf's SANs, and its subject CN where it is a name)."
        )
    return _Violation(
        what=f"{_name(constrained)} is name-constrained (permitted: {permitted}; excluded: {excluded}) and {broken}",
        culprit=_name(constrained),
        fix=fix,
    )


def _unapplied(below: Sequence[x509.Certificate], constraints: x509.NameConstraints) -> str:
    """Words for 51-53: the constraint forms OpenSSL does not apply (any otherName but SmtpUTF8Mailbox,
    registeredID) that a name below is of, else the syntax of a name or a constraint it cannot read."""
    subtrees = [*(constraints.permitted_subtrees or ()), *(constraints.excluded_subtrees or ())]
    unhandled = [t for t in subtrees if isinstance(t, x509.OtherName | x509.RegisteredID)]
    names = [n for i, c in enumerate(below) for n in _checked_names(c, leaf=i == 0)]
    met = [_subtree(t) for t in unhandled if any(type(n) is type(t) for n in names)]
    if met:
        return (
            f"a name below it is of a form its constraints cover ({name_list(met)}) that OpenSSL does not apply, "
            "so it cannot tell whether the name is inside"
        )
    return "OpenSSL cannot apply its constraints to the names below it (a name form or syntax it does not handle)"


def _unserved_constraints(path: Sequence[x509.Certificate], code: int) -> _Violation | None:
    """No served CA has nameConstraints: the CA that has them is above the served chain (the root)."""
    above = _above_top(path)
    if not above or code not in (PERMITTED_VIOLATION, EXCLUDED_VIOLATION):
        return None
    which = "outside the names it permits" if code == PERMITTED_VIOLATION else "inside a subtree it excludes"
    names = name_list([_shown(n) for n in _checked_names(path[0], leaf=True)]) or "none"
    return _Violation(
        what=f"{above} carries name constraints, and a name of the chain (the leaf's: {names}) is {which}",
        culprit=above,
        fix=(
            f"Read the constraints of {above} (`openssl x509 -noout -ext nameConstraints` on it in the trust store) "
            "and issue the certificate from a CA whose constraints cover its names."
        ),
    )


def _constraints(ca: x509.Certificate) -> x509.NameConstraints:
    found = _ext(ca, x509.NameConstraints)
    assert isinstance(found, x509.NameConstraints)
    return found


def _checked_names(cert: x509.Certificate, *, leaf: bool) -> list[x509.GeneralName]:
    """The names OpenSSL holds against name constraints: the subject (as a directory name) and the
    subjectAltNames; for the leaf without DNS SANs, a subject CN that looks like a host name too."""
    names: list[x509.GeneralName] = []
    if len(cert.subject):
        names.append(x509.DirectoryName(cert.subject))
    san = _ext(cert, x509.SubjectAlternativeName)
    sans = list(san) if isinstance(san, x509.SubjectAlternativeName) else []
    names.extend(sans)
    if leaf and not any(isinstance(n, x509.DNSName) for n in sans):
        for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
            cn = str(attribute.value)
            if "." in cn and all(c.isalnum() or c in "-_.*" for c in cn):
                names.append(x509.DNSName(cn))
    return names


def _names_breaking(below: Sequence[x509.Certificate], constraints: x509.NameConstraints, code: int) -> list[str]:
    """The names of the certificates below a CA that its constraints refuse the way `code` says: outside
    every permitted subtree of their form (47), or inside an excluded one (48)."""
    out: list[str] = []
    for index, cert in enumerate(below):
        for name in _checked_names(cert, leaf=index == 0):
            if code == PERMITTED_VIOLATION:
                of_form = [t for t in constraints.permitted_subtrees or () if type(t) is type(name)]
                refused = bool(of_form) and not any(_within(name, t) is True for t in of_form)
            elif code == EXCLUDED_VIOLATION:
                refused = any(_within(name, t) is True for t in constraints.excluded_subtrees or ())
            else:
                refused = False
            if refused and isinstance(name, _TOLD_FORMS):
                out.append(_shown(name, cn=index == 0 and _is_cn(cert, name)))
    return list(dict.fromkeys(out))


# The name forms `_within` compares; a name of another form (otherName) is not named.
_TOLD_FORMS = (x509.DNSName, x509.IPAddress, x509.DirectoryName, x509.UniformResourceIdentifier, x509.RFC822Name)


def _is_cn(cert: x509.Certificate, name: x509.GeneralName) -> bool:
    san = _ext(cert, x509.SubjectAlternativeName)
    return isinstance(name, x509.DNSName) and not (isinstance(san, x509.SubjectAlternativeName) and name in san)


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool | None:
    """Whether `name` lies in `subtree` as OpenSSL's nc_match compares them; None for forms not told here."""
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        dns, base = name.value.lower(), subtree.value.lower()
        if not base:
            return True
        if len(dns) > len(base):
            # Labels may be added on the left: "a.example" is in "example", and in ".example" too.
            return dns.endswith(base) and (base.startswith(".") or dns[-len(base) - 1] == ".")
        return dns == base
    if isinstance(name, x509.UniformResourceIdentifier) and isinstance(subtree, x509.UniformResourceIdentifier):
        # OpenSSL compares the URI's host: the constraint's host itself, or, with a leading dot, below it.
        host = (urlsplit(name.value).hostname or "").lower()
        base = subtree.value.lower()
        return host.endswith(base) if base.startswith(".") else host == base
    if isinstance(name, x509.RFC822Name) and isinstance(subtree, x509.RFC822Name):
        # A mailbox ("a@example"), a domain ("example": that host) or, with a leading dot, below a domain.
        mailbox, base = name.value, subtree.value
        local, _, domain = mailbox.rpartition("@")
        if "@" in base:
            base_local, _, base_domain = base.rpartition("@")
            return local == base_local and domain.lower() == base_domain.lower()
        return domain.lower().endswith(base.lower()) if base.startswith(".") else domain.lower() == base.lower()
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        address, network = name.value, subtree.value
        if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return None
        return isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) and address in network
    if isinstance(name, x509.DirectoryName) and isinstance(subtree, x509.DirectoryName):
        rdns, base_rdns = list(name.value.rdns), list(subtree.value.rdns)
        fold = [sorted((a.oid.dotted_string, str(a.value).casefold()) for a in r) for r in rdns]
        base_fold = [sorted((a.oid.dotted_string, str(a.value).casefold()) for a in r) for r in base_rdns]
        return fold[: len(base_fold)] == base_fold
    return None


def _shown(name: x509.GeneralName, *, cn: bool = False) -> str:
    if isinstance(name, x509.DirectoryName):
        return f"the subject '{name.value.rfc4514_string()}'"
    if isinstance(name, x509.UniformResourceIdentifier | x509.RFC822Name):
        return _subtree(name)
    if cn:
        return f"{name.value} (its subject CN, which OpenSSL checks when there is no DNS SAN)"
    return str(name.value)


def _subtree(name: x509.GeneralName) -> str:
    """A subtree as written, its form named where it is not a DNS name, an IP range or a directory name."""
    if isinstance(name, x509.OtherName):
        return f"otherName {name.type_id.dotted_string}"
    if isinstance(name, x509.RegisteredID):
        return f"registeredID {name.value.dotted_string}"
    value = name.value
    shown = str(value) if not isinstance(value, x509.Name) else value.rfc4514_string()
    label = {x509.UniformResourceIdentifier: "URI ", x509.RFC822Name: "email "}.get(type(name), "")
    return f"{label}{shown}"


def _chain_too_long(path: Sequence[x509.Certificate], served: int) -> _Violation:
    return _Violation(
        what=f"the path has {max(len(path), served)} certificates or more, beyond OpenSSL's verification depth",
        culprit="the served chain",
        fix="Serve a chain with fewer intermediates, or issue the leaf from a CA nearer the root.",
    )


def _violation(kind: str, code: int, path: Sequence[x509.Certificate], served: int) -> _Violation:
    found: _Violation | None = None
    if kind == "weak_digest":
        found = _weak_digest(path)
    elif kind == "leaf_key":
        found = _leaf_key(path)
    elif kind == "ca_key":
        found = _ca_key(path)
    elif kind == "invalid_ca":
        found = _invalid_ca(path, code)
    elif kind == "critical_extension":
        found = _critical_extension(path)
    elif kind == "path_length":
        found = _path_length(path)
    elif kind == "purpose":
        found = _purpose(path)
    elif kind == "signature":
        found = _bad_signature(path)
    elif kind == "chain_too_long":
        found = _chain_too_long(path, served)
    elif kind == "name_constraints":
        found = _name_constraints(path, code)
    elif kind == "revoked":
        found = _Violation(
            what="a certificate of the path is revoked (a CRL the client loaded lists it)",
            culprit="a certificate of the path",
            fix="Reissue the revoked certificate, serve the new one, and find out why it was revoked.",
        )
    if found is not None:
        return found
    return _Violation(
        what="OpenSSL refuses a certificate of the path",  # the summary gives the code
        culprit="a certificate of the path",
        fix=(
            f"Look up OpenSSL verify code {code} (`openssl verify` names it) and reissue the certificate it names; "
            "the agents' detail in the evidence says which one."
        ),
    )


# --- POLICY_INVALID_CHAIN -----------------------------------------------------------------------


def _trust_store(row: Row, name: str) -> TrustStore | None:
    return next((t for t in row.result.trust_stores if t.name == name), None)


def _store_counts(refusal: _Refusal) -> bool:
    """A store-only refusal matters when that store is the system's or declared in use on its host, and its
    runtime refuses what OpenSSL refuses there."""
    if is_system_store(refusal.client):
        return True
    return store_use(refusal.client, _trust_store(refusal.row, refusal.client)).in_use and not _java_takes(refusal)


# Held against Java 17 (tests/agent/trust/test_runtime_clients.py and the README's list): its PKIX has no security
# level, so a SHA-1 signature or a 1024-bit RSA key under a private root, which OpenSSL's level 2 refuses
# (X509_V_ERR_EE_KEY_TOO_SMALL, CA_KEY_TOO_SMALL, CA_MD_TOO_WEAK), is what Java accepts. Agents that judge a
# Java store by its JRE's jdk.certpath.disabledAlgorithms give those codes only where Java itself refuses, and
# say so in the verdict's detail; older agents judged Java stores at OpenSSL's level.
_JAVA_TAKES = frozenset({66, 67, 68})
_JAVA_OWN_REFUSAL = "Java refuses "


def _java_takes(refusal: _Refusal) -> bool:
    use = store_use(refusal.client, _trust_store(refusal.row, refusal.client))
    if use.runtime != "java" or refusal.code not in _JAVA_TAKES:
        return False
    verdict = next((s for s in refusal.row.address.stores if s.store == refusal.client), None)
    return verdict is None or _JAVA_OWN_REFUSAL not in verdict.detail


def _refusing_store(refusal: _Refusal) -> str:
    where = f"the {refusal.client} store on {refusal.row.agent}"
    return f"openssl verify with {where} (Java itself accepts it)" if _java_takes(refusal) else where


def _chain_text(row: Row) -> str:
    return " <- ".join(f"'{c.subject}' (sha256 {c.short_fingerprint})" for c in row.certificates())


def _python_accepts(row: Row) -> bool:
    """The row carries a python view (it differs from the openssl view) that accepted the chain."""
    python = next((v for v in row.address.views if v.client is Client.PYTHON), None)
    return python is not None and python.verdict is Verdict.OK and python.failure is Failure.NONE


def _impact_now(now: Sequence[_Refusal]) -> str:
    """Who refuses now, naming the client when only one of a host's two views refuses: this finding then also
    explains why the views differ (the client views rule leaves policy refusals to it)."""
    who = tuple(dict.fromkeys(r.row.agent for r in now))
    clients = {r.client for r in now}
    if clients == {"python"}:
        return (
            f"Python's default context on {name_list(who)} refuses it while OpenSSL clients there accept it (the "
            "host's OpenSSL configuration is laxer than Python's security level)"
        )
    if clients == {"native"} and all(_python_accepts(r.row) for r in now):
        return (
            f"OpenSSL clients on {name_list(who)} refuse it while Python's default context there accepts it (the "
            "host's OpenSSL configuration is stricter than Python's)"
        )
    return f"{name_list(who)} {agree('refuse', who)} it"


def _policy_finding(
    observation: Observation,
    settings: DiagnosisSettings,
    rows: list[Row],
    kind: str,
    refusals: list[_Refusal],
) -> Finding:
    code = refusals[0].code
    path = _linked(_parsed(rows[0]))
    violation = _violation(kind, code, path, len(rows[0].address.chain))
    now = [r for r in refusals if r.now]
    refusing_rows = list({r.row.where: r.row for r in refusals}.values())
    refused = {r.where for r in refusing_rows}
    agents = tuple(dict.fromkeys(r.agent for r in refusing_rows))
    if now:
        severity = Severity.CRITICAL
        impact = _impact_now(now)
    else:
        severity = Severity.WARNING if any(_store_counts(r) for r in refusals) else Severity.INFO
        stores = list(dict.fromkeys(_refusing_store(r) for r in refusals))
        impact = f"{name_list(stores)} {agree('refuse', stores)} it while the hosts' default clients accept it"
    accepting = [r.agent for r in rows if r.where not in refused and r.address.native.verdict is not Verdict.NO_CHAIN]
    accepting = [a for a in dict.fromkeys(accepting) if a not in agents]
    also = f"; {name_list(accepting)} {agree('accept', accepting)} it" if accepting else ""
    codes = ", ".join(sorted({str(r.code) for r in refusals}, key=int))
    summary = (
        f"{observation.target}'s chain breaks OpenSSL's verification policy: {violation.what} (verify code {codes}), "
        f"so {impact}{also}."
    )
    by_row: dict[str, list[str]] = {}
    for refusal in refusals:
        by_row.setdefault(refusal.row.where, []).append(f"{refusal.client} {refusal.code}")
    detail = next(
        (
            (r.where, s.detail)
            for r in refusing_rows
            for s in r.address.stores
            if s.detail and violation_kind(s.verify_code) == kind
        ),
        None,
    )
    evidence = [
        Evidence("violation", ((violation.culprit, violation.what),)),
        Evidence("verify codes", tuple((where, ", ".join(items)) for where, items in by_row.items())),
        Evidence("served chain", tuple((r.where, _chain_text(r)) for r in refusing_rows)),
    ]
    if detail is not None:
        evidence.append(Evidence("agent detail", (detail,)))
    first = refusing_rows[0]
    port = observation.request.target.port
    reproduce = [
        save_chain(first.address.address, port, first.result.sni),
        verify_at(settings.reference_time, None),
        "openssl crl2pkcs7 -nocrl -certfile chain.pem | openssl pkcs7 -print_certs -text -noout "
        "| grep -E 'Subject:|Signature Algorithm|Public-Key|CA:|Usage|critical'",
    ]
    return Finding(
        cause=Cause.POLICY_INVALID_CHAIN,
        severity=severity,
        summary=summary,
        agents=agents,
        addresses=tuple(dict.fromkeys(r.address.address for r in refusing_rows)),
        evidence=tuple(evidence),
        fix=violation.fix,
        reproduce=tuple(reproduce),
    )


# --- the strict profile -----------------------------------------------------------------------


def _strict_finding(observation: Observation, rows: list[Row], refused: set[str]) -> Finding | None:
    """One info note for a chain OpenSSL accepts and the CA/Browser Forum profile refuses."""
    notes: dict[str, str] = {}
    for row in rows:
        if row.where in refused:
            continue
        stores = sorted(
            (s for s in row.address.stores if s.strict_note and s.verify_code == 0),
            key=lambda s: not is_system_store(s.store),
        )
        if stores:
            notes[row.where] = stores[0].strict_note
    if not notes:
        return None
    noted = [r for r in rows if r.where in notes]
    common = max(set(notes.values()), key=list(notes.values()).count)
    leaf = noted[0].leaf
    name = f" '{leaf.subject}'" if leaf is not None else ""
    return Finding(
        cause=Cause.POLICY_INVALID_CHAIN,
        severity=Severity.INFO,
        summary=(
            f"OpenSSL accepts {observation.target}'s chain{name}, but browsers and Go (the CA/Browser Forum "
            f"profile) would refuse it: {common}."
        ),
        agents=tuple(dict.fromkeys(r.agent for r in noted)),
        addresses=tuple(dict.fromkeys(r.address.address for r in noted)),
        evidence=(Evidence("strict profile", tuple(notes.items())),),
        fix=(
            "Nothing fails for OpenSSL-based clients. For browsers and Go clients, reissue the certificates the note "
            "names to the CA/Browser Forum profile: a critical basicConstraints and a keyUsage on every CA, an "
            "Authority Key Identifier and a subjectAltName on the leaf, SHA-256 or better, RSA keys of 2048 bits."
        ),
        reproduce=(save_chain(noted[0].address.address, observation.request.target.port, noted[0].result.sni),),
    )
