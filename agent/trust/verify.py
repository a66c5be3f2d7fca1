"""Judge a served chain offline against one trust store, as an OpenSSL client using that store would.

The verdict is OpenSSL's own: X509_verify_cert in the libcrypto Python's `ssl` is linked against
(`libcrypto`), with the store's roots as the only trusted certificates, the served certificates after
the leaf as untrusted ones, purpose and trust "ssl_server", the expected name as
X509_VERIFY_PARAM_set1_host / set1_ip_asc (default flags), the validation time, and the host's
default security level as the auth level. That is what

    openssl verify -no-CApath -no-CAstore -purpose sslserver -auth_level LEVEL -CAfile STORE \
        -untrusted CHAIN -verify_hostname NAME -attime T LEAF

concludes on this host (its first error). For the store the native client reads, that is the native
verdict too, except where Python's default context departs from OpenSSL's defaults (it refuses partial
wildcards such as "s*.example.com", and pins security level 2 whatever the configuration says). The code
is kept beside the verdict; the verdict is read from the code, never from text. One refinement:
OpenSSL's 20 for a lone leaf reads LEAF_ONLY_UNVERIFIABLE (the server sent no intermediate), unless the store
holds a certificate of the leaf's issuer's name that OpenSSL passed over (`issuer_lookup.held_namesakes`).

Only the store's certificates are trusted, and only a path to a self-signed root counts (OpenSSL
without -partial_chain): a store holding an intermediate alone gives 2 (unable to get issuer). The store's
certificates go to OpenSSL with the trust settings of their TRUSTED CERTIFICATE blocks (LoadedStore.aux), as
`openssl verify -CAfile` reads them: a rejected serverAuth refuses (28), a trusted one accepts a root whose
own EKU lacks it, and a certificate so trusted is an anchor though not self-signed. Certificates OpenSSL reads
and cryptography refuses (LoadedStore.opaque) are trusted too.

A runtime's store is judged under that runtime's own rules (runtimes.verification_rules, found at discovery):
node's store at the security level node itself verifies at (its `nodejs_conf`, not the host's level); a Java
store as Java's PKIX, with partial chains (any store certificate is an anchor: X509_V_FLAG_PARTIAL_CHAIN), no
security level (auth level 0), and the JRE's jdk.certpath / jdk.tls disabledAlgorithms applied to the path
OpenSSL accepted (a refusal keeps OpenSSL's code for the like weakness, 66, 67 or 68, and its detail starts
"Java refuses").

Where OpenSSL accepts and the CA/Browser Forum profile (`cryptography.x509.verification`: browsers,
Go) refuses, `strict_note` says why (`strict_profile`); the verdict stays OpenSSL's.

`NativeVerifier` is the other road: the verification a client context runs inside its handshake, run
offline with that context's own store (its cafile, or OpenSSL's default verify paths with their directory
lookups) and parameters, so that the handshake itself need not verify (`probe.handshake`).

Cost: judgements are cached by (served chain, store content fingerprint, expected name, time span, the
store's rules). A span runs from one validity edge (a notBefore or notAfter of a served or store certificate,
or a date a Java constraint starts on) to the next: OpenSSL judges every second of it alike, so a judgement
holds until the next edge, not for an hour, and a scheduled report finds its chains judged from one run to
the next. A probe's whole set of store verdicts is cached the same way, by the spans of both times across
all its stores and their rules. A changed store has another fingerprint and never meets an old entry;
`clear_caches` drops everything. Identical stores are judged once. A CLI process also takes the judgements
that an earlier one made (kept_judgements). Many names share one wildcard or many-name certificate: a
judgement made for one name serves another that OpenSSL's own name check finds the leaf covers, and every
name when OpenSSL stopped before checking the name (X509_verify_cert checks it after the path, its
extensions and its security level), so only that check (microseconds) is run again.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import ssl
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.x509.general_name import UnsupportedGeneralNameType
from cryptography.x509.verification import Store

from ..model import StoreVerdict, Verdict
from . import kept_judgements, libcrypto, runtimes
from .certinfo import (
    CertificateParseError,
    fingerprint,
    name_text,
    parse_der,
    summarize,
    unhandled_critical,
    validity,
)
from .issuer_lookup import NameKey, StoreIndex, chain_names, forget_keys, held_namesakes, served_namesakes
from .names import ExpectedName, match_name, parse_expected_name
from .purpose import server_purpose_refusal
from .runtimes import VerifyRules
from .stores import LoadedStore, der_of, openssl_bundle
from .strict_profile import key_description, names_alike, strict_note

__all__ = [
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_CERTS",
    "ChainJudgement",
    "NativeCheck",
    "NativeVerifier",
    "clear_caches",
    "judge_against_stores",
    "verdict_from_openssl_code",
    "verify_chain",
]

# A Certificate message within OpenSSL's default max_cert_list (100 KiB) holds about this many small
# certificates, and X509_verify_cert builds its path among all that the handshake hands over.
MAX_CHAIN_CERTS = 128
MAX_CHAIN_BYTES = 1024 * 1024
_JUDGEMENT_CACHE_SIZE = 4096
_CHAIN_CACHE_SIZE = 1024
_READ_CHAINS_CACHE_SIZE = 64
_TRUST_CACHE_SIZE = 64


@dataclass(frozen=True)
class ChainJudgement:
    """OpenSSL's conclusion about one served chain against one store, at one time, for one name."""

    verdict: Verdict
    verified_path: tuple[str, ...] = ()  # sha256 fingerprints, leaf first, trust anchor last
    detail: str = ""
    code: int = 0  # OpenSSL's X509_V_ERR code (0: ok; 1 when OpenSSL could not judge at all)
    strict_note: str = ""  # what the CA/B Forum profile refuses that OpenSSL accepted


# --- OpenSSL verify codes -------------------------------------------------------------------------

X509_V_OK = 0
X509_V_ERR_UNSPECIFIED = 1
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2
X509_V_ERR_CERT_SIGNATURE_FAILURE = 7
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
X509_V_ERR_CERT_CHAIN_TOO_LONG = 22
X509_V_ERR_PATH_LENGTH_EXCEEDED = 25
X509_V_ERR_INVALID_PURPOSE = 26
X509_V_ERR_KEYUSAGE_NO_CERTSIGN = 32
X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION = 34
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64
X509_V_ERR_EE_KEY_TOO_SMALL = 66
X509_V_ERR_CA_KEY_TOO_SMALL = 67
X509_V_ERR_CA_MD_TOO_WEAK = 68
X509_V_ERR_INVALID_CA = 79
X509_V_FLAG_PARTIAL_CHAIN = 0x80000
# OpenSSL 1.1 numbered "invalid CA" 24; 3.0 moved it to 79 (24 is "no issuer public key" there).
_INVALID_CA = X509_V_ERR_INVALID_CA if ssl.OPENSSL_VERSION_INFO[0] >= 3 else 24

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
# No path to a trust anchor: the chain OpenSSL built is not a verified path.
_NO_PATH_CODES = frozenset({2, 18, 19, 20, 21, 22})


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
        self.put(key, value)
        return value

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# --- certificates, stores, served chains ----------------------------------------------------------


