"""OpenSSL's own chain verification (X509_verify_cert), through ctypes into the libcrypto that Python's
`ssl` module is linked against, so that an offline verdict is the one the host's OpenSSL clients reach.

The library is found from the process itself: the libcrypto/libssl files mapped after `import _ssl`
(Linux), else `_ssl`'s own handle (whose dependencies dlsym searches), else `ctypes.util.find_library`.
Whatever is found must report the very version `ssl.OPENSSL_VERSION_NUMBER` names; anything else is
refused (`OpenSSLUnavailable`), never half-used.

Every object made here is freed here: an `X509Store` frees its X509_STORE when the last reference to it
goes, and `verify` frees its context, certificates and stacks before it returns, whatever happens. The
OpenSSL error queue of the calling thread is cleared after each call, so no stale error reaches the
`ssl` module's own error reporting on that thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "X509_PURPOSE_SSL_SERVER",
    "NativeVerification",
    "OpenSSLUnavailable",
    "X509Store",
    "covers",
    "error_string",
    "library_version",
    "parses",
    "security_level",
    "unavailable_reason",
    "verify",
]

X509_PURPOSE_SSL_SERVER = 2
_OPENSSL_VERSION = 0  # OpenSSL_version(OPENSSL_VERSION)
X509_V_OK = 0
X509_V_ERR_UNSPECIFIED = 1

_VP = ctypes.c_void_p
# time_t is 64 bits on every 64-bit platform Python supports (LP64 and Windows' LLP64 alike).
_TIME_T = ctypes.c_int64 if ctypes.sizeof(ctypes.c_void_p) == 8 else ctypes.c_long


class OpenSSLUnavailable(RuntimeError):
    """The libcrypto Python's `ssl` uses cannot be loaded or is not the version `ssl` reports."""


@dataclass(frozen=True)
class NativeVerification:
    """What X509_verify_cert concluded."""

    code: int  # X509_V_ERR code; 0 = ok
    depth: int  # X509_STORE_CTX_get_error_depth (0 = leaf); -1 when OpenSSL named none
    chain: tuple[bytes, ...]  # DER of the chain OpenSSL built, leaf first (partial when it failed)
    error_cert: bytes = b""  # DER of the certificate the error is about ("" when none)


# --- loading --------------------------------------------------------------------------------------


_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "OpenSSL_version_num": (ctypes.c_ulong, []),
    "OpenSSL_version": (ctypes.c_char_p, [ctypes.c_int]),
    "ERR_clear_error": (None, []),
    "d2i_X509": (_VP, [_VP, ctypes.POINTER(_VP), ctypes.c_long]),
    "d2i_X509_AUX": (_VP, [_VP, ctypes.POINTER(_VP), ctypes.c_long]),
    "i2d_X509": (ctypes.c_int, [_VP, ctypes.POINTER(_VP)]),
    "X509_free": (None, [_VP]),
    "X509_STORE_new": (_VP, []),
    "X509_STORE_free": (None, [_VP]),
    "X509_STORE_add_cert": (ctypes.c_int, [_VP, _VP]),
    "X509_STORE_CTX_new": (_VP, []),
    "X509_STORE_CTX_free": (None, [_VP]),
    "X509_STORE_CTX_init": (ctypes.c_int, [_VP, _VP, _VP, _VP]),
    "X509_STORE_CTX_set_default": (ctypes.c_int, [_VP, ctypes.c_char_p]),
    "X509_STORE_CTX_set_purpose": (ctypes.c_int, [_VP, ctypes.c_int]),
    "X509_STORE_CTX_get0_param": (_VP, [_VP]),
    "X509_STORE_CTX_get_error": (ctypes.c_int, [_VP]),
    "X509_STORE_CTX_get_error_depth": (ctypes.c_int, [_VP]),
    "X509_STORE_CTX_get_current_cert": (_VP, [_VP]),
    "X509_STORE_CTX_get1_chain": (_VP, [_VP]),
    "X509_VERIFY_PARAM_set_time": (None, [_VP, _TIME_T]),
    "X509_VERIFY_PARAM_set1_host": (ctypes.c_int, [_VP, ctypes.c_char_p, ctypes.c_size_t]),
    "X509_VERIFY_PARAM_set1_ip_asc": (ctypes.c_int, [_VP, ctypes.c_char_p]),
    "X509_VERIFY_PARAM_set_auth_level": (None, [_VP, ctypes.c_int]),
    "X509_VERIFY_PARAM_set_flags": (ctypes.c_int, [_VP, ctypes.c_ulong]),
    "X509_verify_cert": (ctypes.c_int, [_VP]),
    "X509_check_host": (ctypes.c_int, [_VP, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, _VP]),
    "X509_check_ip_asc": (ctypes.c_int, [_VP, ctypes.c_char_p, ctypes.c_uint]),
    "X509_verify_cert_error_string": (ctypes.c_char_p, [ctypes.c_long]),
    "OPENSSL_sk_new_null": (_VP, []),
    "OPENSSL_sk_push": (ctypes.c_int, [_VP, _VP]),
    "OPENSSL_sk_num": (ctypes.c_int, [_VP]),
    "OPENSSL_sk_value": (_VP, [_VP, ctypes.c_int]),
    "OPENSSL_sk_free": (None, [_VP]),
}
_SSL_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "TLS_client_method": (_VP, []),
    "SSL_CTX_new": (_VP, [_VP]),
    "SSL_CTX_free": (None, [_VP]),
    "SSL_CTX_get_security_level": (ctypes.c_int, [_VP]),
}


