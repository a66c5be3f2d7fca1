"""Which certificates of a trust store OpenSSL's chain building can reach from one served chain.

X509_verify_cert consults its trusted store by subject name only: for the issuer of each certificate on
the path it builds (X509_STORE_CTX_get1_issuer) and for the leaf itself (a leaf trusted as such). Names are
equal when X509_NAME_cmp finds their canonical encodings equal: each value as UTF-8 whatever its string
type, leading and trailing spaces dropped, inner runs of spaces made one, ASCII letters lowered, the
attributes of a multi-valued RDN in any order. A store holding the certificates whose subject is the issuer
or subject of a served certificate, then the issuers of those in turn, therefore verifies the chain exactly
as the whole store does: the certificates it lacks are never looked up. Reading a certificate into OpenSSL
costs about 0.14 ms, so a fresh process judging one chain against a few stores of 150 roots reads a handful
instead of hundreds.

Where OpenSSL found no issuer although the store or the served chain holds a certificate of the issuer's name,
`held_namesakes` and `served_namesakes` name it and say why OpenSSL passed it over.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.general_name import UnsupportedGeneralNameType

from . import certinfo, store_cache
from .certinfo import DER, fingerprint, name_text, raw_name_attributes

__all__ = ["NameKey", "StoreIndex", "chain_names", "forget_keys", "held_namesakes", "name_key", "served_namesakes"]

# One entry per RDN in order: the (attribute OID, compared value) pairs of that RDN.
NameKey = tuple[frozenset[tuple[str, str | bytes]], ...]


def name_key(name: x509.Name) -> NameKey | None:
    """A key that every two names X509_NAME_cmp finds equal share. Python's whitespace and lowering reach
    further than OpenSSL's ASCII ones, so a few names OpenSSL tells apart may share a key too: that only
    adds a candidate OpenSSL then passes over. None when a value cannot be read."""
    try:
        return tuple(frozenset((a.oid.dotted_string, _compared(a.value)) for a in rdn) for rdn in name.rdns)
    except (ValueError, TypeError, UnicodeError):
        return None


def _compared(value: str | bytes) -> str | bytes:
    return " ".join(value.split()).lower() if isinstance(value, str) else bytes(value)


def _raw_key(cert: x509.Certificate, issuer: bool) -> NameKey | None:
    """`name_key` of a name cryptography refuses to read (an empty RDN, one attribute twice in an RDN), taken
    from the DER: OpenSSL's canonical encoding leaves empty RDNs out, and compares such names with the others."""
    try:
        rdns = raw_name_attributes(cert, issuer)
    except (IndexError, ValueError):
        return None
    return tuple(frozenset((oid, _compared(value)) for oid, value in rdn) for rdn in rdns if rdn)


def _key_of(cert: x509.Certificate, issuer: bool) -> NameKey | None:
    try:
        name = cert.issuer if issuer else cert.subject
    except ValueError:
        return _raw_key(cert, issuer)
    return name_key(name)


def _keys(cert: x509.Certificate) -> tuple[NameKey | None, NameKey | None]:
    subject = _key_of(cert, issuer=False)
    if _issuer_is_subject(cert):  # a root, mostly: one reading of the name serves as both
        return subject, subject
    return subject, _key_of(cert, issuer=True)


# A host's stores share most of their roots (as one object each, see stores.py): each is keyed once. Bounded
# like stores.py's shared certificates; a certificate equals another only with the same DER.
_STORE_KEYS_SIZE = 4096


@lru_cache(maxsize=_STORE_KEYS_SIZE)
def _store_keys(cert: x509.Certificate) -> tuple[NameKey | None, NameKey | None]:
    return _keys(cert)


def _kept_keys(cert: x509.Certificate, fp: str) -> tuple[NameKey | None, NameKey | None]:
    """`_store_keys(cert)`, taken from what an earlier process read of the certificate whose DER has the sha256
    `fp` when the CLI keeps it (store_cache), else read and kept: a fresh process judging with a host's stores
    would otherwise read some 170 roots' names (about 6 ms)."""
    found = _keys_by_fp.get(fp)
    if found is not None:
        return found  # another store of this process holds the certificate too
    stamp = _keys_stamp()
    kept = store_cache.load_names(fp, stamp)
    keys: tuple[NameKey | None, NameKey | None]
    if kept is not None and _are_keys(kept):
        keys = kept  # type: ignore[assignment]  # checked by _are_keys
    else:
        keys = _store_keys(cert)
        store_cache.store_names(fp, stamp, keys)
    if len(_keys_by_fp) >= _STORE_KEYS_SIZE:
        _keys_by_fp.clear()
    _keys_by_fp[fp] = keys
    return keys