def _edges(cert: x509.Certificate) -> tuple[int, int]:
    """The Unix seconds at which OpenSSL's view of the certificate's validity changes: valid from
    notBefore, expired from notAfter on."""
    before, after = validity(cert)
    return int(before.timestamp()), int(after.timestamp())


@dataclass(eq=False)
class _Trust:
    """One store content, ready for OpenSSL (an X509_STORE read as chains need its certificates, see
    issuer_lookup) and for the strict profile."""

    native: libcrypto.X509Store | None
    unavailable: str  # why there is no `native`
    fps: frozenset[str]
    by_fp: dict[str, x509.Certificate]
    edges: tuple[int, ...]  # sorted validity edges of every store certificate
    roots: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]  # of `roots`, each followed by its trust settings (LoadedStore.aux) where it has some
    index: StoreIndex
    _in_native: set[int] = field(default_factory=set)  # positions in `roots` read into `native`
    _native_lock: threading.Lock = field(default_factory=threading.Lock)
    _strict: Store | None = None
    _strict_lock: threading.Lock = field(default_factory=threading.Lock)

    def native_for(self, served: _Served) -> libcrypto.X509Store:
        """`native` with every store certificate that chain building can reach from `served` read into it."""
        assert self.native is not None
        wanted = self.index.reachable(served.names)
        with self._native_lock:
            missing = [i for i in (range(len(self.ders)) if wanted is None else wanted) if i not in self._in_native]
            if missing:
                self.native.add([self.ders[i] for i in missing])
                self._in_native.update(missing)
        return self.native

    def strict_store(self) -> Store | None:
        if self._strict is None and self.roots:
            with self._strict_lock:
                if self._strict is None:
                    self._strict = Store(list(self.roots))
        return self._strict


# A host's stores mostly hold the same roots, as one certificate object each (stores.py): what a store's trust
# needs of a root (its DER, fingerprint and validity edges) is worked out once for all of them. Bounded like
# stores.py's shared certificates.
_ROOT_FACTS_SIZE = 4096
_root_facts: dict[x509.Certificate, tuple[bytes, str, tuple[int, int]]] = {}


def _facts_of(cert: x509.Certificate) -> tuple[bytes, str, tuple[int, int]]:
    facts = _root_facts.get(cert)
    if facts is None:
        der = der_of(cert)
        facts = (der, fingerprint(der), _edges(cert))
        if len(_root_facts) >= _ROOT_FACTS_SIZE:
            _root_facts.clear()
        _root_facts[cert] = facts
    return facts


def _make_trust(loaded: LoadedStore) -> _Trust:
    facts = [_facts_of(cert) for cert in loaded.roots]
    plain = [der for der, _, _ in facts]
    fps = [fp for _, fp, _ in facts]
    # OpenSSL reads a root with its trust settings, as `openssl verify -CAfile` reads a TRUSTED CERTIFICATE.
    ders = [d + aux for d, aux in zip(plain, loaded.aux, strict=True)] if loaded.aux else plain
    unavailable = libcrypto.unavailable_reason()
    # Certificates only OpenSSL reads are out of the name index: they are all in the store from the start.
    native = libcrypto.X509Store([d + aux for d, aux in loaded.opaque]) if not unavailable else None
    return _Trust(
        native=native,
        unavailable=unavailable,
        fps=frozenset(fps) | {fingerprint(d) for d, _ in loaded.opaque},
        by_fp=dict(zip(fps, loaded.roots, strict=True)),
        edges=_edges_for(loaded),
        roots=tuple(loaded.roots),
        ders=tuple(ders),
        index=StoreIndex.of(loaded.roots, fps),
    )


@dataclass(frozen=True, eq=False)
class _Served:
    """A bounded served chain as OpenSSL reads it."""

    ders: tuple[bytes, ...]  # leaf first; certificates libcrypto cannot read are left out
    parsed: tuple[x509.Certificate | None, ...]  # cryptography's reading of `ders`, None where it refuses
    edges: tuple[int, ...] | None  # None: some window unknown, so judge at the exact second
    notes: tuple[str, ...]
    leaf_error: str = ""  # the leaf is not a certificate: nothing to verify
    names: tuple[NameKey, ...] | None = None  # issuer_lookup.chain_names of `parsed`


def _make_served(chain: tuple[bytes, ...]) -> _Served:
    reason = libcrypto.unavailable_reason()
    ders: list[bytes] = []
    parsed: list[x509.Certificate | None] = []
    notes: list[str] = []
    edges: set[int] | None = set()
    for i, der in enumerate(chain):
        try:
            cert: x509.Certificate | None = parse_der(der)
            error = ""
        except CertificateParseError as exc:
            cert, error = None, str(exc)
        readable = libcrypto.parses(der) if not reason else cert is not None
        if not readable:
            why = f"OpenSSL cannot read it as a certificate{': ' + error if error else ''}"
            if i == 0:
                return _Served((), (), None, (), leaf_error=why)
            notes.append(f"served certificate #{i} ignored: {why}")
            continue
        ders.append(der)
        parsed.append(cert)
        if cert is None or edges is None:
            edges = None
        else:
            edges.update(_edges(cert))
    return _Served(
        tuple(ders),
        tuple(parsed),
        tuple(sorted(edges)) if edges is not None else None,
        tuple(notes),
        names=chain_names(parsed),
    )


def _read_served(served: _Served) -> Sequence[bytes | libcrypto.Certificate]:
    """The served chain as libcrypto read it, once for all the stores and times it is judged against."""

    def read() -> tuple[bytes | libcrypto.Certificate, ...]:
        return tuple(libcrypto.read_certificate(d) or d for d in served.ders)

    return _read_chains.get_or_make(served, read)


_edges_cache: _LRU[str, tuple[int, ...]] = _LRU(_TRUST_CACHE_SIZE)
_trust_cache: _LRU[str, _Trust] = _LRU(_TRUST_CACHE_SIZE)
_chain_cache: _LRU[str, _Served] = _LRU(_CHAIN_CACHE_SIZE)
# (served chain, store content, expected name, the span's first second, exact second?, the store's rules)
_JudgementKey = tuple[str, str, str, int, bool, VerifyRules]
_judgement_cache: _LRU[_JudgementKey, ChainJudgement] = _LRU(_JUDGEMENT_CACHE_SIZE)
# The same without the name: what OpenSSL concluded of a chain whose name it checked and passed, or never reached.
_UnnamedKey = tuple[str, str, int, bool, VerifyRules]
_unnamed_cache: _LRU[_UnnamedKey, _Judged] = _LRU(_JUDGEMENT_CACHE_SIZE)
# libcrypto's reading of the chains judged last (by the _Served itself), fewer: each holds OpenSSL's structures.
_read_chains: _LRU[_Served, tuple[bytes | libcrypto.Certificate, ...]] = _LRU(_READ_CHAINS_CACHE_SIZE)
_VerdictsKey = tuple[str, tuple[tuple[str, str], ...], tuple[VerifyRules, ...], str, tuple[int, bool], tuple[int, bool]]
_verdicts_cache: _LRU[_VerdictsKey, tuple[StoreVerdict, ...]] = _LRU(_JUDGEMENT_CACHE_SIZE)
# The same without the name, with each store's judgement as `_judge_named` keeps it for other names.
_AnyNameKey = tuple[str, tuple[tuple[str, str], ...], tuple[VerifyRules, ...], tuple[int, bool], tuple[int, bool]]
_any_name_cache: _LRU[_AnyNameKey, tuple[tuple[StoreVerdict, ...], tuple[_Judged, ...]]] = _LRU(_JUDGEMENT_CACHE_SIZE)


