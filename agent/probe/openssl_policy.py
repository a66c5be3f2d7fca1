"""The OpenSSL configuration in force on this host, read from OpenSSL itself, and applied to a Python context.

OpenSSL applies the `system_default` section of its configuration (OPENSSL_CONF, else the system
openssl.cnf) to every SSL_CTX when it is created: MinProtocol, MaxProtocol, CipherString and its
@SECLEVEL, Ciphersuites, Groups, SignatureAlgorithms, Options. Python's `SSLContext` constructor then
overwrites some of it with its own defaults: the TLS <= 1.2 cipher list and security level
(`@SECLEVEL=2:ECDH+AESGCM:...`, no static RSA), the minimum version (TLS 1.2) and a few options; from
Python 3.13 `ssl.create_default_context()` also sets the verify flags X509_STRICT and PARTIAL_CHAIN, which
`openssl s_client` and curl do not. TLS 1.3 ciphersuites, groups, signature algorithms and the maximum
version stay as configured (verified against `openssl s_client` with OpenSSL 3.0).

So a client that behaves like `openssl s_client` or curl with the host's defaults is a Python context with
what OpenSSL configured on a fresh SSL_CTX put back. `host_policy()` reads that through ctypes, from the very
libssl the `_ssl` module is linked against (the symbols are looked up through `_ssl`'s own handle, and the
library's version must equal `ssl.OPENSSL_VERSION_NUMBER`). When that is impossible (no ctypes, a statically
linked `_ssl`, another libssl), the policy says so and Python's own context stands in.

The configuration is read once per process, as OpenSSL does: OPENSSL_CONF set after start has no effect.
"""

from __future__ import annotations

import _ssl
import ctypes
import os
import ssl
import warnings
from dataclasses import dataclass
from functools import cache

__all__ = ["OpenSSLPolicy", "host_policy", "python_default_policy", "read_policy"]

_CTRL_GET_MIN_PROTO_VERSION = 130
_CTRL_GET_MAX_PROTO_VERSION = 131
_MAX_CIPHERS = 1024
# CPython's own default TLS <= 1.2 cipher list (Modules/_ssl.c, PY_SSL_DEFAULT_CIPHER_STRING), without its level.
_PYTHON_CIPHERS = "ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"
_MAX_DIRECTIVES = 64

# OpenSSL's wire version numbers and Python's names for them.
_VERSIONS: dict[int, ssl.TLSVersion] = {
    0x0301: ssl.TLSVersion.TLSv1,
    0x0302: ssl.TLSVersion.TLSv1_1,
    0x0303: ssl.TLSVersion.TLSv1_2,
    0x0304: ssl.TLSVersion.TLSv1_3,
}
_VERSION_NAMES: dict[ssl.TLSVersion, str] = {
    ssl.TLSVersion.TLSv1: "TLSv1",
    ssl.TLSVersion.TLSv1_1: "TLSv1.1",
    ssl.TLSVersion.TLSv1_2: "TLSv1.2",
    ssl.TLSVersion.TLSv1_3: "TLSv1.3",
}


def version_name(version: ssl.TLSVersion | None) -> str:
    """ "TLSv1.2" for a bound, "" for none (the library's own limit)."""
    if version is None:
        return ""
    return _VERSION_NAMES.get(version, version.name)


