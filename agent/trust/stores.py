"""Every trust store on the host, read into root sets that offline verification can use.

A store is identified by its content: the sha256 over its sorted root fingerprints. Two names may share
one content (SSL_CERT_FILE pointing at the system bundle); discovery keeps both, and the equal
fingerprints tell the reader. Reading is cached by (path, inode, mtime, size), so refreshing is cheap.
A store that cannot be read becomes a TrustStore with `error` set, never an exception. A TRUSTED CERTIFICATE
block's trust settings are kept beside its root (LoadedStore.aux) and a certificate only OpenSSL reads beside
the roots (LoadedStore.opaque), for the verdict; the fingerprint and root count name the roots alone.

Runtime stores (certifi, Java's cacerts, NODE_EXTRA_CA_CERTS as Node's) come from the runtimes really on
the host (runtimes.py) and carry `runtime` and `found_by`; a store the operator named (--runtime,
--extra-store) or a variable points at (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, JAVA_HOME...) is `declared`.
Names stay what they were ("certifi", "java", "java_home"); a second store of one kind is named after where
it lives ("certifi:/usr/lib/python3/dist-packages", "java:/opt/jdk-21"). `watch_signature` over
`Discovery.watches` is the cheap check that says whether anything discovery read may have changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import ssl
import stat
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from ..bounded_read import FileTooLarge, read_capped
from ..model import TrustStore
from . import store_cache
from .certinfo import DER
from .node_roots import Source, ask_node, node_trust, sources
from .runtimes import Runtime, RuntimeOptions, Watch, find_runtimes, forget_answers, search_watches

__all__ = [
    "MAX_DIR_BYTES",
    "MAX_DIR_FILES",
    "MAX_FILE_BYTES",
    "Discovery",
    "LoadedStore",
    "discover",
    "discover_stores",
    "forget_cached_reads",
    "load_store",
    "openssl_bundle",
    "store_fingerprint",
    "watch_signature",
]

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_DIR_FILES = 4096
MAX_DIR_BYTES = 64 * 1024 * 1024
JAVA_DEFAULT_PASSWORD = "changeit"

KIND_FILE = "file"
KIND_DIR = "dir"
KIND_JAVA = "java-keystore"

# Bundles that distributions install, tried when OpenSSL's compiled-in default is absent or differs.
WELL_KNOWN_BUNDLES: tuple[str, ...] = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # RHEL 7+
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine, macOS, FreeBSD
)
WELL_KNOWN_DIRS: tuple[str, ...] = ("/etc/ssl/certs",)

_JKS_MAGIC = 0xFEEDFEED
_JCEKS_MAGIC = 0xCECECECE
_MAX_KEYSTORE_ENTRIES = 100_000


@dataclass(frozen=True)
class LoadedStore:
    """A store's identity together with its roots, ready for verification."""

    info: TrustStore
    roots: tuple[x509.Certificate, ...]
    detail: str = ""  # how a runtime uses the store, when that differs from "these roots only"
    # Per root, the trust settings a TRUSTED CERTIFICATE block gave it (X509_CERT_AUX DER, b"" for a plain
    # CERTIFICATE); () when no root has any. OpenSSL honours them: a rejected or trusted purpose, an anchor.
    aux: tuple[bytes, ...] = ()
    # (DER, trust settings) of certificates OpenSSL reads and cryptography refuses (an encoded DEFAULT, say):
    # OpenSSL trusts them as any other, so the verdict does; nothing else can read them.
    opaque: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class _Read:
    """What reading one store file or directory gave: its roots, their fingerprints and what went wrong."""

    roots: tuple[x509.Certificate, ...] = ()
    fingerprints: tuple[str, ...] = ()
    error: str = ""
    aux: tuple[bytes, ...] = ()  # as LoadedStore.aux
    opaque: tuple[tuple[bytes, bytes], ...] = ()  # as LoadedStore.opaque


# (sha256 of the certificate's DER, the certificate, its trust settings or b"")
_Entry = tuple[str, x509.Certificate, bytes]


def _entries(read: _Read) -> Iterator[_Entry]:
    return zip(read.fingerprints, read.roots, read.aux or repeat(b"", len(read.roots)), strict=True)


def store_fingerprint(root_fingerprints: Iterator[str] | tuple[str, ...] | list[str]) -> str:
    """sha256 hex over the sorted, distinct root fingerprints (hex) concatenated; "" for no roots."""
    fps = sorted(set(root_fingerprints))
    if not fps:
        return ""
    return hashlib.sha256("".join(fps).encode("ascii")).hexdigest()


# A host's stores mostly hold the same roots (the system bundle and directory, Java's and node's copies): one
# certificate object per DER serves them all, and what is read from it once (its names, for issuer lookup
# and judgement) is then read once. A certificate is a function of its bytes, so sharing it changes nothing.
_SHARED_CERTIFICATES = 4096