def clear_caches() -> None:
    """Drop every cached judgement, served chain and store. Never needed for correctness (a changed
    store has a new fingerprint, so it never meets an old entry); it frees memory at once."""
    global _last_stores
    _last_stores = None
    _verdicts_cache.clear()
    _any_name_cache.clear()
    _judgement_cache.clear()
    _unnamed_cache.clear()
    _read_chains.clear()
    _chain_cache.clear()
    _trust_cache.clear()
    _edges_cache.clear()
    _root_facts.clear()
    forget_keys()


def _store_key(loaded: LoadedStore) -> str:
    # The fingerprint names the root set: stores with equal content share one X509_STORE and one verdict.
    # An empty store's verdict names why it is empty, so its key does too. The fingerprint leaves out the
    # roots' trust settings (TRUSTED CERTIFICATE blocks), which change verdicts: the key holds them.
    # Certificates only OpenSSL reads are out of the fingerprint too.
    key = loaded.info.fingerprint or f"empty:{loaded.info.path}:{loaded.info.error}"
    if loaded.aux or loaded.opaque:
        parts = [*loaded.aux, *(p for pair in loaded.opaque for p in pair)]
        settings = hashlib.sha256(b"".join(len(a).to_bytes(4, "big") + a for a in parts)).hexdigest()
        key = f"{key}+{len(loaded.aux)}:{len(loaded.opaque)}:{settings}"
    return key


def _rules_for(loaded: LoadedStore) -> VerifyRules:
    """How the store's own client verifies: the runtime's security level, partial chains, Java's constraints."""
    return runtimes.verification_rules(loaded.info.kind, loaded.info.path)


def _trust_for(loaded: LoadedStore) -> _Trust:
    return _trust_cache.get_or_make(_store_key(loaded), lambda: _make_trust(loaded))


def _edges_for(loaded: LoadedStore) -> tuple[int, ...]:
    """The sorted validity edges of every store certificate: what a judgement's time bucket needs of the store,
    without reading it into OpenSSL."""
    key = _store_key(loaded)
    return _edges_cache.get_or_make(key, lambda: _kept_or_found_edges(key, loaded.roots))


def _kept_or_found_edges(store_key: str, roots: Sequence[x509.Certificate]) -> tuple[int, ...]:
    edges = kept_judgements.load_edges(store_key)
    if edges is None:
        edges = tuple(sorted({e for cert in roots for e in _facts_of(cert)[2]}))
        kept_judgements.store_edges(store_key, edges)
    return edges


# Before every edge: the span of times earlier than any certificate's notBefore.
_BEFORE_ALL_EDGES = -(2**63)


def _span(at: int, *edge_sets: tuple[int, ...]) -> tuple[int, int]:
    """[start, end): the latest edge at or before `at` and the first after it, across the sorted `edge_sets`.
    An edge is the first second of a new state (OpenSSL: valid from notBefore, expired from notAfter on;
    a Java constraint from its denyAfter date), so every second of the span is judged alike."""
    start, end = _BEFORE_ALL_EDGES, 2**63
    for edges in edge_sets:
        i = bisect_right(edges, at)
        if i and edges[i - 1] > start:
            start = edges[i - 1]
        if i < len(edges) and edges[i] < end:
            end = edges[i]
    return start, end


def _edge_inside(edges: tuple[int, ...], start: int, end: int) -> bool:
    """Whether an edge falls strictly inside the span (one at its start changes nothing within it)."""
    i = bisect_right(edges, start)
    return i < len(edges) and edges[i] < end


def _time_key(at: int, served: _Served, *edge_sets: tuple[int, ...]) -> tuple[int, bool]:
    """(time, exact): the first second of the span `at` falls in, across the served chain's validity edges and
    `edge_sets` (the store certificates', the rules'), or the exact second when a served certificate's
    validity is unknown."""
    if served.edges is None:
        return at, True
    return _span(at, served.edges, *edge_sets)[0], False


@functools.lru_cache(maxsize=64)
def _rule_edges(rules: VerifyRules) -> tuple[int, ...]:
    """The dates a store's rules change on: its Java constraints' denyAfter."""
    if rules.java is None:
        return ()
    constraints = (*rules.java.certpath, *rules.java.tls)
    return tuple(sorted({c.deny_after for c in constraints if c.deny_after is not None}))


# --- describing OpenSSL's conclusion --------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What a judgement's detail is worded from: the served chain, the store and the name checked."""

    served: _Served
    trust: _Trust
    store: LoadedStore
    expected: ExpectedName
    level: int  # the auth level verified at

    def cert(self, der: bytes) -> x509.Certificate | None:
        fp = fingerprint(der)
        if fp in self.trust.by_fp:
            return self.trust.by_fp[fp]
        for d, c in zip(self.served.ders, self.served.parsed, strict=True):
            if d == der:
                return c
        try:
            return parse_der(der)
        except CertificateParseError:
            return None

    def label(self, der: bytes) -> str:
        cert = self.cert(der)
        fp = fingerprint(der)[:12]
        return f"'{name_text(cert)}' ({fp})" if cert is not None else f"certificate {fp}"

    def store_note(self) -> str:
        if self.store.roots or self.store.opaque:
            return ""
        return f" (store holds no certificates: {self.store.info.error or 'empty'})"


def _issuer_hint(der: bytes, cert: x509.Certificate | None) -> tuple[str, str]:
    """(issuer name, ", key id ..., caIssuers ...") of the certificate whose issuer is missing."""
    if cert is None:
        try:  # cryptography refuses its extensions (a repeated one), not its names
            return name_text(x509.load_der_x509_certificate(der), issuer=True), ""
        except ValueError:
            return "its issuer", ""
    issuer = name_text(cert, issuer=True)
    note = ""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
        aki = None
    if aki:
        note = f", key id {aki.hex()}"
    try:
        aia = summarize(der).aia_ca_issuers
    except CertificateParseError:
        aia = ()
    if aia:
        note += f", caIssuers {', '.join(aia)}"
    return issuer, note