@dataclass(frozen=True)
class OpenSSLPolicy:
    """What OpenSSL-based clients on this host get by default, as far as a Python context can carry it.

    `min_version`/`max_version` None mean no bound (the library's lowest/highest). `ciphers` is the TLS <= 1.2
    cipher list in preference order (OpenSSL names); `ciphersuites` the TLS 1.3 ones. `source` is "libssl"
    when read from OpenSSL, "python" when Python's own defaults stand in (then `error` says why).
    """

    source: str
    config_file: str
    security_level: int
    min_version: ssl.TLSVersion | None
    max_version: ssl.TLSVersion | None
    ciphers: tuple[str, ...]
    ciphersuites: tuple[str, ...] = ()
    options: int | None = None  # SSL_OP_* bits of a fresh SSL_CTX; None: leave Python's
    verify_flags: int | None = None  # X509_V_FLAG_* bits of a fresh SSL_CTX; None: leave Python's
    directives: tuple[tuple[str, str], ...] = ()  # the system_default section as configured
    config_status: str = ""  # whether OpenSSL could load `config_file` ("" when none is named)
    error: str = ""

    @property
    def from_openssl(self) -> bool:
        return self.source == "libssl"

    def cipher_string(self) -> str:
        """The TLS <= 1.2 cipher list for `SSLContext.set_ciphers`, security level included."""
        return ":".join((*self.ciphers, f"@SECLEVEL={self.security_level}"))

    def accepts_version(self, version: str) -> bool:
        """Whether a negotiated version ("TLSv1.2") lies within this policy's bounds."""
        order = _order(version)
        if order is None:
            return False
        low = _order(version_name(self.min_version)) if self.min_version else None
        high = _order(version_name(self.max_version)) if self.max_version else None
        return (low is None or order >= low) and (high is None or order <= high)

    def accepts_cipher(self, cipher: str) -> bool:
        """Whether a negotiated cipher is one this policy offers (TLS 1.3 suites by their list)."""
        if cipher.startswith("TLS_"):
            return not self.ciphersuites or cipher in self.ciphersuites
        return cipher in self.ciphers

    def apply(self, context: ssl.SSLContext) -> None:
        """Put this policy back on a context Python just created (before any bound a request adds).

        A policy without a single TLS <= 1.2 cipher cannot be carried by `set_ciphers` (it refuses an empty
        list); Python's list then stays, with the policy's security level."""
        if not self.from_openssl:
            return
        if self.ciphers:
            context.set_ciphers(self.cipher_string())
        else:
            context.set_ciphers(f"{_PYTHON_CIPHERS}:@SECLEVEL={self.security_level}")
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1 bounds; a host policy that allows them is what we mirror.
            warnings.simplefilter("ignore", DeprecationWarning)
            # ... and the OP_NO_TLSv1* bits a `Protocol = -TLSv1` line sets.
            context.minimum_version = self.min_version or ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = self.max_version or ssl.TLSVersion.MAXIMUM_SUPPORTED
            if self.options is not None:
                context.options = self.options  # type: ignore[assignment]  # the setter takes any SSL_OP_* bits
        if self.verify_flags is not None:
            # OpenSSL trusts first whatever the bit says (its "default" parameters carry it): Python's bit stays.
            context.verify_flags = ssl.VerifyFlags(self.verify_flags | ssl.VERIFY_X509_TRUSTED_FIRST)

    def facts(self) -> tuple[tuple[str, str], ...]:
        """(key, value) pairs for HostFacts.openssl_policy: the effective values, then the configured ones."""
        pairs = [
            ("source", self.source if not self.error else f"{self.source} ({self.error})"),
            ("config_file", self.config_file),
            *((("config_status", self.config_status),) if self.config_status else ()),
            ("MinProtocol", version_name(self.min_version) or "library minimum"),
            ("MaxProtocol", version_name(self.max_version) or "library maximum"),
            ("SecurityLevel", str(self.security_level)),
            ("ciphers", str(len(self.ciphers))),
        ]
        if self.ciphersuites:
            pairs.append(("Ciphersuites", ":".join(self.ciphersuites)))
        pairs.extend((f"system_default.{key}", value) for key, value in self.directives)
        return tuple(pairs)

    def summary(self) -> str:
        """One line: "security level 3, TLSv1.2-TLSv1.3, 58 ciphers"."""
        low = version_name(self.min_version) or "any"
        high = version_name(self.max_version) or "any"
        return f"security level {self.security_level}, versions {low} to {high}, {len(self.ciphers)} TLS<=1.2 ciphers"


def _order(version: str) -> tuple[int, ...] | None:
    if not version.startswith("TLSv"):
        return None
    try:
        return tuple(int(part) for part in version.removeprefix("TLSv").split("."))
    except ValueError:
        return None