_keys_by_fp: dict[str, tuple[NameKey | None, NameKey | None]] = {}


def forget_keys() -> None:
    """Drop the names this process took from the cache or read, by fingerprint (they never go stale: a
    certificate's names are a function of its DER); the next store index takes them from the cache again."""
    _keys_by_fp.clear()


_stamp: str | None = None


def _keys_stamp() -> str:
    """What a kept reading depends on: the modules holding the code that reads names into keys (this one and
    certinfo, whose raw_name_attributes it calls), and cryptography's version. Their files' bytes, not their code
    objects: marshal's encoding of a code object changes with the reference counts of its constants."""
    global _stamp
    if _stamp is None:
        import cryptography

        digest = hashlib.sha256(cryptography.__version__.encode())
        for path in (__file__, certinfo.__file__):
            try:
                digest.update(Path(path).read_bytes())
            except OSError:  # no readable source: a stamp no earlier process had, so nothing kept is taken
                digest.update(os.urandom(16))
        _stamp = digest.hexdigest()[:32]
    return _stamp


def _are_keys(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(key is None or _is_name_key(key) for key in value)


def _is_name_key(key: object) -> bool:
    return isinstance(key, tuple) and all(
        isinstance(rdn, frozenset)
        and all(
            isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str | bytes)
            for pair in rdn
        )
        for rdn in key
    )


def _tlv_end(der: bytes, pos: int, tag: int) -> int:
    """Where the DER element at `pos` ends; ValueError unless it has the one-byte `tag`."""
    if der[pos] != tag:
        raise ValueError("unexpected tag")
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2 + first
    n = first & 0x7F
    return pos + 2 + n + int.from_bytes(der[pos + 2 : pos + 2 + n], "big")


def _issuer_is_subject(cert: x509.Certificate) -> bool:
    """Whether the issuer and subject names are the same bytes: then they are one name, and reading it once
    (about 35 us a name) does for both. False when the TBSCertificate is not laid out as expected."""
    tbs = cert.tbs_certificate_bytes
    try:
        pos = 2 + (tbs[1] & 0x7F if tbs[1] >= 0x80 else 0)  # into the TBSCertificate SEQUENCE
        if tbs[pos] == 0xA0:  # version
            pos = _tlv_end(tbs, pos, 0xA0)
        pos = _tlv_end(tbs, _tlv_end(tbs, pos, 0x02), 0x30)  # serialNumber, signature
        issuer_end = _tlv_end(tbs, pos, 0x30)
        subject = _tlv_end(tbs, issuer_end, 0x30)  # validity
        return tbs[pos:issuer_end] == tbs[subject : _tlv_end(tbs, subject, 0x30)]
    except (IndexError, ValueError):
        return False


def chain_names(served: Sequence[x509.Certificate | None]) -> tuple[NameKey, ...] | None:
    """The issuer and subject keys of every served certificate; None when one cannot be read (a certificate
    only OpenSSL reads is None)."""
    names: list[NameKey] = []
    for cert in served:
        subject, issuer = _keys(cert) if cert is not None else (None, None)
        if subject is None or issuer is None:
            return None
        names += (issuer, subject)
    return tuple(names)


@dataclass(frozen=True)
class StoreIndex:
    """A store's certificates (by position) by the key of their subject, and the key of each one's issuer."""

    by_subject: dict[NameKey, tuple[int, ...]]
    issuers: tuple[NameKey | None, ...]
    unkeyed: tuple[int, ...]  # names that cannot be read: candidates for every chain

    @classmethod
    def of(cls, certs: Sequence[x509.Certificate], fingerprints: Sequence[str] = ()) -> StoreIndex:
        """The index of `certs`; with their DERs' sha256 (`fingerprints`, in the same order), names that an
        earlier CLI process read are taken as it kept them."""
        by_subject: dict[NameKey, list[int]] = {}
        issuers: list[NameKey | None] = []
        unkeyed: list[int] = []
        kept = len(fingerprints) == len(certs)
        for i, cert in enumerate(certs):
            subject, issuer = _kept_keys(cert, fingerprints[i]) if kept else _store_keys(cert)
            issuers.append(issuer)
            if subject is None or issuer is None:
                unkeyed.append(i)
            else:
                by_subject.setdefault(subject, []).append(i)
        return cls({k: tuple(v) for k, v in by_subject.items()}, tuple(issuers), tuple(unkeyed))

    def reachable(self, served: Sequence[NameKey] | None) -> list[int] | None:
        """The positions of the store certificates chain building can reach from a served chain whose
        names are `served` (chain_names), in order; None for a chain whose names cannot all be read (then
        every certificate can be)."""
        if served is None:
            return None
        wanted = list(served)
        found = set(self.unkeyed)
        seen: set[NameKey] = set()
        while wanted:
            key = wanted.pop()
            if key in seen:
                continue
            seen.add(key)
            for i in self.by_subject.get(key, ()):
                if i not in found:
                    found.add(i)
                    issuer = self.issuers[i]
                    if issuer is not None:
                        wanted.append(issuer)
        return sorted(found)