@dataclass(frozen=True)
class _Lib:
    """The libcrypto and libssl loaded, where from, their version and the host's default security level."""

    crypto: ctypes.CDLL
    ssl: ctypes.CDLL
    where: str
    version: str
    security_level: int


def _mapped_libraries() -> tuple[str | None, str | None]:
    """The libcrypto and libssl files this process has mapped (Linux /proc), after `import _ssl`."""
    crypto = libssl = None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
                if path.endswith(" (deleted)"):  # replaced on disk since it was mapped: not loadable by name
                    continue
                name = os.path.basename(path)
                if crypto is None and name.startswith("libcrypto.so"):
                    crypto = path
                elif libssl is None and name.startswith("libssl.so"):
                    libssl = path
    except OSError:
        return None, None
    return crypto, libssl


def _candidates() -> Iterator[tuple[str, str | None, str | None]]:
    """Where to look, in order, each tried only when those before it failed: find_library runs ldconfig
    twice (some 4 ms in a fresh process), which the library _ssl mapped almost always makes unneeded."""
    import _ssl  # noqa: F401  (maps the libcrypto Python uses into the process)

    crypto, libssl = _mapped_libraries()
    if crypto is not None:
        yield (f"{crypto} (mapped by _ssl)", crypto, libssl or crypto)
    ssl_module = getattr(sys.modules.get("_ssl"), "__file__", None)
    if ssl_module:
        # dlsym on the extension's own handle searches its dependencies: the libcrypto it links.
        yield (f"{ssl_module} (the _ssl module's dependencies)", ssl_module, ssl_module)
    found_crypto, found_ssl = ctypes.util.find_library("crypto"), ctypes.util.find_library("ssl")
    if found_crypto is not None:
        yield (f"{found_crypto} (find_library)", found_crypto, found_ssl or found_crypto)


def _bind(lib: ctypes.CDLL, signatures: dict[str, tuple[object, list[object]]]) -> None:
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)  # AttributeError when the symbol is absent
        fn.restype = restype
        fn.argtypes = argtypes


def _read_security_level(libssl: ctypes.CDLL) -> int:
    """The security level of a fresh default client SSL_CTX: the host's OpenSSL default, with the
    OpenSSL configuration in force (CipherString @SECLEVEL), not Python's own context settings."""
    method = libssl.TLS_client_method()
    ctx = libssl.SSL_CTX_new(method)
    if not ctx:
        raise OpenSSLUnavailable("SSL_CTX_new(TLS_client_method()) failed")
    try:
        return int(libssl.SSL_CTX_get_security_level(ctx))
    finally:
        libssl.SSL_CTX_free(ctx)