_certificates: dict[bytes, x509.Certificate] = {}
_ders: dict[x509.Certificate, bytes] = {}  # the other way round: a certificate equals another only with its DER


def _load_der(der: bytes) -> x509.Certificate:
    cert = _certificates.get(der)
    if cert is None:
        # Real system stores hold a root with a non-positive serial; the warning would repeat on every host.
        # Parsing happens once per file change, so the (process-wide) warnings switch is rarely flipped.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
        if len(_certificates) >= _SHARED_CERTIFICATES:
            _forget_certificates()
        _certificates[der] = cert
        _ders[cert] = der
    return cert


def der_of(cert: x509.Certificate) -> bytes:
    """The DER a store's certificate was read from: looked up, where cryptography would encode it anew
    (some 10 us a certificate, for every root of every store a fresh process judges with)."""
    der = _ders.get(cert)
    return der if der is not None else cert.public_bytes(DER)


def _forget_certificates() -> None:
    _certificates.clear()
    _ders.clear()


def _merge(certs: Iterable[_Entry]) -> tuple[tuple[x509.Certificate, ...], tuple[str, ...], tuple[bytes, ...]]:
    """Distinct certificates by fingerprint, keeping first-seen order and the first one's trust settings (as
    X509_STORE_add_cert keeps the first of equal certificates, whatever their aux)."""
    seen: dict[str, tuple[x509.Certificate, bytes]] = {}
    for fp, cert, aux in certs:
        seen.setdefault(fp, (cert, aux))
    auxes = tuple(aux for _, aux in seen.values())
    return tuple(cert for cert, _ in seen.values()), tuple(seen.keys()), auxes if any(auxes) else ()


def _der_sequence_prefix(data: bytes) -> bytes:
    """The first DER SEQUENCE in `data`: a TRUSTED CERTIFICATE block is a certificate plus trailing aux."""
    if len(data) < 2 or data[0] != 0x30:
        return data
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    n = first & 0x7F
    if n == 0 or n > 4 or len(data) < 2 + n:
        return data
    length = int.from_bytes(data[2 : 2 + n], "big")
    return data[: 2 + n + length]


_LABELS = (b"CERTIFICATE-----", b"TRUSTED CERTIFICATE-----")
_TRUSTED_BEGIN = b"-----BEGIN TRUSTED CERTIFICATE-----"


def _label_at(data: bytes, at: int) -> bytes:
    """The certificate label that follows `-----BEGIN ` or `-----END ` at `at`; b"" for any other."""
    for label in _LABELS:
        if data.startswith(label, at):
            return label
    return b""


def _pem_blocks(data: bytes) -> list[tuple[bool, bytes]]:
    """(TRUSTED, body) of each CERTIFICATE or TRUSTED CERTIFICATE block, from its BEGIN line to the first END
    line of either label after it: what the non-greedy `-----BEGIN (TRUSTED )?CERTIFICATE-----(.*?)-----END
    (TRUSTED )?CERTIFICATE-----` finds, found with bytes.find (some ten times faster over a 200 KiB bundle)."""
    blocks: list[tuple[bool, bytes]] = []
    pos = 0
    while (begin := data.find(b"-----BEGIN ", pos)) >= 0:
        label = _label_at(data, begin + 11)
        if not label:
            pos = begin + 1
            continue
        body = end = begin + 11 + len(label)
        closing = b""
        while (end := data.find(b"-----END ", end)) >= 0:
            if closing := _label_at(data, end + 9):
                break
            end += 1
        if not closing:
            break  # no END after this BEGIN, so none after a later one either
        blocks.append((label == _LABELS[1], data[body:end]))
        pos = end + 9 + len(closing)
    return blocks


def _openssl_reads(der: bytes) -> bool:
    """Whether libcrypto, which the verdict uses, reads the certificate cryptography refused."""
    from . import libcrypto  # loaded only for such a certificate, which is rare

    return not libcrypto.unavailable_reason() and libcrypto.parses(der)


def _parse_certificates(data: bytes) -> tuple[list[_Entry], int, int, list[tuple[bytes, bytes]]]:
    """(certificates, blocks seen, blocks unreadable, (DER, trust settings) of those only OpenSSL reads) from
    PEM text or one DER certificate."""
    blocks = _pem_blocks(data)
    out: list[_Entry] = []
    opaque: list[tuple[bytes, bytes]] = []
    bad = 0
    if not blocks:
        # One DER certificate, taken byte for byte: stripping could cut a DER that ends in 0x0a or 0x20.
        if data[:1] != b"\x30":
            return [], 0, 0, []
        try:
            cert = _load_der(data)
        except ValueError:
            return ([], 1, 0, [(data, b"")]) if _openssl_reads(data) else ([], 0, 0, [])
        return [(hashlib.sha256(data).hexdigest(), cert, b"")], 1, 0, []
    for trusted, body in blocks:
        try:
            whole = base64.b64decode(b"".join(body.split()), validate=True)  # split(): the whitespace \s matches
        except (ValueError, binascii.Error):
            bad += 1
            continue
        der = _der_sequence_prefix(whole) if trusted else whole
        try:
            cert = _load_der(der)
        except ValueError:
            if _openssl_reads(der):
                opaque.append((der, whole[len(der) :]))
            else:
                bad += 1
            continue
        out.append((hashlib.sha256(der).hexdigest(), cert, whole[len(der) :]))
    return out, len(blocks), bad, opaque