def _no_path_detail(code: int, subject: bytes, depth: int, ctx: _Context) -> str:
    label = ctx.label(subject)
    cert = ctx.cert(subject)
    store_note = ctx.store_note()
    if code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        return f"leaf {label} is self-signed and not in the store{store_note}"
    if code == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return f"served chain ends in self-signed {label}, which the store lacks{store_note}"
    if code == X509_V_ERR_CERT_CHAIN_TOO_LONG:
        return f"the path through {label} is longer than OpenSSL's verification depth limit"
    issuer, hint = _issuer_hint(subject, cert)
    if code == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        return (
            f"store certificate {label} is not self-signed and its issuer '{issuer}'{hint} is not in the store: "
            f"OpenSSL needs a path up to a self-signed root{store_note}"
        )
    of = f"OpenSSL found no issuer of {'leaf ' if depth == 0 else ''}{label}"
    held = held_namesakes(subject, ctx.trust.roots, ctx.trust.index)
    if held:
        return f"{of}: {held}"
    served = len(ctx.served.ders)
    if served == 1:
        return f"only the leaf {label} was served; its issuer '{issuer}'{hint} is not in the store{store_note}"
    signer = _signer_under_another_key_id(subject, cert, ctx)
    if signer is not None:
        der, aki = signer
        return (
            f"the served {ctx.label(der)} signed {label}, but its Subject Key Identifier is not the key id {aki} "
            f"that {label}'s Authority Key Identifier names, and OpenSSL links a certificate to its issuer by key "
            "id before it checks the signature"
        )
    held = served_namesakes(subject, ctx.served.ders)
    if held:
        return f"{of}: {held}"
    if depth == 0:
        return (
            f"issuer '{issuer}'{hint} of leaf {label} is neither served nor in the store; "
            f"the {served - 1} other served certificate(s) did not issue it{store_note}"
        )
    return f"issuer '{issuer}'{hint} of {label} is neither served nor in the store{store_note}"


def _signer_under_another_key_id(
    subject: bytes, cert: x509.Certificate | None, ctx: _Context
) -> tuple[bytes, str] | None:
    """(DER, the key id `cert` names) of a served certificate named as `cert`'s issuer whose key signed it, though
    `cert`'s Authority Key Identifier names another key id."""
    if cert is None:
        return None
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
        return None
    if not aki:
        return None
    for der, candidate in zip(ctx.served.ders, ctx.served.parsed, strict=True):
        if candidate is None or der == subject or name_text(candidate) != name_text(cert, issuer=True):
            continue
        try:
            ski = candidate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
            ski = b""
        if ski == aki:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except Exception:  # InvalidSignature, or a key or algorithm cryptography cannot check
            continue
        return der, aki.hex()
    return None


def _unhandled_critical(cert: x509.Certificate | None) -> str:
    oids = [oid.dotted_string for oid in unhandled_critical(cert)] if cert is not None else []
    return f" ({', '.join(oids)})" if oids else ""


def _signature_label(cert: x509.Certificate | None) -> str:
    if cert is None:
        return "a weak digest"
    hash_algorithm = None
    try:
        hash_algorithm = cert.signature_hash_algorithm
    except Exception:  # UnsupportedAlgorithm for unknown signature algorithms
        hash_algorithm = None
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", "") or oid.dotted_string
    digest = hash_algorithm.name.upper().replace("SHA", "SHA-") if hash_algorithm is not None else "its digest"
    return f"{digest} ({name})"


def _detail(nv: libcrypto.NativeVerification, ctx: _Context) -> str:
    code = nv.code
    if code == X509_V_OK:
        return ""
    depth = nv.depth
    subject = nv.error_cert or (nv.chain[depth] if 0 <= depth < len(nv.chain) else ctx.served.ders[0])
    if code in _NO_PATH_CODES:
        return _no_path_detail(code, subject, depth, ctx)
    label = ctx.label(subject)
    cert = ctx.cert(subject)
    level = ctx.level
    if code == X509_V_ERR_CERT_NOT_YET_VALID:
        when = validity(cert)[0].isoformat() if cert is not None else "later"
        return f"{label} is not valid until {when}"
    if code == X509_V_ERR_CERT_HAS_EXPIRED:
        when = validity(cert)[1].isoformat() if cert is not None else "earlier"
        return f"{label} expired at {when}"
    if code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH):
        leaf = ctx.cert(ctx.served.ders[0])
        if leaf is not None:
            ok, why = match_name(leaf, ctx.expected)
            if not ok:
                return why
        return f"OpenSSL finds {ctx.expected} not covered by the leaf {ctx.label(ctx.served.ders[0])}"
    if code == X509_V_ERR_CERT_SIGNATURE_FAILURE:
        above = nv.chain[depth + 1] if 0 <= depth < len(nv.chain) - 1 else b""
        by = f" with {ctx.label(above)}'s key" if above else ""
        return f"signature of {label} does not verify{by}"
    if code == _INVALID_CA:
        if cert is not None and cert.version is x509.Version.v1:
            return f"issuer {label} is an X.509 v1 certificate: OpenSSL accepts v1 CAs only as self-signed roots"
        bc = None
        if cert is not None:
            try:
                bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
                bc = None
        if bc is None or not bc.ca:
            return f"issuer {label} is not a CA (basicConstraints CA:true missing)"
        ku = None
        if cert is not None:
            try:
                ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension, UnsupportedGeneralNameType):
                ku = None
        if ku is not None and not ku.key_cert_sign:
            return f"issuer {label} is not a CA OpenSSL accepts: its keyUsage lacks keyCertSign"
        return f"issuer {label} is not a CA OpenSSL accepts: {libcrypto.error_string(code)}"
    if code == X509_V_ERR_PATH_LENGTH_EXCEEDED:
        return f"the path length constraint of {label} is exceeded"
    if code == X509_V_ERR_INVALID_PURPOSE:
        why = server_purpose_refusal(cert, leaf=depth == 0) if cert is not None else ""
        if depth == 0:
            return f"leaf {label} is not for TLS server authentication: {why or 'extendedKeyUsage or nsCertType'}"
        return f"{label} does not allow TLS server authentication below it: {why or 'extendedKeyUsage'}"
    if code == X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        return f"issuer {label} keyUsage lacks keyCertSign"
    if code == X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
        return f"{label} has a critical extension OpenSSL does not handle{_unhandled_critical(cert)}"
    if code == X509_V_ERR_EE_KEY_TOO_SMALL:
        key = key_description(cert) if cert is not None else "its key"
        return f"leaf {label} key ({key}) is too small at security level {level}"
    if code == X509_V_ERR_CA_KEY_TOO_SMALL:
        key = key_description(cert) if cert is not None else "its key"
        return f"CA certificate {label} key ({key}) is too small at security level {level}"
    if code == X509_V_ERR_CA_MD_TOO_WEAK:
        return f"{label} is signed with {_signature_label(cert)}, a digest too weak at security level {level}"
    return f"{libcrypto.error_string(code)}: {label} (OpenSSL verify code {code})"


# --- judging --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Judged:
    """A judgement with what judging it for another name needs."""

    judgement: ChainJudgement
    code: int | None  # OpenSSL's own X509_V_ERR code; None: OpenSSL did not verify
    strict_path: tuple[bytes, ...] | None  # the path OpenSSL accepted, which the strict note is about; None: no note
    named: ExpectedName | None = None  # the name judged