def _load() -> _Lib:
    expected = ssl.OPENSSL_VERSION_NUMBER
    tried: list[str] = []
    for where, crypto_path, ssl_path in _candidates():
        try:
            crypto = ctypes.CDLL(crypto_path)
            libssl = crypto if ssl_path == crypto_path else ctypes.CDLL(ssl_path)
            _bind(crypto, _SIGNATURES)
            _bind(libssl, _SSL_SIGNATURES)
        except (OSError, AttributeError) as error:
            tried.append(f"{where}: {error}")
            continue
        number = int(crypto.OpenSSL_version_num())
        if number != expected:
            tried.append(f"{where}: version {number:#x}, but the ssl module reports {expected:#x}")
            continue
        version = (crypto.OpenSSL_version(_OPENSSL_VERSION) or b"").decode("ascii", "replace")
        try:
            level = _read_security_level(libssl)
        finally:
            crypto.ERR_clear_error()
        return _Lib(crypto, libssl, where, version, level)
    raise OpenSSLUnavailable(
        "no libcrypto matching the ssl module's " + ssl.OPENSSL_VERSION + ": " + ("; ".join(tried) or "none found")
    )


_lock = threading.Lock()
_lib: _Lib | None = None
_error: OpenSSLUnavailable | None = None


def _library() -> _Lib:
    global _lib, _error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None and _error is None:
            try:
                _lib = _load()
            except OpenSSLUnavailable as error:
                _error = error
        if _lib is None:
            assert _error is not None
            raise _error
        return _lib


def unavailable_reason() -> str:
    """Why OpenSSL's verifier is unusable; "" when it is usable."""
    try:
        _library()
    except OpenSSLUnavailable as error:
        return str(error)
    return ""


def library_version() -> str:
    """OpenSSL_version(OPENSSL_VERSION) of the library in use, with where it was found."""
    lib = _library()
    return f"{lib.version} ({lib.where})"


def security_level() -> int:
    """The host's default OpenSSL security level (SSL_CTX_get_security_level of a default client)."""
    return _library().security_level


def error_string(code: int) -> str:
    """OpenSSL's text for a verify code, for people only."""
    text = _library().crypto.X509_verify_cert_error_string(code)
    return text.decode("ascii", "replace") if text else f"verify error {code}"


# --- certificates ---------------------------------------------------------------------------------


def _d2i(crypto: ctypes.CDLL, der: bytes) -> int | None:
    """An X509* for exactly these bytes (trailing bytes refused, as TLS does); None when not a certificate."""
    return _read_x509(crypto.d2i_X509, crypto, der)


def _d2i_aux(crypto: ctypes.CDLL, der: bytes) -> int | None:
    """`_d2i` for a certificate followed by its trust settings (X509_CERT_AUX), as a TRUSTED CERTIFICATE block
    holds it and OpenSSL reads it into a store."""
    return _read_x509(crypto.d2i_X509_AUX, crypto, der)


def _read_x509(d2i: Callable[..., int | None], crypto: ctypes.CDLL, der: bytes) -> int | None:
    if not der:
        return None
    buf = ctypes.create_string_buffer(der, len(der))
    start = ctypes.addressof(buf)
    cursor = _VP(start)
    x = d2i(None, ctypes.byref(cursor), len(der))
    if not x:
        return None
    if (cursor.value or 0) - start != len(der):
        crypto.X509_free(x)
        return None
    return int(x)


def _i2d(crypto: ctypes.CDLL, x: int) -> bytes:
    n = crypto.i2d_X509(x, None)
    if n <= 0:
        return b""
    buf = ctypes.create_string_buffer(n)
    cursor = _VP(ctypes.addressof(buf))
    if crypto.i2d_X509(x, ctypes.byref(cursor)) != n:
        return b""
    return buf.raw


class Certificate:
    """One certificate as libcrypto read it (an X509*), for many verifications: reading costs more than
    verifying. Freed when the last reference goes."""

    __slots__ = ("_crypto", "_x")

    def __init__(self, crypto: ctypes.CDLL, x: int) -> None:
        self._crypto, self._x = crypto, x

    @property
    def handle(self) -> int:
        return self._x

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone
            self._crypto.X509_free(self._x)