def python_default_policy(
    context: ssl.SSLContext | None = None, *, source: str = "python", error: str = ""
) -> OpenSSLPolicy:
    """What `ssl.create_default_context()` gives, described as a policy (for comparisons, and as the
    stand-in when libssl cannot be read)."""
    context = context or ssl.create_default_context()
    names = tuple(c["name"] for c in context.get_ciphers())
    minimum = context.minimum_version
    maximum = context.maximum_version
    return OpenSSLPolicy(
        source=source,
        config_file=_config_file_from_env(),
        security_level=context.security_level,
        min_version=None if minimum is ssl.TLSVersion.MINIMUM_SUPPORTED else minimum,
        max_version=None if maximum is ssl.TLSVersion.MAXIMUM_SUPPORTED else maximum,
        ciphers=tuple(n for n in names if not n.startswith("TLS_")),
        ciphersuites=tuple(n for n in names if n.startswith("TLS_")),
        error=error,
    )


def _config_file_from_env() -> str:
    return os.environ.get("OPENSSL_CONF", "")


@cache
def host_policy() -> OpenSSLPolicy:
    """The policy of this process's OpenSSL, read once."""
    return read_policy()


def read_policy() -> OpenSSLPolicy:
    """Read what OpenSSL configures on a fresh client SSL_CTX; Python's defaults, with the reason, if it cannot."""
    try:
        lib = _Libssl()
    except _Unavailable as unavailable:
        return python_default_policy(error=str(unavailable))
    try:
        return lib.read()
    except _Unavailable as unavailable:
        return python_default_policy(error=str(unavailable))
    finally:
        lib.clear_errors()


class _Unavailable(Exception):
    pass