def _judge(
    served: _Served, trust: _Trust, store: LoadedStore, expected: ExpectedName, at: int, rules: VerifyRules
) -> _Judged:
    if served.leaf_error:
        return _Judged(
            ChainJudgement(
                Verdict.INVALID, (), f"served leaf is not a certificate: {served.leaf_error}", X509_V_ERR_UNSPECIFIED
            ),
            None,
            None,
        )
    if trust.native is None:
        return _Judged(
            ChainJudgement(
                Verdict.OTHER, (), f"OpenSSL's verifier is unavailable: {trust.unavailable}", X509_V_ERR_UNSPECIFIED
            ),
            None,
            None,
        )
    read = _read_served(served)
    level = _level_of(rules)
    flags = X509_V_FLAG_PARTIAL_CHAIN if rules.partial_chain else 0
    native = trust.native_for(served)
    nv = libcrypto.verify(native, read[0], read[1:], at=at, host=str(expected), auth_level=level, flags=flags)
    verdict = verdict_from_openssl_code(nv.code)
    if (
        nv.code == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        and len(served.ders) == 1
        and not held_namesakes(served.ders[0], trust.roots, trust.index)
    ):
        # OpenSSL 3 says 20 for a lone leaf; the separate verdict keeps "the server sent no intermediate",
        # unless the store holds the leaf's issuer by name, which OpenSSL would not link: no intermediate helps.
        verdict = Verdict.LEAF_ONLY_UNVERIFIABLE
    ctx = _Context(served, trust, store, expected, level)
    chain = nv.chain
    if rules.partial_chain and nv.code == X509_V_OK:
        # A leaf the store holds is trusted as it is, though OpenSSL leaves the served certificates above it
        # in the chain it built: the path ends at the first certificate the store holds.
        fps = [fingerprint(d) for d in chain]
        held = next((i for i, fp in enumerate(fps) if fp in trust.fps), len(chain) - 1)
        chain = chain[: held + 1]
    if nv.code == X509_V_OK and rules.java is not None:
        refused = _java_refusal(chain, ctx, rules.java, at)
        if refused is not None:
            return _Judged(refused, nv.code, None)
    anchored = bool(chain) and fingerprint(chain[-1]) in trust.fps and nv.code not in _NO_PATH_CODES
    path = tuple(fingerprint(d) for d in chain) if anchored else ()
    detail = _detail(nv, ctx)
    if trust.native.skipped:
        skipped = f"{trust.native.skipped} store certificate(s) OpenSSL cannot read were left out"
        detail = f"{detail}; {skipped}" if detail else skipped
    note = ""
    strict_path = None
    if nv.code == X509_V_OK:
        note = _strict(chain, served, ctx, at)
        strict_path = chain
    return _Judged(ChainJudgement(verdict, path, detail, nv.code, note), nv.code, strict_path, expected)


def _level_of(rules: VerifyRules) -> int:
    return libcrypto.security_level() if rules.security_level is None else rules.security_level


# X509_verify_cert stops at its first error, and checks the name (check_id) only after the leaf's key, the path
# (build_chain, trust), the path's extensions and its security level: an error of those holds for every name.
_BEFORE_NAME_CHECK = _NO_PATH_CODES | {
    X509_V_ERR_PATH_LENGTH_EXCEEDED,
    X509_V_ERR_INVALID_PURPOSE,
    27,  # certificate not trusted
    28,  # certificate rejected
    X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION,
    _INVALID_CA,
    X509_V_ERR_EE_KEY_TOO_SMALL,
    X509_V_ERR_CA_KEY_TOO_SMALL,
    X509_V_ERR_CA_MD_TOO_WEAK,
}
_NAME_MISMATCH_CODES = frozenset({X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH})


def _judge_named(
    served: _Served, store: LoadedStore, expected: ExpectedName, at: int, rules: VerifyRules, key: _JudgementKey
) -> ChainJudgement:
    """`_judge`, or the judgement another name had for the same chain, store, span and rules where OpenSSL's name
    check is all that differs: many names share a wildcard or many-name certificate, and OpenSSL's name check
    costs microseconds where the verification costs a millisecond."""
    trust = _trust_for(store)
    unnamed_key = (key[0], key[1], key[3], key[4], rules)
    known = _unnamed_cache.get(unnamed_key)
    if known is not None:
        holds = _holds_for(known, served, expected)
        if holds:
            return known.judgement
        if holds is not None:
            assert known.strict_path is not None
            ctx = _Context(served, trust, store, expected, _level_of(rules))
            return replace(known.judgement, strict_note=_strict(known.strict_path, served, ctx, at))
    judged = _judge(served, trust, store, expected, at, rules)
    if judged.code is not None and judged.code not in _NAME_MISMATCH_CODES:
        # The name passed OpenSSL's check, or the check was never reached: as it is for every name.
        _unnamed_cache.put(unnamed_key, judged)
    return judged.judgement


def _holds_for(known: _Judged, served: _Served, expected: ExpectedName) -> bool | None:
    """Whether `known`, judged for another name, is `expected`'s judgement as it stands (True), or but for its
    strict-profile note (False: the profile accepted the other name, and its own name check may read this one
    otherwise), or says nothing of it (None: judge it)."""
    if known.code is None:
        return None
    if known.code in _BEFORE_NAME_CHECK:
        return True
    leaf = _read_served(served)[0]
    if not (isinstance(leaf, libcrypto.Certificate) and libcrypto.covers(leaf, str(expected))):
        return None
    if known.strict_path is None:
        return True
    named_leaf = served.parsed[0]
    alike = known.named is not None and named_leaf is not None and names_alike(named_leaf, known.named, expected)
    return alike and not known.judgement.strict_note


def _java_refusal(chain: tuple[bytes, ...], ctx: _Context, java: runtimes.JavaRules, at: int) -> ChainJudgement | None:
    """The refusal of Java's algorithm constraints on the path OpenSSL accepted (with no security level)."""
    path = [ctx.cert(d) for d in chain]
    if not path or any(c is None for c in path):
        return None
    found = runtimes.java_refusal(path, java, at)
    if found is None:
        return None
    code, depth, why = found
    # The path stays, as for OpenSSL's own policy refusals: it is the one Java refuses.
    path_fps = tuple(fingerprint(d) for d in chain)
    return ChainJudgement(Verdict.INVALID, path_fps, f"Java refuses {ctx.label(chain[depth])}: its {why}", code)


def _strict(chain: tuple[bytes, ...], served: _Served, ctx: _Context, at: int) -> str:
    path = [ctx.cert(d) for d in chain]
    if any(c is None for c in path):
        return "the CA/Browser Forum profile cannot parse a certificate of the path OpenSSL accepted"
    intermediates = [c for c in served.parsed[1:] if c is not None]
    when = datetime.fromtimestamp(at, UTC)
    return strict_note([c for c in path if c is not None], intermediates, ctx.trust.strict_store(), ctx.expected, when)


def _with_notes(j: ChainJudgement, notes: Sequence[str]) -> ChainJudgement:
    if not notes:
        return j
    detail = "; ".join([j.detail, *notes]) if j.detail else "; ".join(notes)
    return ChainJudgement(j.verdict, j.verified_path, detail, j.code, j.strict_note)


def _second(at: datetime) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"validation time must be a timezone-aware datetime, got {at!r}")
    return at.replace(microsecond=0)


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


def _served_of(chain: Sequence[bytes]) -> tuple[str, _Served, str]:
    """(key, OpenSSL's reading, the note on what the bounds left out) of a served chain, read once per chain."""
    bounded, note = _bound(chain)
    chain_key = _chain_key(bounded)
    return chain_key, _chain_cache.get_or_make(chain_key, lambda: _make_served(bounded)), note


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
    chain_key, served, note = _served_of(chain)
    rules = _rules_for(store)
    seconds = int(at_s.timestamp())
    key = _judgement_key(chain_key, served, store, str(expected), seconds)
    judgement = _judgement_cache.get(key)
    if judgement is None:
        judgement = _kept_or_made(key, lambda: _judge_named(served, store, expected, seconds, rules, key))
        _judgement_cache.put(key, judgement)
    return _with_notes(judgement, [*served.notes, note] if note else served.notes)