def read_certificate(der: bytes) -> Certificate | None:
    """The certificate libcrypto reads from exactly these bytes; None when they are not one."""
    crypto = _library().crypto
    x = _d2i(crypto, der)
    crypto.ERR_clear_error()
    return None if x is None else Certificate(crypto, x)


def parses(der: bytes) -> bool:
    """Whether libcrypto reads these bytes as one certificate."""
    crypto = _library().crypto
    x = _d2i(crypto, der)
    crypto.ERR_clear_error()
    if x is None:
        return False
    crypto.X509_free(x)
    return True


class X509Store:
    """One X509_STORE holding these DER certificates as trusted, and any added later.

    `skipped` counts certificates libcrypto could not read. Thread-safe for concurrent `verify` and `add`
    calls (OpenSSL locks its store); freed when the last reference goes."""

    def __init__(self, ders: Sequence[bytes] = ()) -> None:
        lib = _library()
        self._crypto = lib.crypto
        store = lib.crypto.X509_STORE_new()
        if not store:
            raise MemoryError("X509_STORE_new failed")
        self._store: int | None = int(store)
        self.skipped = 0
        self.size = 0
        self.add(ders)

    def add(self, ders: Sequence[bytes]) -> None:
        """Trust these certificates too: each DER may be followed by the certificate's trust settings
        (X509_CERT_AUX, from a TRUSTED CERTIFICATE block), which X509_verify_cert then honours as it does
        for `openssl verify -CAfile`: a trusted or rejected purpose, and a trust anchor below the root."""
        crypto, store = self._crypto, self.handle
        try:
            for der in ders:
                # Trailing bytes after a certificate are its trust settings here (a second reading, rare).
                x = _d2i(crypto, der) or _d2i_aux(crypto, der)
                if x is None:
                    self.skipped += 1
                    continue
                try:
                    # Adds a reference of its own; a duplicate is refused by some versions: harmless.
                    crypto.X509_STORE_add_cert(store, x)
                    self.size += 1
                finally:
                    crypto.X509_free(x)
        finally:
            crypto.ERR_clear_error()

    @property
    def handle(self) -> int:
        if self._store is None:
            raise ValueError("X509Store already freed")
        return self._store

    def free(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            self._crypto.X509_STORE_free(store)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone
            self.free()


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def verify(
    store: X509Store,
    leaf: bytes | Certificate,
    untrusted: Sequence[bytes | Certificate],
    *,
    at: int,
    host: str | None = None,
    auth_level: int | None = None,
    flags: int = 0,
) -> NativeVerification:
    """X509_verify_cert for `leaf` with the served `untrusted` certificates against `store`, at Unix
    time `at`, as a TLS client verifies a server (purpose and trust ssl_server): `host` is a DNS name
    (checked as X509_VERIFY_PARAM_set1_host with default flags) or an IP literal (set1_ip_asc);
    `auth_level` defaults to the host's security level; `flags` are X509_V_FLAG_* added. Certificates
    come as DER or as read already.

    Raises ValueError when `leaf` is not a certificate libcrypto reads; untrusted certificates it
    cannot read must be left out by the caller (`parses`)."""
    lib = _library()
    crypto = lib.crypto
    level = lib.security_level if auth_level is None else auth_level
    owned: list[int] = []  # read here, freed here
    leaf_x = _x509_of(crypto, leaf, owned)
    if leaf_x is None:
        crypto.ERR_clear_error()
        raise ValueError("the leaf is not a certificate OpenSSL can read")
    stack = ctx = built = None
    try:
        stack = crypto.OPENSSL_sk_new_null()
        if not stack:
            raise MemoryError("OPENSSL_sk_new_null failed")
        for cert in untrusted:
            x = _x509_of(crypto, cert, owned)
            if x is None:
                continue
            if crypto.OPENSSL_sk_push(stack, x) <= 0:
                raise MemoryError("OPENSSL_sk_push failed")
        ctx = crypto.X509_STORE_CTX_new()
        if not ctx:
            raise MemoryError("X509_STORE_CTX_new failed")
        if crypto.X509_STORE_CTX_init(ctx, store.handle, leaf_x, stack) != 1:
            raise MemoryError("X509_STORE_CTX_init failed")
        # What libssl does for a client verifying its server: the "ssl_server" parameters (purpose and
        # trust sslserver), then the security level as the verification's auth level.
        if crypto.X509_STORE_CTX_set_default(ctx, b"ssl_server") != 1:
            crypto.X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER)
        param = crypto.X509_STORE_CTX_get0_param(ctx)
        crypto.X509_VERIFY_PARAM_set_time(param, int(at))
        crypto.X509_VERIFY_PARAM_set_auth_level(param, int(level))
        if flags:
            crypto.X509_VERIFY_PARAM_set_flags(param, flags)
        if host:
            encoded = host.encode("ascii")
            if _ip_literal(host):
                ok = crypto.X509_VERIFY_PARAM_set1_ip_asc(param, encoded)
            else:
                ok = crypto.X509_VERIFY_PARAM_set1_host(param, encoded, len(encoded))
            if ok != 1:
                raise ValueError(f"OpenSSL refuses {host!r} as a name to check")
        result = crypto.X509_verify_cert(ctx)
        code = int(crypto.X509_STORE_CTX_get_error(ctx))
        if result != 1 and code == X509_V_OK:
            code = X509_V_ERR_UNSPECIFIED
        if result == 1:
            code = X509_V_OK
        depth = int(crypto.X509_STORE_CTX_get_error_depth(ctx)) if code != X509_V_OK else -1
        current = crypto.X509_STORE_CTX_get_current_cert(ctx) if code != X509_V_OK else None
        error_cert = _i2d(crypto, current) if current else b""
        built = crypto.X509_STORE_CTX_get1_chain(ctx)
        chain: list[bytes] = []
        if built:
            for i in range(crypto.OPENSSL_sk_num(built)):
                x = crypto.OPENSSL_sk_value(built, i)
                if x:
                    chain.append(_i2d(crypto, x))
        return NativeVerification(code=code, depth=depth, chain=tuple(chain), error_cert=error_cert)
    finally:
        if built:
            for i in range(crypto.OPENSSL_sk_num(built)):
                x = crypto.OPENSSL_sk_value(built, i)
                if x:
                    crypto.X509_free(x)
            crypto.OPENSSL_sk_free(built)
        if ctx:
            crypto.X509_STORE_CTX_free(ctx)
        if stack:
            crypto.OPENSSL_sk_free(stack)
        for x in owned:
            crypto.X509_free(x)
        crypto.ERR_clear_error()