def _parse_remembered(
    key: store_cache.FileKey, data: bytes
) -> tuple[list[_Entry], int, int, list[tuple[bytes, bytes]]]:
    """`_parse_certificates(data)`, with the PEM decoding skipped when a process before this one parsed
    these very bytes (store_cache checks them); the certificates are loaded from their DER either way. A file
    with trust settings (TRUSTED CERTIFICATE blocks) or with a certificate only OpenSSL reads, both rare, is
    always parsed afresh: the cache keeps parsed DER alone, and an entry an earlier version wrote would lack
    them (it counted the second kind unreadable)."""
    if _TRUSTED_BEGIN in data:
        return _parse_certificates(data)
    remembered = store_cache.load_parsed(key, data)
    if remembered is not None and not remembered[2]:
        certs, blocks, bad = remembered
        try:
            return [(fp, _load_der(der), b"") for fp, der in certs], blocks, bad, []
        except ValueError:
            pass  # refused by this cryptography: parse afresh
    parsed, blocks, bad, opaque = _parse_certificates(data)
    if not opaque:
        ders = tuple((fp, cert.public_bytes(DER)) for fp, cert, _ in parsed)
        store_cache.store_parsed(key, data, ders, blocks, bad)
    return parsed, blocks, bad, opaque


def _too_large(error: FileTooLarge) -> _Read:
    if error.size is None:
        return _Read(error=f"{error.filename} grew past the {error.limit}-byte cap while being read")
    return _Read(error=f"{error.filename} is {error.size} bytes, over the {error.limit}-byte cap")


def _file_key(path: Path) -> tuple[str, int, int, int, int]:
    return _stat_key(str(path), path.stat())


def _stat_key(path: str, st: os.stat_result) -> tuple[str, int, int, int, int]:
    """What a cached read of a file is keyed by: its path and the identity, time and size it has now."""
    return (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8192)
def _read_pem_file_cached(path_str: str, _dev: int, _ino: int, _mtime_ns: int, _size: int) -> _Read:
    path = Path(path_str)
    try:
        data = read_capped(path, MAX_FILE_BYTES)
    except FileTooLarge as exc:
        return _too_large(exc)
    except OSError as exc:
        return _Read(error=f"cannot read {path}: {exc.strerror or exc}")
    certs, blocks, bad, opaque = _parse_remembered((path_str, _dev, _ino, _mtime_ns, _size), data)
    roots, fps, aux = _merge(certs)
    notes = [_opaque_note(path, len(opaque))] if opaque else []
    if not roots and not opaque:
        if blocks:
            return _Read(error=f"{path}: {bad} certificate block(s), none parseable")
        return _Read(error=f"{path}: no certificates (expected PEM CERTIFICATE blocks or one DER certificate)")
    if bad:
        notes.insert(0, f"{path}: {bad} of {blocks} certificate blocks unparseable, skipped")
    return _Read(roots, fps, "; ".join(notes), aux, tuple(opaque))


def _opaque_note(path: Path | str, n: int) -> str:
    return f"{path}: {n} certificate(s) only OpenSSL reads, not cryptography: trusted in verdicts, not counted"


