"""Judge a served chain offline against one trust store, as an OpenSSL client using that store would.

`cryptography.x509.verification` gives the final word on a path; its errors carry only text, and a
verdict is never read from text. So the verdict is classified from the certificates themselves, in
OpenSSL's order (OpenSSL stops at its first failure, and the native verdict of the same host must
agree with the verdict for its system store):

1. path building: no path to a store certificate gives SELF_SIGNED (18), UNTRUSTED_ROOT (19),
   LEAF_ONLY_UNVERIFIABLE (21; OpenSSL 3 reports 20 for it) or UNKNOWN_ISSUER (20);
2. chain extensions: an issuer without CA:true or keyCertSign, a path length exceeded, a leaf whose
   extendedKeyUsage excludes serverAuth gives INVALID (OpenSSL 79, 32, 25, 26);
3. the name (RFC 6125, no CN fallback, as browsers and Go; Python's default context does fall back
   to the CN of a certificate without DNS SANs) gives HOSTNAME_MISMATCH (62) or IP_MISMATCH (64);
4. signatures and validity windows, from the trust anchor down to the leaf as OpenSSL's
   internal_verify walks them, not-yet-valid before expired on each certificate: INVALID (7),
   NOT_YET_VALID (9), EXPIRED (10);
5. anything `cryptography` still rejects after all that is INVALID.

Any certificate in the store is a trust anchor (as `cryptography` and Java treat them).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, ServerVerifier, Store, VerificationError

from ..model import StoreVerdict, Verdict
from .certinfo import CertificateParseError, fingerprint, parse_der, summarize
from .names import ExpectedName, match_name, parse_expected_name, subject_alt_names
from .stores import LoadedStore

__all__ = [
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_CERTS",
    "ChainJudgement",
    "judge_against_stores",
    "verdict_from_openssl_code",
    "verify_chain",
]

MAX_CHAIN_CERTS = 16
MAX_CHAIN_BYTES = 1024 * 1024
_MAX_LINK_CHECKS = 256  # signature checks per path search: bounds a hostile pile of look-alike CAs
_JUDGEMENT_CACHE_SIZE = 4096
_ANCHOR_CACHE_SIZE = 64
_DER = Encoding.DER


@dataclass(frozen=True)
class ChainJudgement:
    verdict: Verdict
    verified_path: tuple[str, ...] = ()  # sha256 fingerprints, leaf first, trust anchor last
    detail: str = ""


# --- OpenSSL verify codes -------------------------------------------------------------------------

_CODE_VERDICTS: dict[int, Verdict] = {
    0: Verdict.OK,
    2: Verdict.UNKNOWN_ISSUER,  # unable to get issuer certificate
    9: Verdict.NOT_YET_VALID,
    10: Verdict.EXPIRED,
    18: Verdict.SELF_SIGNED,
    19: Verdict.UNTRUSTED_ROOT,
    20: Verdict.UNKNOWN_ISSUER,
    21: Verdict.LEAF_ONLY_UNVERIFIABLE,
    23: Verdict.REVOKED,
    62: Verdict.HOSTNAME_MISMATCH,
    64: Verdict.IP_MISMATCH,
}
# A path exists but breaks policy (numbers from OpenSSL 3's x509_vfy.h; 1.1 used 24 for invalid CA):
# signatures and keys (4, 6, 7, 24), malformed validity fields (13, 14), chain too long (22), path
# length, purpose, trust (25-28), key identifiers (29-31), keyCertSign (32), critical extensions (34),
# proxy certificates (37, 38, 40), digitalSignature (39), extensions and policies (41-43), name
# constraints (47-49, 51-53), path loop (55), Suite B (56-61), weak keys or digests (66-68),
# signature algorithms (76-78), CA and strict-mode checks (79-94).
_INVALID_CODES = frozenset(
    {4, 6, 7, 13, 14, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 34, 37, 38, 39, 40, 41, 42, 43}
    | {47, 48, 49, 51, 52, 53, 55, 56, 57, 58, 59, 60, 61, 66, 67, 68, 76, 77, 78}
    | set(range(79, 95))
)


def verdict_from_openssl_code(code: int) -> Verdict:
    """The verdict for an OpenSSL X509_V_ERR code (as `SSLCertVerificationError.verify_code`)."""
    if code in _CODE_VERDICTS:
        return _CODE_VERDICTS[code]
    if code in _INVALID_CODES:
        return Verdict.INVALID
    return Verdict.OTHER


# --- bounded caches -------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A small thread-safe LRU: probes are judged from worker threads as well as the event loop."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# --- certificates and anchors ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Cert:
    der: bytes
    fp: str
    cert: x509.Certificate

    @property
    def label(self) -> str:
        return f"'{self.cert.subject.rfc4514_string()}' ({self.fp[:12]})"


@dataclass(frozen=True, eq=False)
class _Anchors:
    store: Store | None
    by_subject: dict[x509.Name, tuple[_Cert, ...]]
    fps: frozenset[str]


def _make_anchors(loaded: LoadedStore) -> _Anchors:
    certs: list[_Cert] = []
    for cert in loaded.roots:
        der = cert.public_bytes(_DER)
        certs.append(_Cert(der, fingerprint(der), cert))
    by_subject: dict[x509.Name, list[_Cert]] = {}
    for c in certs:
        by_subject.setdefault(c.cert.subject, []).append(c)
    return _Anchors(
        store=Store(list(loaded.roots)) if loaded.roots else None,
        by_subject={k: tuple(v) for k, v in by_subject.items()},
        fps=frozenset(c.fp for c in certs),
    )


_anchor_cache: _LRU[str, _Anchors] = _LRU(_ANCHOR_CACHE_SIZE)
_judgement_cache: _LRU[tuple[str, str, str, datetime], ChainJudgement] = _LRU(_JUDGEMENT_CACHE_SIZE)


def _anchors_for(loaded: LoadedStore) -> _Anchors:
    # The fingerprint names the root set (truststores derives it from the roots): stores with equal
    # content, like the system bundle and SSL_CERT_FILE pointing at it, share one Store.
    return _anchor_cache.get_or_make(_store_key(loaded), lambda: _make_anchors(loaded))


def _store_key(loaded: LoadedStore) -> str:
    return loaded.info.fingerprint or f"empty:{loaded.info.path}"


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _ski(cert: x509.Certificate) -> bytes | None:
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    return ski.digest if isinstance(ski, x509.SubjectKeyIdentifier) else None


def _aki(cert: x509.Certificate) -> bytes | None:
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    return aki.key_identifier if isinstance(aki, x509.AuthorityKeyIdentifier) else None


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


# --- path building --------------------------------------------------------------------------------


@dataclass
class _Search:
    served: list[_Cert]
    anchors: _Anchors
    at: datetime
    checks: int = 0
    best: list[_Cert] | None = None  # longest path that reached no anchor


@dataclass(frozen=True)
class _Path:
    certs: list[_Cert]
    anchored: bool
    bad_links: frozenset[int]  # i: certs[i] is not signed by certs[i + 1] (linked by name and key id)


def _self_signed(c: _Cert) -> bool:
    return c.cert.subject == c.cert.issuer and _signed_by(c.cert, c.cert)


def _candidates(search: _Search, child: _Cert, used: set[str]) -> list[tuple[_Cert, bool]]:
    """Possible issuers of `child`: store certificates first (OpenSSL's trusted-first), then served ones;
    among those, matching key identifiers and certificates valid at the time first."""
    issuer_name = child.cert.issuer
    aki = _aki(child.cert)
    found: list[tuple[_Cert, bool]] = [
        (a, True) for a in search.anchors.by_subject.get(issuer_name, ()) if a.fp not in used
    ]
    found += [(s, False) for s in search.served if s.fp not in used and s.cert.subject == issuer_name]

    def rank(item: tuple[_Cert, bool]) -> tuple[int, int, int]:
        c, trusted = item
        ski = _ski(c.cert)
        return (
            0 if trusted else 1,
            0 if aki is None or ski == aki else 1,
            0 if _valid_at(c.cert, search.at) else 1,
        )

    return sorted(found, key=rank)


def _search(search: _Search, path: list[_Cert], bad: frozenset[int]) -> _Path | None:
    """Depth-first search for a path to a trust anchor; None when there is none."""
    top = path[-1]
    if top.fp in search.anchors.fps:
        return _Path(path, True, bad)
    if search.best is None or len(path) > len(search.best):
        search.best = list(path)
    if len(path) > MAX_CHAIN_CERTS or (top.cert.subject == top.cert.issuer and _self_signed(top)):
        return None  # a self-signed certificate the store lacks ends the path, as in OpenSSL
    used = {c.fp for c in path}
    weak: list[_Cert] = []
    for cand, _trusted in _candidates(search, top, used):
        if search.checks >= _MAX_LINK_CHECKS:
            return None
        search.checks += 1
        if _signed_by(top.cert, cand.cert):
            found = _search(search, [*path, cand], bad)
            if found is not None:
                return found
        else:
            weak.append(cand)
    # OpenSSL links an issuer by name and key identifier and finds a bad signature only later; do the
    # same (when the key identifiers agree) so a forged or corrupted link reads INVALID, not unknown.
    aki = _aki(top.cert)
    for cand in weak:
        ski = _ski(cand.cert)
        if aki is not None and ski is not None and aki == ski:
            found = _search(search, [*path, cand], bad | {len(path) - 1})
            if found is not None:
                return found
    return None


def _build_path(served: list[_Cert], anchors: _Anchors, at: datetime) -> _Path:
    search = _Search(served, anchors, at)
    found = _search(search, [served[0]], frozenset())
    if found is not None:
        return found
    return _Path(search.best or [served[0]], False, frozenset())


# --- classification -------------------------------------------------------------------------------


def _no_path(path: _Path, served: list[_Cert], store: LoadedStore) -> ChainJudgement:
    leaf, top = path.certs[0], path.certs[-1]
    store_note = f" (store holds no certificates: {store.info.error or 'empty'})" if not store.roots else ""
    if len(path.certs) == 1 and leaf.cert.subject == leaf.cert.issuer:
        return ChainJudgement(
            Verdict.SELF_SIGNED, (), f"leaf {leaf.label} is self-signed and not in the store{store_note}"
        )
    if top.cert.subject == top.cert.issuer:
        return ChainJudgement(
            Verdict.UNTRUSTED_ROOT,
            (),
            f"served chain ends in self-signed {top.label}, which the store lacks{store_note}",
        )
    issuer = top.cert.issuer.rfc4514_string()
    aki = _aki(top.cert)
    aki_note = f", key id {aki.hex()}" if aki else ""
    aia = summarize(top.der).aia_ca_issuers
    if aia:
        aki_note += f", caIssuers {', '.join(aia)}"
    if len(served) == 1:
        # OpenSSL 3 itself says 20 here (21 only comes after a callback that continues past 20); the
        # separate verdict keeps "the server sent no intermediate" visible.
        return ChainJudgement(
            Verdict.LEAF_ONLY_UNVERIFIABLE,
            (),
            f"only the leaf {leaf.label} was served; its issuer '{issuer}'{aki_note} is not in the store{store_note}",
        )
    if len(path.certs) == 1:
        return ChainJudgement(
            Verdict.UNKNOWN_ISSUER,
            (),
            f"issuer '{issuer}'{aki_note} of leaf {leaf.label} is neither served nor in the store; "
            f"the {len(served) - 1} other served certificate(s) did not issue it{store_note}",
        )
    return ChainJudgement(
        Verdict.UNKNOWN_ISSUER,
        (),
        f"issuer '{issuer}'{aki_note} of {top.label} is neither served nor in the store{store_note}",
    )


def _extension_failure(certs: list[_Cert]) -> str:
    """OpenSSL's check_chain_extensions, reduced to what decides server chains; "" when fine."""
    leaf = certs[0]
    eku = _ext(leaf.cert, x509.ExtendedKeyUsage)
    if (
        isinstance(eku, x509.ExtendedKeyUsage)
        and ExtendedKeyUsageOID.SERVER_AUTH not in eku
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
    ):
        return f"leaf {leaf.label} extendedKeyUsage does not allow serverAuth"
    for depth, issuer in enumerate(certs[1:], start=1):
        if issuer.cert.version == x509.Version.v1 and issuer.cert.subject == issuer.cert.issuer:
            continue  # OpenSSL's X509_check_ca accepts a self-signed v1 certificate as a CA
        bc = _ext(issuer.cert, x509.BasicConstraints)
        if not (isinstance(bc, x509.BasicConstraints) and bc.ca):
            return f"issuer {issuer.label} is not a CA (basicConstraints CA:true missing)"
        ku = _ext(issuer.cert, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            return f"issuer {issuer.label} keyUsage lacks keyCertSign"
        # path_length counts the non-self-issued intermediates below this CA.
        below = sum(1 for c in certs[1:depth] if c.cert.subject != c.cert.issuer)
        if bc.path_length is not None and below > bc.path_length:
            return f"path length constraint {bc.path_length} of {issuer.label} exceeded ({below} below)"
    return ""


def _time_failure(path: _Path, at: datetime) -> ChainJudgement | None:
    """Signatures and validity windows from the anchor down to the leaf, as internal_verify does."""
    certs = path.certs
    for i in range(len(certs) - 1, -1, -1):
        c = certs[i]
        if i in path.bad_links:
            return ChainJudgement(
                Verdict.INVALID, (), f"signature of {c.label} does not verify with {certs[i + 1].label}'s key"
            )
        if at < c.cert.not_valid_before_utc:
            return ChainJudgement(
                Verdict.NOT_YET_VALID,
                (),
                f"{c.label} is not valid until {c.cert.not_valid_before_utc.isoformat()}",
            )
        if at > c.cert.not_valid_after_utc:
            return ChainJudgement(Verdict.EXPIRED, (), f"{c.label} expired at {c.cert.not_valid_after_utc.isoformat()}")
    return None


def _server_verifier(
    leaf: x509.Certificate, expected: ExpectedName, store: Store, at: datetime
) -> ServerVerifier | None:
    """A verifier for the expected name or, when `cryptography` refuses that spelling (underscores),
    for a name the leaf covers: the name itself was already matched above."""
    builder = PolicyBuilder().store(store).time(at)
    if expected.ip is not None:
        return builder.build_server_verifier(x509.IPAddress(expected.ip))
    san = subject_alt_names(leaf)
    fallbacks: list[x509.verification.Subject] = []
    if san is not None:
        fallbacks += [x509.IPAddress(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        fallbacks += [x509.DNSName(d) for d in san.get_values_for_type(x509.DNSName) if "*" not in d]
    for subject in [x509.DNSName(expected.dns or ""), *fallbacks]:
        try:
            return builder.build_server_verifier(subject)
        except ValueError:
            continue
    return None


def _bound(chain: Sequence[bytes]) -> tuple[tuple[bytes, ...], str]:
    kept: list[bytes] = []
    total = 0
    for der in chain[:MAX_CHAIN_CERTS]:
        if total + len(der) > MAX_CHAIN_BYTES and kept:
            break
        kept.append(bytes(der))
        total += len(der)
    if len(kept) == len(chain):
        return tuple(kept), ""
    size = sum(len(d) for d in chain)
    return tuple(kept), (
        f"served chain of {len(chain)} certificates ({size} bytes) judged on its first {len(kept)} "
        f"(limits {MAX_CHAIN_CERTS} certificates, {MAX_CHAIN_BYTES} bytes)"
    )


def _chain_key(chain: tuple[bytes, ...]) -> str:
    h = hashlib.sha256()
    for der in chain:
        h.update(len(der).to_bytes(4, "big"))
        h.update(der)
    return h.hexdigest()


def _judge(chain: tuple[bytes, ...], store: LoadedStore, expected: ExpectedName, at: datetime) -> ChainJudgement:
    notes: list[str] = []
    served: list[_Cert] = []
    for i, der in enumerate(chain):
        try:
            cert = parse_der(der)
        except CertificateParseError as exc:
            if i == 0:
                return ChainJudgement(Verdict.INVALID, (), f"served leaf is not a certificate: {exc}")
            notes.append(f"served certificate #{i} ignored: {exc}")
            continue
        served.append(_Cert(der, fingerprint(der), cert))

    anchors = _anchors_for(store)
    path = _build_path(served, anchors, at)
    if not path.anchored:
        return _with_notes(_no_path(path, served, store), notes)
    fps = tuple(c.fp for c in path.certs)
    failure = _extension_failure(path.certs)
    if failure:
        return _with_notes(ChainJudgement(Verdict.INVALID, fps, failure), notes)
    leaf = path.certs[0].cert
    ok, why = match_name(leaf, expected)
    if not ok:
        verdict = Verdict.IP_MISMATCH if expected.ip is not None else Verdict.HOSTNAME_MISMATCH
        return _with_notes(ChainJudgement(verdict, fps, why), notes)
    timed = _time_failure(path, at)
    if timed is not None:
        return _with_notes(ChainJudgement(timed.verdict, fps, timed.detail), notes)

    verifier = _server_verifier(leaf, expected, anchors.store, at) if anchors.store is not None else None
    if verifier is None:
        return _with_notes(
            ChainJudgement(Verdict.INVALID, fps, f"the policy engine cannot check the name {expected}"), notes
        )
    try:
        verified = verifier.verify(leaf, [c.cert for c in served[1:]])
    except VerificationError as exc:
        # The text is kept for a human reader only; the verdict is already decided.
        return _with_notes(
            ChainJudgement(Verdict.INVALID, fps, f"path to {path.certs[-1].label} breaks policy: {exc}"),
            notes,
        )
    verified_fps = tuple(fingerprint(c.public_bytes(_DER)) for c in verified)
    return _with_notes(ChainJudgement(Verdict.OK, verified_fps, ""), notes)


def _with_notes(j: ChainJudgement, notes: list[str]) -> ChainJudgement:
    if not notes:
        return j
    detail = "; ".join([j.detail, *notes]) if j.detail else "; ".join(notes)
    return ChainJudgement(j.verdict, j.verified_path, detail)


def _second(at: datetime) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"validation time must be a timezone-aware datetime, got {at!r}")
    return at.replace(microsecond=0)


def verify_chain(chain: Sequence[bytes], store: LoadedStore, expected_name: str, at: datetime) -> ChainJudgement:
    """Judge `chain` (DER, leaf first, as served) against `store` for `expected_name` at time `at`.

    Raises ValueError for a malformed expected name, a naive time or a chain that is not a sequence of
    bytes; never for bytes that are not certificates (those are judged).
    """
    at_s = _second(at)
    expected = parse_expected_name(expected_name)
    if isinstance(chain, bytes | bytearray | str) or not all(
        isinstance(d, bytes | bytearray | memoryview) for d in chain
    ):
        raise ValueError("chain must be a sequence of DER certificates (bytes), leaf first, as served")
    if not chain:
        return ChainJudgement(Verdict.NO_CHAIN, (), "no certificate was served")
    bounded, note = _bound(chain)
    key = (_chain_key(bounded), _store_key(store), str(expected), at_s)
    judgement = _judgement_cache.get_or_make(key, lambda: _judge(bounded, store, expected, at_s))
    return _with_notes(judgement, [note] if note else [])


def judge_against_stores(
    chain: Sequence[bytes],
    stores: Sequence[LoadedStore],
    expected_name: str,
    agent_time: datetime,
    reference_time: datetime | None,
) -> tuple[StoreVerdict, ...]:
    """One StoreVerdict per store: the verdict at the agent's clock and at the reference (true) time.

    Without a reference time, the reference verdict repeats the agent-time one.
    """
    agent_s = _second(agent_time)
    ref_s = _second(reference_time) if reference_time is not None else agent_s
    out: list[StoreVerdict] = []
    for store in stores:
        at_agent = verify_chain(chain, store, expected_name, agent_s)
        at_ref = at_agent if ref_s == agent_s else verify_chain(chain, store, expected_name, ref_s)
        detail = at_agent.detail
        if at_ref.verdict != at_agent.verdict:
            detail = (
                f"at agent time {agent_s.isoformat()}: {at_agent.verdict.value}"
                f"{': ' + at_agent.detail if at_agent.detail else ''}; "
                f"at reference time {ref_s.isoformat()}: {at_ref.verdict.value}"
                f"{': ' + at_ref.detail if at_ref.detail else ''}"
            )
        out.append(
            StoreVerdict(
                store=store.info.name,
                at_agent_time=at_agent.verdict,
                at_reference_time=at_ref.verdict,
                verified_path=at_agent.verified_path or at_ref.verified_path,
                detail=detail,
            )
        )
    return tuple(out)