def covers(leaf: Certificate, host: str, *, hostflags: int = 0, client_rule: bool = False) -> bool:
    """Whether `leaf` passes the name step of X509_verify_cert (check_id) for `host`: X509_check_ip_asc for an
    IP literal, else X509_check_host with `hostflags` (0: what a verify parameter starts with). An IP literal is
    told as `verify` tells it (Python's ipaddress reads it) or, with `client_rule`, as CPython's contexts do
    (OpenSSL reads it as an address). False also when OpenSSL refuses `host` as malformed."""
    crypto = _library().crypto
    try:
        encoded = host.encode("ascii")
    except UnicodeEncodeError:
        return False
    try:
        if client_rule:
            found = crypto.X509_check_ip_asc(leaf.handle, encoded, 0)
            if found != -2:  # -2: OpenSSL reads no address there
                return bool(found == 1)
        elif _ip_literal(host):
            return bool(crypto.X509_check_ip_asc(leaf.handle, encoded, 0) == 1)
        return bool(crypto.X509_check_host(leaf.handle, encoded, len(encoded), hostflags, None) == 1)
    finally:
        crypto.ERR_clear_error()


def _x509_of(crypto: ctypes.CDLL, cert: bytes | Certificate, owned: list[int]) -> int | None:
    if isinstance(cert, Certificate):
        return cert.handle
    x = _d2i(crypto, cert)
    if x is not None:
        owned.append(x)
    return x