def _judgement_key(chain_key: str, served: _Served, store: LoadedStore, name: str, seconds: int) -> _JudgementKey:
    rules = _rules_for(store)
    when, exact = _time_key(seconds, served, _edges_for(store), _rule_edges(rules))
    return (chain_key, _store_key(store), name, when, exact, rules)


def _kept_or_made(key: _JudgementKey, make: Callable[[], ChainJudgement]) -> ChainJudgement:
    """The judgement an earlier CLI process kept for `key` (kept_judgements), else `make()`'s, kept for the next
    one when it holds for a whole span, not one exact second."""
    exact = key[4]
    # Only a process that keeps judgements (the CLI) pays for the key's text: an agent's are in memory alone.
    text = None if exact or not kept_judgements.keeping() else kept_judgements.key_text(key)
    kept = kept_judgements.load(text) if text is not None else None
    if kept is not None:
        verdict, path, detail, code, note = kept
        with contextlib.suppress(ValueError):  # a verdict this code no longer has: judge again
            return ChainJudgement(Verdict(verdict), path, detail, code, note)
    judgement = make()
    if text is not None:
        kept_judgements.store(
            text,
            (judgement.verdict.value, judgement.verified_path, judgement.detail, judgement.code, judgement.strict_note),
        )
    return judgement


def _combined_detail(agent: ChainJudgement, ref: ChainJudgement, agent_s: datetime, ref_s: datetime) -> str:
    if ref.verdict == agent.verdict:
        return agent.detail
    return (
        f"at agent time {agent_s.isoformat()}: {agent.verdict.value}"
        f"{': ' + agent.detail if agent.detail else ''}; "
        f"at reference time {ref_s.isoformat()}: {ref.verdict.value}"
        f"{': ' + ref.detail if ref.detail else ''}"
    )


def judge_against_stores(
    chain: Sequence[bytes],
    stores: Sequence[LoadedStore],
    expected_name: str,
    agent_time: datetime,
    reference_time: datetime | None,
) -> tuple[StoreVerdict, ...]:
    """One StoreVerdict per distinct store content: the verdict and OpenSSL code at the agent's clock
    and at the reference (true) time, the strict-profile note where OpenSSL accepts what the CA/B profile
    refuses. Stores with the identical (non-empty) root set and rules are judged once: the first in `stores` order
    keeps `store`, the others are named in its `same_as`.

    Without a reference time, the reference verdict repeats the agent-time one.
    """
    agent_s = _second(agent_time)
    ref_s = _second(reference_time) if reference_time is not None else agent_s
    key = _verdicts_key(chain, stores, expected_name, agent_s, ref_s)
    if key is None:
        return _judge_against_stores(chain, stores, expected_name, agent_s, ref_s)
    cached = _verdicts_cache.get(key)
    if cached is not None:
        return cached
    any_name_key = key[:3] + key[4:]
    verdicts = _verdicts_for_another_name(any_name_key, chain, expected_name)
    if verdicts is None:
        verdicts = _judge_against_stores(chain, stores, expected_name, agent_s, ref_s)
        # Where the two times disagree the detail names both seconds: such an answer holds for them alone.
        if not all(v.at_agent_time == v.at_reference_time for v in verdicts):
            return verdicts
        judged = _judged_as(chain, stores, expected_name, (agent_s, ref_s))
        if judged is not None:
            _any_name_cache.put(any_name_key, (verdicts, judged))
    _verdicts_cache.put(key, verdicts)
    return verdicts


def _verdicts_for_another_name(
    any_name_key: _AnyNameKey, chain: Sequence[bytes], expected_name: str
) -> tuple[StoreVerdict, ...] | None:
    """The verdicts judged for another name, where every store's judgement holds for this one as it stands
    (`_holds_for`, the rule each store's own judgement follows): one name check, not a judging per store."""
    known = _any_name_cache.get(any_name_key)
    if known is None:
        return None
    verdicts, judged = known
    served = _served_of(chain)[1]
    expected = parse_expected_name(expected_name)
    return verdicts if all(_holds_for(j, served, expected) for j in judged) else None


def _judged_as(
    chain: Sequence[bytes], stores: Sequence[LoadedStore], expected_name: str, times: tuple[datetime, ...]
) -> tuple[_Judged, ...] | None:
    """What OpenSSL concluded of the chain for each store content and time just judged, as `_judge_named` keeps it
    for other names, where each is this name's judgement as it stands; None where one is not."""
    chain_key, served, _ = _served_of(chain)
    expected = parse_expected_name(expected_name)
    judged: dict[_UnnamedKey, _Judged] = {}
    for store in stores:
        for at in times:
            key = _judgement_key(chain_key, served, store, expected_name, int(at.timestamp()))
            unnamed_key = (key[0], key[1], key[3], key[4], key[5])
            known = _unnamed_cache.get(unnamed_key)
            if known is None or not _holds_for(known, served, expected):
                return None
            judged[unnamed_key] = known
    return tuple(judged.values())


def _verdicts_key(
    chain: Sequence[bytes], stores: Sequence[LoadedStore], expected_name: str, agent_s: datetime, ref_s: datetime
) -> _VerdictsKey | None:
    """What a probe's store verdicts depend on: the served chain, each store's content and name, the name,
    and both times as spans in which no certificate of the chain or of any store changes validity. None
    when the input is not plain DER bytes (the uncached road raises the error)."""
    if isinstance(chain, bytes | bytearray | str) or not chain or not all(isinstance(d, bytes) for d in chain):
        return None
    chain_key, served, _ = _served_of(chain)
    names, edges = _stores_identity(stores)
    rules = tuple(_rules_for(store) for store in stores)  # they change with discovery, not with the stores' content
    rule_edges = tuple(sorted({edge for r in rules for edge in _rule_edges(r)}))
    return (
        chain_key,
        names,
        rules,
        expected_name,
        _time_key(int(agent_s.timestamp()), served, edges, rule_edges),
        _time_key(int(ref_s.timestamp()), served, edges, rule_edges),
    )


_last_stores: tuple[Sequence[LoadedStore], tuple[tuple[str, str], ...], tuple[int, ...]] | None = None


def _stores_identity(stores: Sequence[LoadedStore]) -> tuple[tuple[tuple[str, str], ...], tuple[int, ...]]:
    """(content key and name of each store, the sorted validity edges of all their certificates), kept for
    the stores a probe engine hands over again and again (the same tuple until they change)."""
    global _last_stores
    last = _last_stores
    if last is not None and last[0] is stores:
        return last[1], last[2]
    names = tuple((_store_key(store), store.info.name) for store in stores)
    edges = tuple(sorted({edge for store in stores for edge in _edges_for(store)}))
    if isinstance(stores, tuple):  # immutable: the same object has the same content
        _last_stores = (stores, names, edges)
    return names, edges