def _unique(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """First-seen distinct certificates, by DER."""
    seen: dict[bytes, bytes] = {}
    for der, aux in pairs:
        seen.setdefault(der, aux)
    return tuple(seen.items())


def _read_pem_file(path: Path) -> _Read:
    try:
        key = _file_key(path)
    except OSError as exc:
        return _Read(error=f"cannot read {path}: {exc.strerror or exc}")
    if not Path(key[0]).is_file():
        return _Read(error=f"{path} is not a regular file")
    return _read_pem_file_cached(*key)


def openssl_bundle(name: str, path: str) -> LoadedStore | None:
    """The PEM bundle at `path` as OpenSSL's X509_load_cert_crl_file reads it into a store: every CERTIFICATE
    and TRUSTED CERTIFICATE block, in order, and nothing when the file cannot be read. None where this reading
    cannot vouch for that: a block of another label (OpenSSL takes CRLs and older labels too), one that does not
    parse (OpenSSL then loads none of the file), or no PEM at all."""
    try:
        key = _file_key(Path(path))
        data = read_capped(Path(path), MAX_FILE_BYTES)
    except FileTooLarge:
        return None
    except OSError:
        return _loaded(name, KIND_FILE, path, _Read(error=f"cannot read {path}"), "")
    begins = pos = 0
    while (begin := data.find(b"-----BEGIN ", pos)) >= 0:
        if not _label_at(data, begin + 11):
            return None
        begins, pos = begins + 1, begin + 11
    if any(data.count(b"-----BEGIN " + label) != data.count(b"-----END " + label) for label in _LABELS):
        return None  # a block without its own END line stops OpenSSL, which loads none of the file then
    certs, blocks, bad, opaque = _parse_remembered(key, data)
    if not blocks or bad or blocks != begins:
        return None
    roots, fps, aux = _merge(certs)
    return _loaded(name, KIND_FILE, path, _Read(roots, fps, "", aux, _unique(opaque)), "")


def _read_dir(path: Path) -> _Read:
    """Every certificate file in a (hashed) directory, bounded in file count and total bytes."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        return _Read(error=f"cannot list {path}: {exc.strerror or exc}")
    certs: list[_Entry] = []
    opaque: list[tuple[bytes, bytes]] = []
    seen_inodes: set[tuple[int, int]] = set()
    files = 0
    total = 0
    unreadable = 0
    truncated = ""
    for entry in entries:
        try:
            st = os.stat(entry.path)  # follows symlinks: hashed dirs are mostly links
        except FileNotFoundError:
            continue  # a dangling link: not a file, as DirEntry.is_file() says
        except OSError:
            unreadable += 1
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        key = _stat_key(entry.path, st)
        # Hash links and their targets share an inode: read each file once.
        inode = (key[1], key[2])
        if inode in seen_inodes:
            continue
        if files >= MAX_DIR_FILES or total + key[4] > MAX_DIR_BYTES:
            truncated = (
                f"{path}: read stopped at {files} files / {total} bytes "
                f"(caps {MAX_DIR_FILES} files, {MAX_DIR_BYTES} bytes)"
            )
            break
        seen_inodes.add(inode)
        files += 1
        total += key[4]
        read = _read_pem_file_cached(*key)
        opaque.extend(read.opaque)
        if read.roots:
            certs.extend(_entries(read))
        elif read.error.startswith("cannot read"):
            unreadable += 1
        # Files without certificates (CRLs, READMEs) are normal in a hashed dir and ignored.
    roots, fps, aux = _merge(certs)
    notes = [truncated] if truncated else []
    if unreadable:
        notes.append(f"{path}: {unreadable} file(s) unreadable")
    if opaque:
        notes.append(_opaque_note(path, len(_unique(opaque))))
    if not roots and not opaque:
        notes.insert(0, f"{path}: no certificates in directory")
    return _Read(roots, fps, "; ".join(notes), aux, _unique(opaque))


def _read_dirs(value: str) -> _Read:
    """SSL_CERT_DIR may list several directories separated by os.pathsep, as OpenSSL accepts."""
    parts = [p for p in value.split(os.pathsep) if p]
    reads = [_read_dir(Path(p)) if Path(p).is_dir() else _Read(error=f"{p} is not a directory") for p in parts]
    roots, fps, aux = _merge(entry for r in reads for entry in _entries(r))
    error = "; ".join(r.error for r in reads if r.error)
    return _Read(roots, fps, error, aux, _unique(pair for r in reads for pair in r.opaque))


# --- Java keystores -------------------------------------------------------------------------------


class _KeystoreError(ValueError):
    pass


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _KeystoreError(f"truncated at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u2(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u4(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def utf(self) -> bytes:
        return self.take(self.u2())

    def blob(self) -> bytes:
        return self.take(self.u4())


def _parse_jks(data: bytes) -> tuple[list[bytes], str]:
    """Trusted-certificate DERs of a JKS/JCEKS keystore, plus an error for what could not be read.

    Layout: magic, version, count, then entries (tag 1 private key with chain, 2 trusted cert,
    3 JCEKS secret key), then a 20-byte keyed digest. Java also trusts the end-entity certificate of a
    private-key entry, so that one is kept too. The digest is not checked: it guards integrity with the
    store password, and trusted certificates are public.
    """
    cur = _Cursor(data)
    magic = cur.u4()
    if magic not in (_JKS_MAGIC, _JCEKS_MAGIC):
        raise _KeystoreError("not a JKS or JCEKS keystore")
    version = cur.u4()
    if version not in (1, 2):
        raise _KeystoreError(f"unsupported JKS version {version} (accepted: 1, 2)")
    count = cur.u4()
    if count > _MAX_KEYSTORE_ENTRIES:
        raise _KeystoreError(f"claims {count} entries, over the cap of {_MAX_KEYSTORE_ENTRIES}")

    def cert_der() -> bytes:
        if version == 2:
            cert_type = cur.utf()
            if cert_type != b"X.509":
                raise _KeystoreError(f"certificate type {cert_type!r} at byte {cur.pos} is not X.509")
        return cur.blob()

    ders: list[bytes] = []
    for _ in range(count):
        tag = cur.u4()
        cur.utf()  # alias
        cur.take(8)  # creation time
        if tag == 2:
            ders.append(cert_der())
        elif tag == 1:
            cur.blob()  # protected private key
            chain = [cert_der() for _ in range(cur.u4())]
            if chain:
                ders.append(chain[0])
        elif tag == 3:
            # A JCEKS secret key is a serialized Java object with no length prefix: stop here.
            return ders, f"JCEKS secret-key entry at byte {cur.pos} not readable; later entries skipped"
        else:
            raise _KeystoreError(f"unknown entry tag {tag} at byte {cur.pos - 4}")
    if len(data) - cur.pos != 20:
        raise _KeystoreError(f"{len(data) - cur.pos} bytes after the entries, expected a 20-byte digest")
    return ders, ""


def _parse_pkcs12(data: bytes) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import pkcs12  # Java's PKCS#12 keystores alone

    loaded = pkcs12.load_pkcs12(data, JAVA_DEFAULT_PASSWORD.encode())
    certs = [c.certificate for c in loaded.additional_certs]
    if loaded.cert is not None:
        certs.insert(0, loaded.cert.certificate)
    return [c.public_bytes(DER) for c in certs]


@lru_cache(maxsize=64)
def _read_keystore_cached(path_str: str, _dev: int, _ino: int, _mtime_ns: int, _size: int) -> _Read:
    path = Path(path_str)
    try:
        data = read_capped(path, MAX_FILE_BYTES)
    except FileTooLarge as exc:
        return _too_large(exc)
    except OSError as exc:
        return _Read(error=f"cannot read {path}: {exc.strerror or exc}")
    error = ""
    if data[:4] in (_JKS_MAGIC.to_bytes(4, "big"), _JCEKS_MAGIC.to_bytes(4, "big")):
        try:
            ders, error = _parse_jks(data)
        except _KeystoreError as exc:
            return _Read(error=f"{path}: JKS format not readable: {exc}")
    else:
        try:
            ders = _parse_pkcs12(data)
        except (ValueError, TypeError) as exc:
            return _Read(
                error=f"{path}: neither JKS nor PKCS12 readable with password '{JAVA_DEFAULT_PASSWORD}': {exc}"
            )
    certs: list[_Entry] = []
    bad = 0
    for der in ders:
        try:
            certs.append((hashlib.sha256(der).hexdigest(), _load_der(der), b""))
        except ValueError:
            bad += 1
    roots, fps, _ = _merge(certs)
    notes = [error] if error else []
    if bad:
        notes.append(f"{bad} of {len(ders)} certificates unparseable, skipped")
    if not roots:
        notes.insert(0, f"{path}: keystore holds no trusted certificates")
    return _Read(roots, fps, "; ".join(notes))


def _read_keystore(path: Path) -> _Read:
    try:
        key = _file_key(path)
    except OSError as exc:
        return _Read(error=f"cannot read {path}: {exc.strerror or exc}")
    return _read_keystore_cached(*key)


# --- discovery ------------------------------------------------------------------------------------


def _loaded(
    name: str,
    kind: str,
    path: str,
    read: _Read,
    detail: str = "",
    *,
    runtime: str = "",
    found_by: str = "",
    declared: bool = False,
) -> LoadedStore:
    info = TrustStore(
        name=name,
        kind=kind,
        path=path,
        root_count=len(read.roots),
        fingerprint=store_fingerprint(read.fingerprints),
        error=read.error,
        runtime=runtime,
        found_by=found_by,
        declared=declared,
    )
    return LoadedStore(info=info, roots=read.roots, detail=detail, aux=read.aux, opaque=read.opaque)


class _Tags(TypedDict):
    """What a store carries besides its content (TrustStore.runtime, found_by, declared)."""

    runtime: str
    found_by: str
    declared: bool


def load_store(
    name: str,
    path: Path | str,
    *,
    kind: str | None = None,
    detail: str = "",
    runtime: str = "",
    found_by: str = "",
    declared: bool = False,
) -> LoadedStore:
    """Read one store: a PEM/DER bundle file, a certificate directory, or a Java keystore.

    `kind` None picks "dir" for a directory and "file" otherwise; `declared` says the operator or the
    environment named it (TrustStore.declared).
    """
    p = Path(path)
    if kind is None:
        kind = KIND_DIR if p.is_dir() else KIND_FILE
    if kind not in (KIND_FILE, KIND_DIR, KIND_JAVA):
        raise ValueError(f"unknown trust store kind {kind!r} (accepted: {KIND_FILE}, {KIND_DIR}, {KIND_JAVA})")
    tags = _Tags(runtime=runtime, found_by=found_by, declared=declared)
    if not p.exists():
        return _loaded(name, kind, str(p), _Read(error=f"{p} does not exist"), detail, **tags)
    if kind == KIND_DIR:
        read = _read_dir(p) if p.is_dir() else _Read(error=f"{p} is not a directory")
    elif kind == KIND_JAVA:
        read = _read_keystore(p)
    else:
        read = _read_pem_file(p)
    return _loaded(name, kind, str(p), read, detail, **tags)


_IN_ENV = "in the agent's environment"


def _from_env(
    environ: Mapping[str, str], var: str, name: str, *, dir_ok: bool, detail: str = "", runtime: str = "", why: str = ""
) -> LoadedStore | None:
    value = environ.get(var, "")
    if not value:
        return None
    # A variable that points clients at a store declares it in use.
    tags = _Tags(runtime=runtime, found_by=why or f"{var} {_IN_ENV}", declared=True)
    p = Path(value)
    if not p.exists():
        return _loaded(
            name, KIND_FILE, value, _Read(error=f"{var} points at {value}, which does not exist"), detail, **tags
        )
    if p.is_dir():
        if not dir_ok:
            return _loaded(
                name, KIND_DIR, value, _Read(error=f"{var} must name a file, {value} is a directory"), detail, **tags
            )
        return load_store(name, p, kind=KIND_DIR, detail=detail, **tags)
    return load_store(name, p, kind=KIND_FILE, detail=detail, **tags)


def _system_stores() -> list[LoadedStore]:
    paths = ssl.get_default_verify_paths()
    out: list[LoadedStore] = []
    # The compiled-in defaults, not `cafile`/`capath`: those already follow this process's
    # SSL_CERT_FILE/SSL_CERT_DIR, which are reported as stores of their own from `environ`.
    files = [f for f in (paths.openssl_cafile, *WELL_KNOWN_BUNDLES) if f and os.path.isfile(f)]
    seen: set[str] = set()
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            continue
        seen.add(real)
        why = "OpenSSL's compiled-in default bundle" if f == paths.openssl_cafile else "a distribution's bundle"
        out.append(load_store("system" if len(seen) == 1 else f"system:{f}", f, kind=KIND_FILE, found_by=why))
    dirs = [d for d in (paths.openssl_capath, *WELL_KNOWN_DIRS) if d and os.path.isdir(d)]
    if dirs:
        why = (
            "OpenSSL's compiled-in default directory"
            if dirs[0] == paths.openssl_capath
            else "a distribution's directory"
        )
        out.append(load_store("system_dir", dirs[0], kind=KIND_DIR, found_by=why))
    return out


_CERTIFI_DETAIL = "what Python requests trusts by default"


def _numbered(base: str, label: str, taken: set[str]) -> str:
    """`base` for the first store of its kind, `base:label` for the others (label: where it lives)."""
    name = base if base not in taken else f"{base}:{label}"
    n = 2
    while name in taken:
        name, n = f"{base}:{label}#{n}", n + 1
    taken.add(name)
    return name


def _certifi_stores(runtimes: tuple[Runtime, ...]) -> list[LoadedStore]:
    """One store per distinct certifi bundle of the Python runtimes: "certifi" for the first (named
    runtimes come first), "certifi:<site-packages dir>" for the others; interpreters sharing a bundle
    share the store, and its found_by names them all."""
    groups: dict[str, list[Runtime]] = {}
    for r in runtimes:
        if r.kind == "python" and (r.store_path or r.store_error):
            key = os.path.realpath(r.store_path) if r.store_path else f"error:{r.location}"
            groups.setdefault(key, []).append(r)
    out: list[LoadedStore] = []
    taken: set[str] = set()
    for group in groups.values():
        first = group[0]
        name = _numbered("certifi", first.store_label or first.location, taken)
        found_by = "certifi of " + "; ".join(f"{r.location} ({r.found_by})" for r in group)
        declared = any(r.declared for r in group)
        if first.store_path:
            out.append(
                load_store(
                    name,
                    first.store_path,
                    kind=KIND_FILE,
                    detail=_CERTIFI_DETAIL,
                    runtime="python",
                    found_by=found_by,
                    declared=declared,
                )
            )
        else:
            read = _Read(error=first.store_error)
            out.append(_loaded(name, KIND_FILE, "", read, runtime="python", found_by=found_by, declared=declared))
    return out


def _java_stores(runtimes: tuple[Runtime, ...]) -> list[LoadedStore]:
    """JAVA_HOME's cacerts as "java_home"; the other runtimes' as "java", then "java:<home>"."""
    out: list[LoadedStore] = []
    taken: set[str] = set()
    for r in runtimes:
        if r.kind != "java" or not (r.store_path or r.store_error):
            continue
        from_home = r.found_by.startswith("JAVA_HOME")
        name = "java_home" if from_home else _numbered("java", r.store_label or r.location, taken)
        found_by = f"{r.location} ({r.found_by})" if not from_home else f"{r.found_by}: {r.location}"
        if r.store_error:
            read = _Read(
                error=r.store_error if not from_home else f"JAVA_HOME={r.location} has no lib/security/cacerts"
            )
            out.append(
                _loaded(name, KIND_JAVA, r.store_path, read, runtime="java", found_by=found_by, declared=r.declared)
            )
        else:
            out.append(
                load_store(name, r.store_path, kind=KIND_JAVA, runtime="java", found_by=found_by, declared=r.declared)
            )
    return out


_NODE_DETAIL = (
    "Node trusts its built-in roots plus this file; the built-in roots are not included here (the node store "
    "judges both where node answered)"
)


def _node_why(runtimes: tuple[Runtime, ...]) -> str:
    nodes = [r for r in runtimes if r.kind == "node" and r.identity.startswith("path:")]
    if not nodes:
        return f"NODE_EXTRA_CA_CERTS {_IN_ENV}; no node executable found (the variable alone is judged)"
    return f"NODE_EXTRA_CA_CERTS {_IN_ENV}; node " + "; ".join(f"{r.location} ({r.found_by})" for r in nodes)


KIND_NODE = "node"  # a node executable's store: its bundled roots and the files it reads at start
_IN_ENV_NODE = ("NODE_EXTRA_CA_CERTS", "NODE_OPTIONS", "NODE_USE_SYSTEM_CA")


@lru_cache(maxsize=8)
def _read_bundled(pems: tuple[str, ...]) -> _Read:
    certs, blocks, bad, opaque = _parse_certificates("\n".join(pems).encode())
    bad += len(opaque)
    roots, fps, _ = _merge(certs)
    if not roots:
        return _Read(error="node listed no parseable bundled roots")
    return _Read(roots, fps, f"{bad} of {blocks} bundled roots unparseable, skipped" if bad else "")


def _read_source(source: Source, pems: tuple[str, ...]) -> _Read:
    if source.kind == "bundled":
        return _read_bundled(pems)
    # OpenSSL skips a default file or directory that is absent: nothing to load, nothing wrong.
    if source.kind == "dirs":
        present = [d for d in source.path.split(os.pathsep) if d and os.path.isdir(d)]
        return _read_dirs(os.pathsep.join(present)) if present else _Read()
    path = Path(source.path)
    if not source.required and not path.exists():
        return _Read()
    return _read_pem_file(path)


def _node_stores(runtimes: tuple[Runtime, ...], environ: Mapping[str, str]) -> list[LoadedStore]:
    """The store each node that answered verifies with (node_roots): "node" for the first, "node:<executable>"
    for the others. A variable that changes it (NODE_EXTRA_CA_CERTS, NODE_OPTIONS) declares it in use."""
    out: list[LoadedStore] = []
    taken: set[str] = set()
    for r in runtimes:
        if r.kind != "node" or not (r.store_path or r.store_error):
            continue
        name = _numbered("node", r.location, taken)
        where = f"{r.location} ({r.found_by})"
        answer = ask_node(r.location)
        trust = node_trust(answer, environ)
        why = [trust.why] if trust.why else []
        why += [f"{v} in the agent's environment" for v in _IN_ENV_NODE if environ.get(v) and v not in trust.why]
        declared = r.declared or any("in the agent's environment" in w for w in why)
        said = f"; {', '.join(why)}" if why else ""
        error = r.store_error or answer.failed or trust.error
        if error:
            found_by = f"node {answer.version} at {where}{said}" if answer.version else f"{where}{said}"
            read = _Read(error=error)
            out.append(_loaded(name, KIND_NODE, r.location, read, runtime="node", found_by=found_by, declared=declared))
            continue
        parts: list[str] = []
        certs: list[_Entry] = []
        errors: list[str] = []
        for source in sources(answer, trust, environ):
            read = _read_source(source, answer.roots)
            certs.extend(_entries(read))
            parts.append(f"{source.label} ({len(read.roots)})")
            if read.error:
                errors.append(read.error)
        # Trust settings stay out of node's stores: node reads its extra certificates with PEM_read_bio_X509,
        # which takes no trust settings.
        roots, fps, _ = _merge(certs)
        found_by = f"node {answer.version} at {where}: {' + '.join(parts)}{said}"
        read = _Read(roots, fps, "; ".join(errors))
        out.append(_loaded(name, KIND_NODE, r.location, read, runtime="node", found_by=found_by, declared=declared))
    return out


@dataclass(frozen=True)
class Discovery:
    """The stores, the runtimes found, and what to watch to know when they may be stale."""

    stores: tuple[LoadedStore, ...]
    runtimes: tuple[Runtime, ...]
    watches: tuple[Watch, ...]


def discover(
    environ: Mapping[str, str],
    extra: Mapping[str, Path] | None = None,
    runtimes: RuntimeOptions | None = None,
) -> Discovery:
    """Every trust store this host's clients would use, in a stable order, and the runtimes behind them.

    Blocking: reading is cached by file identity, but a runtime search may run interpreters (see runtimes.py).
    """
    options = runtimes or RuntimeOptions()
    found = find_runtimes(environ, options)
    stores: list[LoadedStore] = list(_system_stores())
    optional: list[LoadedStore | None] = [
        _from_env(environ, "SSL_CERT_FILE", "ssl_cert_file", dir_ok=False),
        _cert_dirs_from_env(environ),
    ]
    stores.extend(s for s in optional if s is not None)
    stores.extend(_certifi_stores(found))
    optional = [
        _from_env(
            environ,
            "REQUESTS_CA_BUNDLE",
            "requests_ca_bundle",
            dir_ok=True,
            runtime="python",
            why=f"REQUESTS_CA_BUNDLE {_IN_ENV} (Python requests reads it instead of certifi)",
        ),
        _from_env(environ, "CURL_CA_BUNDLE", "curl_ca_bundle", dir_ok=True),
        _from_env(
            environ,
            "NODE_EXTRA_CA_CERTS",
            "node_extra_ca_certs",
            dir_ok=False,
            detail=_NODE_DETAIL,
            runtime="node",
            why=_node_why(found),
        ),
    ]
    stores.extend(s for s in optional if s is not None)
    stores.extend(_node_stores(found, environ))
    stores.extend(_java_stores(found))
    for label, path in (extra or {}).items():
        stores.append(load_store(f"extra:{label}", path, found_by=f"--extra-store {label}={path}", declared=True))
    watches: dict[Watch, None] = {}
    for store in stores:
        info = store.info
        if not info.path:
            continue
        if info.kind == KIND_DIR:
            for part in info.path.split(os.pathsep):
                if part:
                    watches[("dir", part)] = None
        else:
            watches[("file", info.path)] = None
    for runtime in found:
        watches.update(dict.fromkeys(runtime.watches))
    watches.update(dict.fromkeys(search_watches(environ, options)))
    store_cache.save()  # what this discovery parsed or asked, for the next process
    return Discovery(tuple(stores), found, tuple(watches))


def discover_stores(
    environ: Mapping[str, str],
    extra: Mapping[str, Path] | None = None,
    runtimes: RuntimeOptions | None = None,
) -> tuple[LoadedStore, ...]:
    """Every trust store this host's clients would use, in a stable order; unreadable ones carry `error`."""
    return discover(environ, extra, runtimes).stores


def _cert_dirs_from_env(environ: Mapping[str, str]) -> LoadedStore | None:
    value = environ.get("SSL_CERT_DIR", "")
    if not value:
        return None
    return _loaded(
        "ssl_cert_dir", KIND_DIR, value, _read_dirs(value), found_by=f"SSL_CERT_DIR {_IN_ENV}", declared=True
    )


# --- noticing change ------------------------------------------------------------------------------


def _stamp(mode: str, path: str) -> object:
    """What changes when the file, directory (and its entries) or mtime at `path` changes; None: absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if mode == "file" or (mode == "dir" and not stat.S_ISDIR(st.st_mode)):
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if mode == "mtime":
        return (st.st_ino, st.st_mtime_ns)
    entries: list[tuple[str, object]] = []
    try:
        with os.scandir(path) as it:
            for n, entry in enumerate(sorted(it, key=lambda e: e.name)):
                if n >= MAX_DIR_FILES:
                    break
                try:
                    est = entry.stat()  # follows symlinks: a hashed dir's links point at the files that matter
                    entries.append((entry.name, (est.st_ino, est.st_mtime_ns, est.st_size)))
                except OSError:
                    entries.append((entry.name, None))
    except OSError:
        pass
    return (st.st_ino, st.st_mtime_ns, tuple(entries))


def watch_signature(watches: tuple[Watch, ...]) -> tuple[object, ...]:
    """A cheap fingerprint of everything discovery read: equal signatures mean nothing it read changed."""
    return tuple(_stamp(mode, path) for mode, path in watches)


def forget_cached_reads() -> None:
    """Forget every cached read and runtime answer: the next discovery reads and asks everything again."""
    _read_pem_file_cached.cache_clear()
    _read_keystore_cached.cache_clear()
    _forget_certificates()
    forget_answers()
    store_cache.forget()