_MAX_NAMESAKES = 2


def _key_ids(cert: x509.Certificate) -> tuple[bytes | None, bytes | None, str]:
    """(Authority key id, Subject key id, why the extensions cannot be read: "" when they can)."""
    try:
        extensions = cert.extensions
    except x509.DuplicateExtension as exc:
        return None, None, f"it has more than one {exc.oid.dotted_string} extension"
    except UnsupportedGeneralNameType:
        return None, None, "it names an x400Address or ediPartyName, which cryptography does not read"
    except ValueError:
        return None, None, "an extension of it is malformed"
    aki = ski = None
    for ext in extensions:
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            aki = ext.value.key_identifier
        elif isinstance(ext.value, x509.SubjectKeyIdentifier):
            ski = ext.value.digest
    return aki, ski, ""


_NO_LINK_TO = ", but OpenSSL links no certificate whose extensions it finds invalid to an issuer"
_NO_ISSUER = ", but OpenSSL takes no certificate whose extensions it finds invalid for an issuer"
# encipherOnly and decipherOnly count only beside keyAgreement (cryptography refuses to read them otherwise).
_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")


def _refusal(cert: x509.Certificate, candidate: x509.Certificate) -> str:
    """Why OpenSSL does not take `candidate`, named as `cert`'s issuer, for that issuer (a clause)."""
    aki, _, unreadable = _key_ids(cert)
    if unreadable:
        return f"{_NO_LINK_TO}: {unreadable}"
    _, ski, unreadable = _key_ids(candidate)
    if unreadable:
        return f"{_NO_ISSUER}: {unreadable}"
    if aki and ski and aki != ski:
        return f" under another key: its key id is {ski.hex()}, the Authority Key Identifier names {aki.hex()}"
    for ext in candidate.extensions:
        usage = ext.value
        if isinstance(usage, x509.KeyUsage) and not (
            any(getattr(usage, name) for name in _USAGES) or usage.key_cert_sign or usage.crl_sign
        ):
            return f"{_NO_ISSUER}: its keyUsage is empty"
    try:
        candidate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return ", but its public key cannot be read"
    return ", but OpenSSL does not take it for the issuer"


def held_namesakes(der: bytes, holders: Sequence[x509.Certificate], index: StoreIndex, where: str = "the store") -> str:
    """Why OpenSSL finds no issuer for the certificate `der` among `holders` (indexed as `index`; `where` names
    them) though some bear its issuer's name: "" when none does, or `der` is not a certificate. OpenSSL takes a
    certificate of that name for the issuer only when the Authority Key Identifier (if any) names its key and it
    finds the extensions of both valid (none repeated or malformed, no empty keyUsage); a keyUsage without
    keyCertSign is refused later (79), not here."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return ""
    key = _key_of(cert, issuer=True)
    if key is None:
        return ""
    out = []
    for i in index.by_subject.get(key, ())[:_MAX_NAMESAKES]:
        candidate = holders[i]
        candidate_der = candidate.public_bytes(DER)
        if candidate_der == der:
            continue
        label = f"'{name_text(candidate)}' ({fingerprint(candidate_der)[:12]})"
        out.append(f"{where} holds {label}{_refusal(cert, candidate)}")
    return "; ".join(out)


def served_namesakes(der: bytes, served: Sequence[bytes]) -> str:
    """`held_namesakes` among the served certificates `served` (DER), those whose extensions `cryptography`
    refuses included: OpenSSL reads them, and their names are what it matches."""
    holders = []
    for other in served:
        if other == der:
            continue
        try:
            holders.append(x509.load_der_x509_certificate(other))
        except ValueError:
            continue
    return held_namesakes(der, holders, StoreIndex.of(holders), "the served chain")