class _Libssl:
    """The few libssl/libcrypto functions this module needs, bound through `_ssl`'s own handle."""

    def __init__(self) -> None:
        path = getattr(_ssl, "__file__", None)
        if not path:
            raise _Unavailable("the _ssl module is built into the interpreter; its libssl cannot be reached")
        try:
            lib = ctypes.CDLL(path)
        except OSError as error:
            raise _Unavailable(f"cannot load {path} through ctypes: {error}") from None
        self._lib = lib
        try:
            self._bind()
        except AttributeError as error:
            raise _Unavailable(f"libssl symbol missing behind {path}: {error}") from None
        version = lib.OpenSSL_version_num()
        if version != ssl.OPENSSL_VERSION_NUMBER:
            raise _Unavailable(
                f"the libssl reached through ctypes is {version:#x}, Python's _ssl uses {ssl.OPENSSL_VERSION_NUMBER:#x}"
            )

    def _bind(self) -> None:
        lib = self._lib
        p, i, lng = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        signatures: dict[str, tuple[list[object], object]] = {
            "OpenSSL_version_num": ([], ctypes.c_ulong),
            "TLS_client_method": ([], p),
            "SSL_CTX_new": ([p], p),
            "SSL_CTX_free": ([p], None),
            "SSL_CTX_get_security_level": ([p], i),
            "SSL_CTX_ctrl": ([p, i, lng, p], lng),
            "SSL_CTX_get_ciphers": ([p], p),
            "SSL_CTX_get_options": ([p], ctypes.c_uint64),
            "SSL_CTX_get0_param": ([p], p),
            "X509_VERIFY_PARAM_get_flags": ([p], ctypes.c_ulong),
            "OPENSSL_sk_num": ([p], i),
            "OPENSSL_sk_value": ([p, i], p),
            "SSL_CIPHER_get_name": ([p], ctypes.c_char_p),
            "ERR_clear_error": ([], None),
            "CONF_get1_default_config_file": ([], p),
            "CRYPTO_free": ([p, ctypes.c_char_p, i], None),
            "NCONF_new": ([p], p),
            "NCONF_free": ([p], None),
            "NCONF_load": ([p, ctypes.c_char_p, ctypes.POINTER(lng)], i),
            "NCONF_get_string": ([p, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_char_p),
            "NCONF_get_section": ([p, ctypes.c_char_p], p),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype

    def clear_errors(self) -> None:
        """Leave no OpenSSL error on this thread's queue: Python's next SSL call would report it."""
        self._lib.ERR_clear_error()

    def read(self) -> OpenSSLPolicy:
        lib = self._lib
        ctx = lib.SSL_CTX_new(lib.TLS_client_method())
        if not ctx:
            raise _Unavailable("SSL_CTX_new failed (the OpenSSL configuration may not load)")
        try:
            level = lib.SSL_CTX_get_security_level(ctx)
            low = lib.SSL_CTX_ctrl(ctx, _CTRL_GET_MIN_PROTO_VERSION, 0, None)
            high = lib.SSL_CTX_ctrl(ctx, _CTRL_GET_MAX_PROTO_VERSION, 0, None)
            names = self._cipher_names(ctx)
            options = int(lib.SSL_CTX_get_options(ctx))
            param = lib.SSL_CTX_get0_param(ctx)
            verify_flags = int(lib.X509_VERIFY_PARAM_get_flags(param)) if param else None
        finally:
            lib.SSL_CTX_free(ctx)
        config_file = self._config_file()
        status, directives = self._system_default(config_file)
        return OpenSSLPolicy(
            source="libssl",
            config_file=config_file,
            security_level=level,
            min_version=_VERSIONS.get(low),
            max_version=_VERSIONS.get(high),
            ciphers=tuple(n for n in names if not n.startswith("TLS_")),
            ciphersuites=tuple(n for n in names if n.startswith("TLS_")),
            options=options,
            verify_flags=verify_flags,
            directives=directives,
            config_status=status,
        )

    def _cipher_names(self, ctx: int) -> tuple[str, ...]:
        lib = self._lib
        stack = lib.SSL_CTX_get_ciphers(ctx)
        if not stack:
            return ()
        count = min(lib.OPENSSL_sk_num(stack), _MAX_CIPHERS)
        names = []
        for index in range(count):
            name = lib.SSL_CIPHER_get_name(lib.OPENSSL_sk_value(stack, index))
            if name:
                names.append(name.decode("ascii", "replace"))
        return tuple(names)

    def _config_file(self) -> str:
        configured = os.environ.get("OPENSSL_CONF")
        if configured:
            return configured
        pointer = self._lib.CONF_get1_default_config_file()
        if not pointer:
            return ""
        try:
            return ctypes.string_at(pointer).decode("utf-8", "replace")
        finally:
            self._lib.CRYPTO_free(pointer, None, 0)

    def _system_default(self, config_file: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        """(whether OpenSSL loads the file, the directives of the section that `ssl_conf` names
        `system_default`, as the file says them).

        OpenSSL's own parser reads the file (includes and variables as it resolves them). For the facts
        only: the effective values come from the SSL_CTX, whatever this finds. A file OpenSSL cannot load
        is ignored whole, by every client, without a word: the status says so."""
        if not config_file:
            return "", ()
        if not os.path.isfile(config_file):
            return "absent: OpenSSL's built-in defaults apply", ()
        lib = self._lib
        conf = lib.NCONF_new(None)
        if not conf:
            return "", ()
        try:
            line = ctypes.c_long(0)
            if lib.NCONF_load(conf, os.fsencode(config_file), ctypes.byref(line)) <= 0:
                where = f"does not parse (line {line.value})" if line.value > 0 else "cannot be read"
                return f"{where}: OpenSSL ignores all of it, its built-in defaults apply", ()
            # openssl_conf (in the default section) names a section whose ssl_conf names one whose
            # system_default names the section of directives.
            section: bytes | None = None
            for key in (b"openssl_conf", b"ssl_conf", b"system_default"):
                section = lib.NCONF_get_string(conf, section, key)
                if not section:
                    return "loaded, without a system_default section", ()
            stack = lib.NCONF_get_section(conf, section)
            if not stack:
                return "loaded; its system_default section is missing", ()
            pairs = []
            for index in range(min(lib.OPENSSL_sk_num(stack), _MAX_DIRECTIVES)):
                entry = ctypes.cast(lib.OPENSSL_sk_value(stack, index), ctypes.POINTER(_ConfValue)).contents
                if entry.name and entry.value:
                    pairs.append((entry.name.decode("utf-8", "replace"), entry.value.decode("utf-8", "replace")))
            return "loaded", tuple(pairs)
        finally:
            lib.NCONF_free(conf)


class _ConfValue(ctypes.Structure):
    # typedef struct { char *section; char *name; char *value; } CONF_VALUE;
    _fields_ = [("section", ctypes.c_char_p), ("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]