def _judge_against_stores(
    chain: Sequence[bytes], stores: Sequence[LoadedStore], expected_name: str, agent_s: datetime, ref_s: datetime
) -> tuple[StoreVerdict, ...]:
    # One verdict per content and way of verifying: node's or Java's store may hold the system's roots.
    groups: dict[tuple[str, VerifyRules], list[LoadedStore]] = {}
    for store in stores:
        groups.setdefault((_store_key(store), _rules_for(store)), []).append(store)
    out: list[StoreVerdict] = []
    for first, *others in groups.values():
        at_agent = verify_chain(chain, first, expected_name, agent_s)
        at_ref = at_agent if ref_s == agent_s else verify_chain(chain, first, expected_name, ref_s)
        out.append(
            StoreVerdict(
                store=first.info.name,
                at_agent_time=at_agent.verdict,
                at_reference_time=at_ref.verdict,
                verified_path=at_agent.verified_path or at_ref.verified_path,
                detail=_combined_detail(at_agent, at_ref, agent_s, ref_s),
                verify_code=at_agent.code,
                reference_verify_code=at_ref.code,
                strict_note=at_agent.strict_note or at_ref.strict_note,
                same_as=tuple(s.info.name for s in others),
            )
        )
    return tuple(out)


# --- the native client's own verification, offline --------------------------------------------------

# X509_CHECK_FLAG_* that CPython's contexts set on their verify parameters (Modules/_ssl.c).
X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS = 0x4
X509_CHECK_FLAG_NEVER_CHECK_SUBJECT = 0x20
_NATIVE_CACHE_SIZE = 1024


@dataclass(frozen=True)
class NativeCheck:
    """The verification parameters of one client context, as its handshake hands them to OpenSSL."""

    host: str | None  # the name (or IP literal) checked; None: no name check
    security_level: int  # SSL_get_security_level: the verification's auth level
    verify_flags: int  # X509_V_FLAG_* of the context (X509_VERIFY_PARAM_get_flags)
    checks_common_name: bool  # False: X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
    # True: OpenSSL's default name check, which honours "f*.example.com" as `openssl s_client` does; False:
    # X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, which CPython sets on every context it makes.
    partial_wildcards: bool = False


class NativeVerifier:
    """The chain verification an OpenSSL client context runs inside its handshake (ssl_verify_cert_chain),
    run offline: X509_verify_cert with the store that context loads (`cafile` alone, as
    `load_verify_locations(cafile)`; else OpenSSL's default verify paths: SSL_CERT_FILE, SSL_CERT_DIR and their
    built-in defaults, as `set_default_verify_paths`), the whole served chain as untrusted certificates,
    the "ssl_server" defaults, the context's X509_V_FLAG_* flags, CPython's host flags, its name or IP check
    and its security level as the auth level.

    `verify` gives that verification's X509_V_ERR code. Acceptances are cached by served chain, parameters
    and span (never across a validity edge of a served or path certificate), and serve another name that the
    context's name check finds the leaf covers; refusals are verified again each time. A new verifier reads
    the stores anew (the environment as it is then); drop it when they change.

    The default file (some 30 ms to read whole into OpenSSL for a system bundle) is read into the store as
    chains reach its certificates (`_DefaultPaths`); a verification that fails, or whose path holds a
    certificate the directories gave, or that checks CRLs, is answered by the store set_default_verify_paths
    loads, whole.
    """

    def __init__(self, cafile: str | None) -> None:
        self._cafile = cafile
        self._store: int | None = None
        self._lock = threading.Lock()
        self._accepted: _LRU[tuple[str, NativeCheck, int], bool] = _LRU(_NATIVE_CACHE_SIZE)
        # The same acceptances with the name left out: another name the leaf covers is accepted too.
        self._accepted_any_name: _LRU[tuple[str, NativeCheck, int], bool] = _LRU(_NATIVE_CACHE_SIZE)
        self._chain_edges: _LRU[str, tuple[int, ...] | None] = _LRU(_NATIVE_CACHE_SIZE)
        self._defaults: _DefaultPaths | None = None
        self._defaults_tried = cafile is not None  # an explicit bundle is read whole, as the context reads it

    def verify(self, chain: tuple[bytes, ...], check: NativeCheck, at: int) -> int:
        """The X509_V_ERR code of OpenSSL's in-handshake verification of `chain` (DER, leaf first, as served:
        a handshake bounds its size) at Unix time `at`; 0 when it succeeds. Raises OpenSSLUnavailable when
        libcrypto cannot be used here."""
        if not chain:
            return X509_V_ERR_UNSPECIFIED
        chain_key = _chain_key(chain)
        chain_edges = self._chain_edges.get_or_make(chain_key, lambda: _path_edges(chain))
        if chain_edges is None:
            return self._verified(chain, check, at)[0]
        start, end = _span(at, chain_edges)
        key = (chain_key, check, start)
        if self._accepted.get(key):
            return X509_V_OK
        # Accepted for another name: OpenSSL's name check alone tells this one (see _judge_named).
        unnamed = (chain_key, replace(check, host=None), start)
        if check.host and self._accepted_any_name.get(unnamed) and _client_covers(chain, check):
            self._accepted.put(key, True)
            return X509_V_OK
        code, path = self._verified(chain, check, at)
        if code == X509_V_OK:
            # The span is the served chain's; the path's store certificates must not change validity inside it.
            path_edges = _path_edges(path)
            if path_edges is not None and not _edge_inside(path_edges, start, end):
                self._accepted.put(key, True)
                self._accepted_any_name.put(unnamed, True)
        return code

    def _verified(self, chain: tuple[bytes, ...], check: NativeCheck, at: int) -> tuple[int, tuple[bytes, ...]]:
        defaults = None if check.verify_flags & _CRL_FLAGS else self._default_paths()
        if defaults is not None:
            code, path = _verify_as_client(defaults.store_for(chain), chain, check, at)
            if code == X509_V_OK and all(d in chain or fingerprint(d) in defaults.trust.fps for d in path):
                return code, path
        return _verify_as_client(self._native_store(), chain, check, at)

    def _default_paths(self) -> _DefaultPaths | None:
        with self._lock:
            if not self._defaults_tried:
                self._defaults_tried = True
                self._defaults = _DefaultPaths.read()
            return self._defaults

    def _native_store(self) -> int:
        with self._lock:
            if self._store is None:
                self._store = _client_store(self._cafile)
            return self._store

    def __del__(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone
                _crypto_function("X509_STORE_free", None, [ctypes.c_void_p])(store)


_CRL_FLAGS = 0x4 | 0x8  # X509_V_FLAG_CRL_CHECK, X509_V_FLAG_CRL_CHECK_ALL: the default file's CRLs count then
_X509_L_ADD_DIR = 2
_X509_L_ADD_STORE = 4
_X509_FILETYPE_DEFAULT = 3


@dataclass(eq=False)
class _DefaultPaths:
    """The store X509_STORE_set_default_paths builds, but for when the default file's certificates are read in:
    as chains reach them (issuer_lookup), where the whole file would be read at once. Its directory (and, on
    OpenSSL 3, store URI) lookups are OpenSSL's own, as set_default_paths adds them; they read lazily anyway."""

    trust: _Trust  # the default file's certificates, and the X509_STORE that holds those read in so far

    @classmethod
    def read(cls) -> _DefaultPaths | None:
        """The default file as OpenSSL finds it (its environment variable, else the built-in path), or None when
        stores.openssl_bundle cannot vouch for reading it as OpenSSL does."""
        crypto = libcrypto._library().crypto
        variable = os.fsdecode(_crypto_function("X509_get_default_cert_file_env", ctypes.c_char_p, [])() or b"")
        built_in = os.fsdecode(_crypto_function("X509_get_default_cert_file", ctypes.c_char_p, [])() or b"")
        path = os.environ.get(variable, built_in)  # set but empty: OpenSSL reads that (no) file
        bundle = openssl_bundle("default verify paths", path)
        if bundle is None:
            return None
        trust = _make_trust(bundle)
        if trust.native is None:
            return None
        vp = ctypes.c_void_p
        add_lookup = _crypto_function("X509_STORE_add_lookup", vp, [vp, vp])
        control = _crypto_function(
            "X509_LOOKUP_ctrl", ctypes.c_int, [vp, ctypes.c_int, ctypes.c_char_p, ctypes.c_long, vp]
        )
        lookups = [("X509_LOOKUP_hash_dir", _X509_L_ADD_DIR, _X509_FILETYPE_DEFAULT)]
        if hasattr(crypto, "X509_LOOKUP_store"):  # OpenSSL 3: the default store URI too
            lookups.append(("X509_LOOKUP_store", _X509_L_ADD_STORE, 0))
        for method, command, argument in lookups:
            lookup = add_lookup(trust.native.handle, _crypto_function(method, vp, [])())
            if lookup:
                control(lookup, command, None, argument, None)
        _crypto_function("ERR_clear_error", None, [])()
        return cls(trust)

    def store_for(self, chain: tuple[bytes, ...]) -> int:
        """The store, with every default-file certificate chain building can reach from `chain` read in."""
        return self.trust.native_for(_served_of(chain)[1]).handle


def _client_covers(chain: tuple[bytes, ...], check: NativeCheck) -> bool:
    """Whether the leaf passes the name check a client context with `check`'s parameters makes."""
    assert check.host is not None
    leaf = _read_served(_served_of(chain)[1])[:1]
    if not leaf or not isinstance(leaf[0], libcrypto.Certificate):
        return False
    hostflags = 0 if check.partial_wildcards else X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    if not check.checks_common_name:
        hostflags |= X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
    return libcrypto.covers(leaf[0], check.host, hostflags=hostflags, client_rule=True)


def _crypto_function(name: str, restype: Any, argtypes: list[Any]) -> Any:
    """A function of the libcrypto `libcrypto` loaded, with a prototype of its own (indexing makes a new
    function object, so the module's own prototypes stay as they are)."""
    function = libcrypto._library().crypto[name]
    function.restype = restype
    function.argtypes = argtypes
    return function


def _client_store(cafile: str | None) -> int:
    """An X509_STORE loaded as a client context loads its own."""
    vp = ctypes.c_void_p
    store = _crypto_function("X509_STORE_new", vp, [])()
    if not store:
        raise MemoryError("X509_STORE_new failed")
    if cafile is not None:
        _crypto_function("X509_STORE_load_locations", ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_char_p])(
            store, os.fsencode(cafile), None
        )
    else:
        _crypto_function("X509_STORE_set_default_paths", ctypes.c_int, [vp])(store)
    _crypto_function("ERR_clear_error", None, [])()
    return int(store)


def _verify_as_client(
    store: int, chain: tuple[bytes, ...], check: NativeCheck, at: int
) -> tuple[int, tuple[bytes, ...]]:
    """(X509_V_ERR code, DER of the path OpenSSL built) of ssl_verify_cert_chain's X509_verify_cert."""
    vp = ctypes.c_void_p
    crypto = libcrypto._library().crypto
    set_flags = _crypto_function("X509_VERIFY_PARAM_set_flags", ctypes.c_int, [vp, ctypes.c_ulong])
    set_hostflags = _crypto_function("X509_VERIFY_PARAM_set_hostflags", None, [vp, ctypes.c_uint])
    certs = [libcrypto._d2i(crypto, der) for der in chain]
    stack = ctx = built = None
    try:
        if certs[0] is None:
            return X509_V_ERR_UNSPECIFIED, ()
        stack = crypto.OPENSSL_sk_new_null()
        if not stack:
            raise MemoryError("OPENSSL_sk_new_null failed")
        for x in certs:
            # The handshake hands OpenSSL the whole peer chain, leaf included, as untrusted certificates.
            if x is not None and crypto.OPENSSL_sk_push(stack, x) <= 0:
                raise MemoryError("OPENSSL_sk_push failed")
        ctx = crypto.X509_STORE_CTX_new()
        if not ctx or crypto.X509_STORE_CTX_init(ctx, store, certs[0], stack) != 1:
            raise MemoryError("X509_STORE_CTX_init failed")
        crypto.X509_STORE_CTX_set_default(ctx, b"ssl_server")
        param = crypto.X509_STORE_CTX_get0_param(ctx)
        set_flags(param, check.verify_flags)
        hostflags = 0 if check.partial_wildcards else X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
        if not check.checks_common_name:
            hostflags |= X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
        set_hostflags(param, hostflags)
        if check.host:
            encoded = check.host.encode("ascii")
            # As CPython: an IP literal (a2i_IPADDRESS) is checked as an address, anything else as a name.
            if crypto.X509_VERIFY_PARAM_set1_ip_asc(param, encoded) != 1:
                crypto.ERR_clear_error()
                if crypto.X509_VERIFY_PARAM_set1_host(param, encoded, len(encoded)) != 1:
                    return X509_V_ERR_UNSPECIFIED, ()
        crypto.X509_VERIFY_PARAM_set_auth_level(param, check.security_level)
        crypto.X509_VERIFY_PARAM_set_time(param, at)
        if crypto.X509_verify_cert(ctx) != 1:
            return int(crypto.X509_STORE_CTX_get_error(ctx)) or X509_V_ERR_UNSPECIFIED, ()
        built = crypto.X509_STORE_CTX_get1_chain(ctx)
        path: list[bytes] = []
        if built:
            for i in range(crypto.OPENSSL_sk_num(built)):
                path.append(libcrypto._i2d(crypto, crypto.OPENSSL_sk_value(built, i)))
        return X509_V_OK, tuple(path)
    finally:
        if built:
            for i in range(crypto.OPENSSL_sk_num(built)):
                crypto.X509_free(crypto.OPENSSL_sk_value(built, i))
            crypto.OPENSSL_sk_free(built)
        if ctx:
            crypto.X509_STORE_CTX_free(ctx)
        if stack:
            crypto.OPENSSL_sk_free(stack)
        for x in certs:
            if x is not None:
                crypto.X509_free(x)
        crypto.ERR_clear_error()


def _path_edges(path: tuple[bytes, ...]) -> tuple[int, ...] | None:
    """Sorted validity edges of every certificate of a verified path; None when one cannot be read."""
    edges: set[int] = set()
    for der in path:
        try:
            edges.update(_edges(parse_der(der)))
        except CertificateParseError:
            return None
    return tuple(sorted(edges))
