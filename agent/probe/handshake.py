"""One TCP connect and one TLS handshake to one address: the client views, the native verdict, the served chain.

The handshake is driven by hand through `ssl.MemoryBIO` over a plain asyncio stream. Unlike
`asyncio`'s own TLS transport, that keeps the `SSLObject` after `SSLCertVerificationError`, so the chain
the server sent is still there (`get_unverified_chain()`), whatever the verdict.

Two clients matter on a host (`Client`):

- `openssl`, the native view: an OpenSSL-based client with the host's defaults, as `openssl s_client` and
  curl are. Its context is Python's with the host's OpenSSL policy put back (`openssl_policy`): the cipher
  list and security level, the version bounds, the options and the verify flags OpenSSL configured (not
  the X509_STRICT and PARTIAL_CHAIN of Python 3.13's default context); TLS 1.3 suites, groups and signature
  algorithms were never replaced. Every probe runs this handshake.
- `python`, what `ssl.create_default_context()` gives in the agent's own interpreter (its build decides: one
  built with --with-ssl-default-suites=openssl, as Debian's python3, keeps OpenSSL's ciphers and minimum version,
  and the detail names it). Reported only where it differs, and a second
  handshake runs only where it may: `_python_may_differ` decides from the first handshake (the contexts
  are configured alike; or the negotiated version and cipher are ones Python's context offers, its
  security level is not stricter, and the verify outcome does not hang on the level; where Python's verify
  flags differ, its verdict on the chain, judged offline, is the openssl view's). Otherwise, with what is
  left of the deadline, a second connection runs Python's context.

The openssl view's chain is not verified inside its handshake, which runs on a twin of its context that
loads no trust store and verifies nothing; the verification that context would have run there runs
offline instead (`ContextCache.verify_once`: the same store, flags, name check and security level,
acceptances cached per chain and hour). A refused chain is reported as the classic client reports it.

What the server chose is read from OpenSSL's message callback (`tls_messages`): the ServerHello gives the
version and cipher even when verification then fails (Python's `version()` answers only once the
handshake completed), and a CertificateRequest says that a client certificate was asked for, from which
CAs. After a TLS 1.3 handshake in which the server asked for a client certificate, the client reads
briefly (at most `POST_HANDSHAKE_READ_S`, within the deadline, or until the first record): a server that
refuses the client's certificate, or the lack of one, says so only then.

Failures form a closed set that says who refused what, classified by OpenSSL's library and reason codes
(`ssl.SSLError.reason`), never by message text; a server's fatal alert whose reason Python's table does not
name (no_application_protocol on 3.11) is named from the alert record itself, as the message callback read it.

Sessions are never resumed (no `session=` is ever passed, and Python's client contexts keep no session
cache): a resumed handshake carries no Certificate message, so there would be no chain to report.
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import errno
import os
import ssl
import sys
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from ..model import (
    AddressResult,
    Client,
    ClientView,
    Failure,
    Handshake,
    NativeVerdict,
    Party,
    Starttls,
    TlsVersion,
    Verdict,
)
from ..trust import libcrypto
from ..trust.names import partial_wildcard_covers
from ..trust.verify import (
    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
    NativeCheck,
    NativeVerifier,
    verdict_from_openssl_code,
)
from .openssl_policy import OpenSSLPolicy, host_policy
from .starttls import DIRECT, Route, StarttlsFailed, before_tls
from .targets import is_ip_literal
from .tls_messages import CERTIFICATE, ServerHello, Transcript, alert_name, version_name

if TYPE_CHECKING:  # a client certificate arrives made; its loading code is only needed where one is configured
    from .client_certs import ClientCertificate

__all__ = ["MAX_HANDSHAKE_BYTES", "POST_HANDSHAKE_READ_S", "ContextCache", "VerifyOnce", "handshake"]

MAX_HANDSHAKE_BYTES = 1024 * 1024
CONTEXT_CACHE_SIZE = 64
POST_HANDSHAKE_READ_S = 0.25
_READ_CHUNK = 64 * 1024
_CLOSE_TIMEOUT = 1.0
_MIN_SECOND_ATTEMPT = 0.05  # seconds; below this a second handshake cannot finish anyway
# What a STARTTLS dialogue leaves the TLS handshake at least (or its whole budget, when smaller).
_HANDSHAKE_RESERVE_S = 2.0
_TRANSCRIPT = "_tlsfleet_transcript"  # where an SSLObject carries its Transcript for the message callback

_SSL_VERSIONS: dict[TlsVersion, ssl.TLSVersion] = {
    TlsVersion.TLS1_0: ssl.TLSVersion.TLSv1,
    TlsVersion.TLS1_1: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLS1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS1_3: ssl.TLSVersion.TLSv1_3,
}
_VERSION_ORDER = {"TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}
_PY_VERSION_ORDER = {
    ssl.TLSVersion.TLSv1: 1,
    ssl.TLSVersion.TLSv1_1: 2,
    ssl.TLSVersion.TLSv1_2: 3,
    ssl.TLSVersion.TLSv1_3: 4,
}
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})

# OpenSSL names a received alert SSL_R_<prefix>_<description>; a few descriptions carry no "ALERT_".
_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")
_ALERT_REASONS_WITHOUT_PREFIX = {
    "TLSV1_UNRECOGNIZED_NAME": "unrecognized_name",
    "TLSV1_UNSUPPORTED_EXTENSION": "unsupported_extension",
    "TLSV1_CERTIFICATE_UNOBTAINABLE": "certificate_unobtainable",
    "TLSV1_BAD_CERTIFICATE_STATUS_RESPONSE": "bad_certificate_status_response",
    "TLSV1_BAD_CERTIFICATE_HASH_VALUE": "bad_certificate_hash_value",
    # OpenSSL spells it the British way; the RFC (and the alert read off the wire) says user_canceled.
    "TLSV1_ALERT_USER_CANCELLED": "user_canceled",
}
# OpenSSL reason codes (library SSL) of refusals by this host's client, by what it refused.
_NO_COMMON_VERSION = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",  # the server chose a version outside the client's bounds
        "NO_PROTOCOLS_AVAILABLE",  # the client's bounds leave no version at all
        "WRONG_SSL_VERSION",
        "VERSION_TOO_LOW",
        "VERSION_TOO_HIGH",
        "BAD_PROTOCOL_VERSION_NUMBER",
        "UNSUPPORTED_SSL_VERSION",
        "UNKNOWN_SSL_VERSION",
        "BAD_LEGACY_VERSION",
        "BAD_HRR_VERSION",
    }
)
_NO_COMMON_CIPHER = frozenset(
    {
        "WRONG_CIPHER_RETURNED",  # the server chose a cipher the client did not offer
        "UNKNOWN_CIPHER_RETURNED",
        "NO_CIPHERS_AVAILABLE",  # the client's policy leaves no cipher for its versions
        "NO_CIPHER_MATCH",
        "NO_SHARED_CIPHER",
        "NO_SHARED_SIGNATURE_ALGORITHMS",
        "NO_SUITABLE_SIGNATURE_ALGORITHM",
        "WRONG_SIGNATURE_TYPE",
        "NO_SHARED_GROUPS",
        "NO_SUITABLE_GROUPS",
    }
)
_WEAK_KEY_EXCHANGE = frozenset(
    {
        "DH_KEY_TOO_SMALL",  # the server's DH group is below the security level
        "BAD_DH_VALUE",  # ... or fails OpenSSL's own checks (a modulus under 512 bits, as dh480.badssl.com's)
        "WRONG_CURVE",  # the server's EC group is not one the client allows
        "UNSUPPORTED_ELLIPTIC_CURVE",
        "EE_KEY_TOO_SMALL",
        "CA_KEY_TOO_SMALL",
        "CA_MD_TOO_WEAK",
        "INSUFFICIENT_SECURITY",
    }
)
# The peer's first bytes are no TLS record (an SSH banner, a plaintext HTTP answer, ...).
_NOT_TLS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LENGTH_MISMATCH",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "UNEXPECTED_RECORD",
        "BAD_RECORD_TYPE",
        "RECORD_TOO_SMALL",
    }
)
# How much of the peer's first answer is kept, to say what spoke instead of TLS.
_FIRST_BYTES = 64
_EXCESSIVE_MESSAGE_SIZE = "EXCESSIVE_MESSAGE_SIZE"  # OpenSSL's max_cert_list (100 KiB) for a Certificate
# Alerts by which a server refuses a client (certificate) that sent no certificate.
_NO_CERTIFICATE_ALERTS = frozenset(
    {
        "certificate_required",
        "handshake_failure",
        "bad_certificate",
        "certificate_unknown",
        "unsupported_certificate",
        "access_denied",
    }
)
# Alerts about the client's certificate (after a CertificateRequest), its SNI name or its ALPN list: no
# version, cipher or security level provokes them, so the other client gets them too.
_CLIENT_CERTIFICATE_ALERTS = _NO_CERTIFICATE_ALERTS | frozenset(
    {"unknown_ca", "certificate_expired", "certificate_revoked"}
)
_NAME_ALERTS = frozenset({"unrecognized_name", "no_application_protocol"})
# Failures that happen whatever the client's policy: the other client would see the same.
_POLICY_BLIND_FAILURES = frozenset({Failure.NOT_TLS, Failure.HANDSHAKE_TIMEOUT, Failure.TOO_LARGE, Failure.INTERNAL})
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64
# Verify codes that depend on the security level: 66 EE key too small, 67 CA key too small, 68 CA md too weak.
_LEVEL_VERIFY_CODES = frozenset({66, 67, 68})
# TLS 1.3 suites by IANA code; the TLS <= 1.2 names come from OpenSSL itself.
_TLS13_SUITES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
}


def _tls_version(value: TlsVersion | str | None) -> ssl.TLSVersion | None:
    if value is None or value == "":
        return None
    try:
        return _SSL_VERSIONS[TlsVersion(value)]
    except ValueError:
        accepted = ", ".join(v.value for v in TlsVersion)
        raise ValueError(f"TLS version {value!r} is not known; accepted: {accepted}") from None


@cache
def _cipher_names() -> Mapping[int, str]:
    """IANA cipher suite code -> OpenSSL name, for every cipher this OpenSSL knows."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    names = {c["id"] & 0xFFFF: c["name"] for c in context.get_ciphers()}
    names.update(_TLS13_SUITES)
    return names


def _cipher_name(code: int) -> str:
    return _cipher_names().get(code, f"0x{code:04X}")


@dataclass(frozen=True)
class _ContextKey:
    """Everything an SSLContext is made from: contexts with equal keys are one."""

    client: Client
    verify: bool
    check_hostname: bool
    alpn: tuple[str, ...]
    min_version: ssl.TLSVersion | None
    max_version: ssl.TLSVersion | None
    client_cert: ClientCertificate | None
    deferred: bool = False  # no trust store and no verification: `ContextCache.verify_once`


@dataclass(frozen=True)
class ContextProfile:
    """What a built context offers, for deciding whether another client could fare differently."""

    ciphers: tuple[str, ...]  # in preference order, TLS 1.3 suites included
    security_level: int
    minimum: int  # 0: no lower bound
    maximum: int  # 99: no upper bound
    verify_flags: int = 0  # X509_V_FLAG_* bits its chain verification runs with

    @property
    def verdict_flags(self) -> int:
        """The verify flags that can change a verdict: all but trusted-first, which OpenSSL always sets."""
        return self.verify_flags & ~ssl.VerifyFlags.VERIFY_X509_TRUSTED_FIRST.value

    def verify_flag_names(self) -> str:
        """Python's names of the flags that can change a verdict ("VERIFY_X509_STRICT"); "" for OpenSSL's
        defaults (trusted-first is always on)."""
        return ", ".join(
            str(flag.name)
            for flag in ssl.VerifyFlags
            if flag.value
            and flag is not ssl.VerifyFlags.VERIFY_X509_TRUSTED_FIRST
            and self.verify_flags & flag.value == flag.value
        )

    def accepts(self, version: str, cipher: str) -> bool:
        order = _VERSION_ORDER.get(version)
        return order is not None and self.minimum <= order <= self.maximum and cipher in self.ciphers

    def describe(self) -> str:
        low = _ORDER_NAMES.get(self.minimum, "any version")
        high = _ORDER_NAMES.get(self.maximum, "any version")
        tls12 = sum(1 for c in self.ciphers if not c.startswith("TLS_"))
        flags = self.verify_flag_names()
        verify = f", verify flags {flags}" if flags else ""
        return f"security level {self.security_level}, {low} to {high}, {tls12} TLS<=1.2 ciphers{verify}"


_ORDER_NAMES = {order: name for name, order in _VERSION_ORDER.items()}


def _profile(context: ssl.SSLContext) -> ContextProfile:
    return ContextProfile(
        ciphers=tuple(c["name"] for c in context.get_ciphers()),
        security_level=context.security_level,
        minimum=_PY_VERSION_ORDER.get(context.minimum_version, 0),
        maximum=_PY_VERSION_ORDER.get(context.maximum_version, 99),
        verify_flags=int(context.verify_flags),
    )


class ContextCache:
    """Client `SSLContext`s by (client, verification, hostname check, ALPN, version bounds, client
    certificate); LRU, bounded.

    Contexts are shared by probes and immutable once built here, but for the system trust store, which is
    expensive (the whole bundle parsed) and read in only when a handshake verifies with it (`with_store`):
    the openssl view's handshake is verified offline (`verify_once`), with its own parameters. `cafile`
    replaces the system store with one bundle, as `ssl.create_default_context(cafile=)` does; it exists for
    the lab and for agents configured with an explicit native bundle. Without it, contexts load the system
    store, honouring SSL_CERT_FILE/SSL_CERT_DIR as OpenSSL reads them when the store is read in: `clear()`
    after the store changed. `policy` is the host's OpenSSL policy that `Client.OPENSSL` contexts carry (by
    default, what this process's OpenSSL configured).
    """

    def __init__(
        self, *, cafile: str | None = None, maxsize: int = CONTEXT_CACHE_SIZE, policy: OpenSSLPolicy | None = None
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"context cache size {maxsize} is not accepted; at least 1")
        self._cafile = cafile
        self._maxsize = maxsize
        self._policy = policy
        self._contexts: OrderedDict[_ContextKey, tuple[ssl.SSLContext, ContextProfile]] = OrderedDict()
        self._with_store: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()  # contexts whose store is read in
        self._verifier = NativeVerifier(cafile)
        self._once_refused: str | None = None  # why verify_once never applies here; None: not decided yet

    @property
    def cafile(self) -> str | None:
        return self._cafile

    @property
    def policy(self) -> OpenSSLPolicy:
        if self._policy is None:
            self._policy = host_policy()
        return self._policy

    def __len__(self) -> int:
        return len(self._contexts)

    def clear(self) -> None:
        self._contexts.clear()
        self._with_store = weakref.WeakSet()
        self._verifier = NativeVerifier(self._cafile)  # the stores are read anew, as new contexts read them

    def with_store(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """`context` (one of this cache's) with its trust store read in once, as `ssl.create_default_context`
        reads the system store: for a handshake that verifies the chain itself."""
        if context not in self._with_store:
            context.load_default_certs()
            self._with_store.add(context)
        return context

    def get(
        self,
        *,
        verify: bool,
        check_hostname: bool,
        alpn: tuple[str, ...] = (),
        min_version: TlsVersion | str | None = None,
        max_version: TlsVersion | str | None = None,
        client: Client = Client.OPENSSL,
        client_cert: ClientCertificate | None = None,
    ) -> ssl.SSLContext:
        return self.get_with_profile(
            verify=verify,
            check_hostname=check_hostname,
            alpn=alpn,
            min_version=min_version,
            max_version=max_version,
            client=client,
            client_cert=client_cert,
        )[0]

    def get_with_profile(
        self,
        *,
        verify: bool,
        check_hostname: bool,
        alpn: tuple[str, ...] = (),
        min_version: TlsVersion | str | None = None,
        max_version: TlsVersion | str | None = None,
        client: Client = Client.OPENSSL,
        client_cert: ClientCertificate | None = None,
    ) -> tuple[ssl.SSLContext, ContextProfile]:
        """The context and what it offers (ciphers, security level, version bounds)."""
        return self._entry(_key(client, verify, check_hostname, alpn, min_version, max_version, client_cert))

    def verify_once(
        self,
        classic: ssl.SSLContext,
        server_hostname: str | None,
        *,
        verify: bool,
        check_hostname: bool,
        alpn: tuple[str, ...] = (),
        min_version: TlsVersion | str | None = None,
        max_version: TlsVersion | str | None = None,
        client_cert: ClientCertificate | None = None,
    ) -> VerifyOnce | None:
        """The openssl view's handshake with its chain verification taken out, for `classic` (that view's
        context for these bounds) and the name the connection sends; None where it does not apply.

        The twin context is built like `classic` but loads no trust store and verifies nothing, so
        OpenSSL's in-handshake verification (which runs even then) stops at the leaf's issuer at once.
        Its handshake sends what the classic one sends up to the server's Certificate, and on to the end
        when the classic client accepts the chain. `VerifyOnce.verify_code` runs the classic context's
        verification offline, with its own store and parameters, and caches acceptances; a chain it refuses
        reads as the classic client reports it, which stops at the Certificate (`_refused_chain`). The
        server then sees the handshake completed and closed rather than refused with an alert. Not with a
        client certificate (OpenSSL builds the chain it sends from the trust store), nor where the OpenSSL
        configuration gives contexts a verify store of their own or Suite B rules."""
        if not verify or client_cert is not None or self._verify_once_refused():
            return None
        key = _key(Client.OPENSSL, verify, check_hostname, alpn, min_version, max_version, client_cert)
        twin = self._entry(replace(key, deferred=True))[0]
        if twin.security_level != classic.security_level:
            return None
        check = _native_check(classic, server_hostname)
        return VerifyOnce(context=twin, verifier=self._verifier, check=check) if check is not None else None

    def judge_offline(
        self, context: ssl.SSLContext, server_hostname: str | None, chain: tuple[bytes, ...]
    ) -> int | None:
        """The verify code `context`'s own handshake would give `chain` now (0: ok), judged offline with its store,
        flags, name check and security level; None where that cannot be done here."""
        if not chain or context.verify_mode is not ssl.CERT_REQUIRED or self._verify_once_refused():
            return None
        check = _native_check(context, server_hostname)
        return self._verifier.verify(chain, check, int(time.time())) if check is not None else None

    def _verify_once_refused(self) -> str:
        if self._once_refused is None:
            self._once_refused = libcrypto.unavailable_reason() or _config_refuses_verify_once(self.policy)
        return self._once_refused

    def _entry(self, key: _ContextKey) -> tuple[ssl.SSLContext, ContextProfile]:
        entry = self._contexts.get(key)
        if entry is not None:
            self._contexts.move_to_end(key)
            return entry
        context = self._build(key)
        entry = (context, _profile(context))
        self._contexts[key] = entry
        if len(self._contexts) > self._maxsize:
            self._contexts.popitem(last=False)
        return entry

    def _build(self, key: _ContextKey) -> ssl.SSLContext:
        if key.deferred:
            # ssl.create_default_context() without the trust store it loads.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            keylog = os.environ.get("SSLKEYLOGFILE")
            if keylog and not sys.flags.ignore_environment:
                context.keylog_filename = keylog
        elif self._cafile is not None:
            # Read at once: a bundle that cannot be read fails the probe as it fails such a client (FileNotFoundError).
            context = ssl.create_default_context(cafile=self._cafile)
            self._with_store.add(context)
        else:
            # ssl.create_default_context()'s context without the system store it parses (some 30 ms, which a
            # handshake whose chain is verified offline never reads): its directory /dev/null, in which no
            # certificate can ever be found. `with_store` reads the store in before a handshake needs it.
            context = ssl.create_default_context(capath=os.devnull)
        if key.client is Client.OPENSSL:
            self.policy.apply(context)
            # OpenSSL's name check takes partial-label wildcards ("f*.example.com") unless told otherwise, and
            # s_client does not tell it; CPython tells it on every context it makes.
            context._host_flags &= ~X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS  # type: ignore[attr-defined]
        context.check_hostname = key.check_hostname and not key.deferred
        if not key.verify or key.deferred:
            context.verify_mode = ssl.CERT_NONE
        if key.alpn:
            context.set_alpn_protocols(list(key.alpn))
        if key.min_version is not None:
            context.minimum_version = key.min_version
        if key.max_version is not None:
            context.maximum_version = key.max_version
        if key.client_cert is not None:
            key.client_cert.load_into(context)
        _watch_messages(context)
        return context


def _key(
    client: Client,
    verify: bool,
    check_hostname: bool,
    alpn: tuple[str, ...],
    min_version: TlsVersion | str | None,
    max_version: TlsVersion | str | None,
    client_cert: ClientCertificate | None,
) -> _ContextKey:
    return _ContextKey(
        client=client,
        verify=verify,
        check_hostname=check_hostname and verify,
        alpn=tuple(alpn),
        min_version=_tls_version(min_version),
        max_version=_tls_version(max_version),
        client_cert=client_cert,
    )


# system_default directives after which a context's verification differs from X509_verify_cert on its
# trust store: a verify store of its own (VerifyCAFile, VerifyCAPath, VerifyCAStore), a chain store
# (ChainCA*), or Suite B flags from the cipher string.
_OWN_STORE_DIRECTIVES = ("verifyca", "chainca")


def _config_refuses_verify_once(policy: OpenSSLPolicy) -> str:
    for name, value in policy.directives:
        if name.lower().startswith(_OWN_STORE_DIRECTIVES):
            return f"the OpenSSL configuration sets {name}"
        if "SUITEB" in value.upper():
            return f"the OpenSSL configuration's {name} asks for Suite B"
    return ""


def _refused_chain(attempt: _Attempt, code: int, server_hostname: str | None) -> _Attempt:
    """What the classic client reports when its verification refuses the chain with `code`: it stops at the
    server's Certificate, so what it saw is the transcript up to there; the error is the one CPython makes
    of SSL_get_verify_result (Modules/_ssl.c), with the name as sent (`server_hostname`, IDNA-encoded)."""
    seen = attempt.at_certificate or Transcript()
    if code == _HOSTNAME_MISMATCH:
        message = f"Hostname mismatch, certificate is not valid for '{server_hostname}'."
    elif code == _IP_MISMATCH:
        message = f"IP address mismatch, certificate is not valid for '{server_hostname}'."
    else:
        message = libcrypto.error_string(code)
    hello = seen.hello
    version, cipher = ("", attempt.cipher) if hello is None or hello.retry else _negotiated_by(hello)
    return replace(
        attempt,
        failure=Failure.CERT_VERIFY,
        error=f"certificate verify failed: {message} (code {code})",
        alert="",
        refused_by=Party.CLIENT,
        verify_code=code,
        verify_message=message,
        verified=False,
        version=version,
        cipher=cipher,
        alpn=seen.alpn,
        certificate_requested=seen.certificate_requested,
        ca_names=seen.ca_names,
        at_certificate=None,
    )


@dataclass(frozen=True)
class VerifyOnce:
    """A handshake context that verifies nothing, and the offline judgement of the classic one it stands for."""

    context: ssl.SSLContext
    verifier: NativeVerifier
    check: NativeCheck

    def verify_code(self, chain: tuple[bytes, ...]) -> int:
        """The X509_V_ERR code the classic context's in-handshake verification gives `chain` now (0: ok)."""
        return self.verifier.verify(chain, self.check, int(time.time()))


def _watch_messages(context: ssl.SSLContext) -> None:
    """Route OpenSSL's message callback to the Transcript of the connection it concerns."""
    # The C-level setter: OpenSSL's numbers reach `_on_message` as they are. `ssl.SSLContext`'s own setter
    # wraps the callback in a function that makes three enums of every record and message a handshake has.
    raw = getattr(getattr(_ssl, "_SSLContext", None), "_msg_callback", None)
    if raw is not None and hasattr(raw, "__set__"):
        raw.__set__(context, _on_message)
    elif hasattr(context, "_msg_callback"):
        context._msg_callback = _on_message  # private in CPython 3.8+, typed in typeshed


def _on_message(connection: Any, direction: str, version: Any, content_type: int, msg_type: int, data: bytes) -> None:
    transcript = getattr(connection, _TRANSCRIPT, None)
    if transcript is None or direction != "read":
        return
    try:
        if content_type == 22:  # handshake
            transcript.handshake_message(bytes(data))
        elif content_type == 21:  # alert
            if transcript.handshake_done:
                transcript.after_handshake += 1
            else:
                transcript.alert(bytes(data))
    except Exception:  # a parsing slip must never break the handshake it watches
        pass


@dataclass(frozen=True)
class _Attempt:
    """What one handshake over one connection produced."""

    failure: Failure = Failure.NONE
    error: str = ""
    alert: str = ""
    refused_by: Party = Party.NONE
    verify_code: int | None = None  # set when the client rejected the chain
    verify_message: str = ""
    verified: bool = False  # the client accepted the chain (the handshake went past the Certificate)
    version: str = ""
    cipher: str = ""
    alpn: str = ""
    chain: tuple[bytes, ...] = ()
    duration_ms: float = 0.0
    certificate_requested: bool = False
    ca_names: tuple[str, ...] = ()
    at_certificate: Transcript | None = None  # what had arrived when the server's Certificate did


class _ConnectFailed(Exception):
    def __init__(self, failure: Failure, message: str, proxy_status: int = 0) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.proxy_status = proxy_status


class _PeerClosed(Exception):
    pass


class _TooLarge(Exception):
    pass


async def handshake(
    address: str,
    port: int,
    *,
    server_hostname_for_sni: str | None,
    expected_name: str,
    alpn: tuple[str, ...] = (),
    min_version: TlsVersion | str | None = None,
    max_version: TlsVersion | str | None = None,
    connect_timeout: float,
    handshake_timeout: float,
    context_cache: ContextCache,
    max_handshake_bytes: int = MAX_HANDSHAKE_BYTES,
    client_cert: ClientCertificate | None = None,
    route: Route = DIRECT,
    spare_s: float = 0.0,
) -> AddressResult:
    """Connect to `address`:`port` and run the openssl view's CERT_REQUIRED handshake (and Python's, where
    it may differ); failures are results, not raises.

    With `server_hostname_for_sni` the name is sent in SNI and OpenSSL checks it (it must equal
    `expected_name`). Without it, an IP-literal `expected_name` is still checked (Python sends no SNI for
    IP literals anyway); a DNS name cannot be checked by Python without being sent, so the native
    verdict then says `hostname_checked=False` and only the offline verification checks the name.
    `client_cert` is presented when the server asks for one. `views` holds the openssl view first and the
    python view only where it differs; none when the TCP connect failed (a network fact, no client's
    view). When only Python's handshake got a chain, `chain` is that one (what the server serves). The
    returned AddressResult has no store verdicts; the caller adds them. Everything, a second handshake
    included, ends within `connect_timeout + handshake_timeout + spare_s`. A STARTTLS dialogue may run past
    `connect_timeout` into what the handshake will not need (`spare_s`, the probe's unused time, and the
    handshake's budget beyond _HANDSHAKE_RESERVE_S): a Postfix postscreen holds its greeting back for 6 s.
    """
    server_hostname, check_hostname = _hostname_plan(server_hostname_for_sni, expected_name)
    bounds: dict[str, Any] = {
        "verify": True,
        "check_hostname": check_hostname,
        "alpn": alpn,
        "min_version": min_version,
        "max_version": max_version,
        "client_cert": client_cert,
    }
    ours, ours_profile = context_cache.get_with_profile(client=Client.OPENSSL, **bounds)
    deadline = time.perf_counter() + connect_timeout + handshake_timeout + max(spare_s, 0.0)
    dialogue_until = (
        deadline - min(handshake_timeout, _HANDSHAKE_RESERVE_S) if route.starttls is not Starttls.NONE else None
    )
    try:
        reader, writer, connect_ms = await _connect(address, port, connect_timeout, route, dialogue_until)
    except _ConnectFailed as failed:
        return AddressResult(
            address=address,
            connect_failure=failed.failure,
            connect_error=failed.message,
            proxy_status=failed.proxy_status,
            native=NativeVerdict(Verdict.NO_CHAIN, hostname_checked=check_hostname),
        )
    presented = client_cert is not None
    once = context_cache.verify_once(ours, server_hostname, **bounds)
    try:
        first = await _handshake_over(
            reader,
            writer,
            once.context if once is not None else context_cache.with_store(ours),
            server_hostname,
            min(handshake_timeout, max(deadline - time.perf_counter(), 0.0)),
            max_handshake_bytes,
            presented,
        )
    finally:
        await _close(writer)
    if once is not None and first.chain:
        code = once.verify_code(first.chain)
        if code != 0:
            first = _refused_chain(first, code, once.check.host)
    first = _unoffered_alpn(first, alpn)
    native = _native_verdict(first, check_hostname)
    views = [_view(Client.OPENSSL, first, native, _policy_note(context_cache.policy))]
    chain = first.chain
    python, python_profile = context_cache.get_with_profile(client=Client.PYTHON, **bounds)
    reason = _python_may_differ(first, ours_profile, python_profile)
    if not reason and check_hostname and first.verified and not _takes_partial_wildcards(python):
        reason = _partial_wildcard_reason(first.chain, server_hostname or expected_name)
    if not reason and python_profile.verdict_flags != ours_profile.verdict_flags:
        offline = context_cache.judge_offline(python, server_hostname, first.chain)
        reason = _flags_may_differ(first, ours_profile, python_profile, offline)
    if reason:
        second = await _second_attempt(
            address,
            port,
            context_cache.with_store(python),
            server_hostname,
            deadline,
            max_handshake_bytes,
            presented,
            route,
        )
        if second is not None:
            second = _unoffered_alpn(second, alpn)
            python_view = _view(Client.PYTHON, second, _native_verdict(second, check_hostname), "")
            if _differs(views[0], python_view):
                detail = _why(reason, second, python_profile)
                views.append(replace(python_view, detail=detail))
            if not chain and second.chain:
                chain = second.chain  # the server's chain, as it served it to Python's client
    return AddressResult(
        address=address,
        connect_ms=connect_ms,
        handshake=Handshake(
            failure=first.failure,
            error=first.error,
            tls_version=first.version,
            cipher=first.cipher,
            alpn=first.alpn,
            duration_ms=first.duration_ms,
            alert=first.alert,
            refused_by=first.refused_by,
            client_cert_requested=first.certificate_requested,
            acceptable_ca_names=first.ca_names,
            # Presented only when asked for: OpenSSL sends a client certificate in answer to a request.
            client_cert=client_cert.name if client_cert is not None and first.certificate_requested else "",
        ),
        chain=chain,
        native=native,
        views=tuple(views),
    )


def _unoffered_alpn(attempt: _Attempt, offered: tuple[str, ...]) -> _Attempt:
    """A client refuses a server that selects an ALPN protocol it did not offer (RFC 7301 section 3.2) with a
    bare BAD_EXTENSION; say which protocol, and what was offered."""
    if attempt.failure is not Failure.PROTOCOL_ERROR or not attempt.alpn or attempt.alpn in offered:
        return attempt
    what = f"offered {', '.join(offered)}" if offered else "offered no ALPN"
    error = f"the server selected ALPN protocol {attempt.alpn!r}, which the client did not offer ({what}): "
    return replace(attempt, error=error + attempt.error)


def _hostname_plan(sni: str | None, expected_name: str) -> tuple[str | None, bool]:
    """(server_hostname for wrap_bio, whether OpenSSL checks the name)."""
    if sni is not None:
        if sni != expected_name:
            # Python uses one name for both SNI and the check; two different names cannot both hold.
            raise ValueError(
                f"SNI {sni!r} differs from the expected name {expected_name!r}; the native client checks the "
                "name it sends, so they must be equal"
            )
        return sni, True
    if is_ip_literal(expected_name):
        return expected_name, True
    return None, False


def _native_verdict(attempt: _Attempt, hostname_checked: bool) -> NativeVerdict:
    if attempt.verify_code is not None:
        return NativeVerdict(
            verdict=verdict_from_openssl_code(attempt.verify_code),
            verify_code=attempt.verify_code,
            verify_message=attempt.verify_message,
            hostname_checked=hostname_checked,
        )
    if attempt.failure is Failure.NONE or attempt.verified:
        # A failure after the client accepted the chain (a weak key exchange, a refused client certificate)
        # leaves the chain's verdict as OpenSSL gave it: `openssl s_client` says "Verify return code: 0".
        return NativeVerdict(Verdict.OK, 0, "ok", hostname_checked=hostname_checked)
    if attempt.chain:
        # A chain arrived but the handshake broke off before the client judged it; the verdict is unknown.
        return NativeVerdict(
            Verdict.OTHER,
            0,
            f"the handshake failed ({attempt.failure}) before the native client finished",
            hostname_checked=hostname_checked,
        )
    return NativeVerdict(Verdict.NO_CHAIN, hostname_checked=hostname_checked)


def _view(client: Client, attempt: _Attempt, verdict: NativeVerdict, detail: str) -> ClientView:
    return ClientView(
        client=client,
        verdict=verdict.verdict,
        verify_code=verdict.verify_code,
        failure=attempt.failure,
        error=attempt.error,
        tls_version=attempt.version,
        cipher=attempt.cipher,
        detail=detail,
    )


def _policy_note(policy: OpenSSLPolicy) -> str:
    if policy.from_openssl:
        return ""
    return f"the host's OpenSSL policy could not be read ({policy.error}); Python's default context stands in"


def _python_may_differ(first: _Attempt, ours: ContextProfile, python: ContextProfile) -> str:
    """Why Python's default context might fare differently from the openssl view; "" when it certainly
    would not (then no second handshake runs)."""
    if ours == python:
        return ""  # configured alike: the same handshake
    if first.failure in _POLICY_BLIND_FAILURES:
        return ""
    if first.failure is Failure.TLS_ALERT and first.alert in _NAME_ALERTS:
        return ""
    if not first.version:
        return f"the openssl view failed ({first.failure}) before the server chose a version and cipher"
    failed_over_policy = first.failure in (
        Failure.NO_COMMON_VERSION,
        Failure.NO_COMMON_CIPHER,
        Failure.PROTOCOL_ERROR,
        Failure.CLOSED,
        Failure.RESET,
    ) or (
        first.failure is Failure.TLS_ALERT
        and not (first.certificate_requested and first.alert in _CLIENT_CERTIFICATE_ALERTS)
    )
    if failed_over_policy:
        return f"the openssl view failed ({first.failure}{f' {first.alert}' if first.alert else ''})"
    if not python.accepts(first.version, first.cipher):
        return f"it does not offer {first.version} with {first.cipher}, which the openssl view negotiated"
    if python.security_level > ours.security_level:
        return f"its security level {python.security_level} is stricter than the host's {ours.security_level}"
    if python.security_level < ours.security_level and (
        first.verify_code in _LEVEL_VERIFY_CODES or first.failure is Failure.WEAK_KEY_EXCHANGE
    ):
        return (
            f"the host's security level {ours.security_level} refused what its level {python.security_level} may accept"
        )
    return ""


def _native_check(context: ssl.SSLContext, server_hostname: str | None) -> NativeCheck | None:
    """The verification `context`'s handshake would run, to run offline; None for a name IDNA cannot encode."""
    host = None
    if context.check_hostname and server_hostname:
        try:
            host = server_hostname.encode("idna").decode("ascii")  # as ssl.SSLContext.wrap_bio sends it
        except UnicodeError:
            return None
    return NativeCheck(
        host=host,
        security_level=context.security_level,
        verify_flags=int(context.verify_flags),
        checks_common_name=context.hostname_checks_common_name,
        partial_wildcards=_takes_partial_wildcards(context),
    )


def _takes_partial_wildcards(context: ssl.SSLContext) -> bool:
    return (
        not getattr(context, "_host_flags", X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS) & X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    )


def _partial_wildcard_reason(chain: tuple[bytes, ...], name: str) -> str:
    """Why a client that refuses partial-label wildcards may refuse a leaf the openssl view accepted."""
    if not chain or b"*" not in chain[0]:  # no wildcard at all: the usual case, decided without parsing
        return ""
    pattern = partial_wildcard_covers(chain[0], name)
    return f"it refuses partial-label wildcards such as {pattern!r}, which the openssl view accepted" if pattern else ""


def _flags_may_differ(first: _Attempt, ours: ContextProfile, python: ContextProfile, offline: int | None) -> str:
    """Why Python's verify flags (Python 3.13's X509_STRICT and PARTIAL_CHAIN) might judge the chain the openssl
    view judged otherwise; "" when they do not matter here, or `offline` (Python's verdict on it, judged offline;
    None: unknown) equals the openssl view's."""
    if not first.chain or not (first.verified or first.verify_code is not None):
        return ""
    if offline is not None and offline == (first.verify_code or 0):
        return ""
    theirs, host = python.verify_flag_names() or "none", ours.verify_flag_names() or "none"
    return f"it verifies with other flags ({theirs}) than the host's OpenSSL clients ({host})"


def _differs(openssl: ClientView, python: ClientView) -> bool:
    if (openssl.failure, openssl.verdict, openssl.verify_code) != (python.failure, python.verdict, python.verify_code):
        return True
    return bool(openssl.tls_version and python.tls_version and openssl.tls_version != python.tls_version)


def _why(reason: str, second: _Attempt, python: ContextProfile) -> str:
    if second.failure is Failure.NONE:
        outcome = f"completes with {second.version} {second.cipher}".rstrip()
    elif second.verify_code is not None:
        outcome = f"rejects the chain: {second.verify_message} (code {second.verify_code})"
    else:
        alert = f" {second.alert}" if second.alert else ""
        outcome = f"fails: {second.failure}{alert}"
    return f"Python's default context ({python.describe()}; {_interpreter()}) {outcome}: {reason}"


@cache
def _interpreter() -> str:
    """Which Python the python view is: the agent's own, whose build decides its defaults (a distribution's
    python3 built with --with-ssl-default-suites=openssl keeps OpenSSL's ciphers and minimum version)."""
    where = f", {sys.executable}" if sys.executable else ""
    return f"the agent's Python {sys.version.split()[0]}{where}"


async def _second_attempt(
    address: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    deadline: float,
    max_bytes: int,
    presented: bool,
    route: Route = DIRECT,
) -> _Attempt | None:
    """Another client's handshake in what is left until `deadline` (a `time.perf_counter()` value); None
    when there is no time or no connection (then that client's view is unknown, and not reported)."""
    left = deadline - time.perf_counter()
    if left < _MIN_SECOND_ATTEMPT:
        return None
    try:
        reader, writer, _ = await _connect(address, port, left, route)
    except _ConnectFailed:
        return None
    try:
        left = deadline - time.perf_counter()
        if left < _MIN_SECOND_ATTEMPT:
            return None
        attempt = await _handshake_over(reader, writer, context, server_hostname, left, max_bytes, presented)
    finally:
        await _close(writer)
    return None if attempt.failure is Failure.HANDSHAKE_TIMEOUT else attempt


async def _connect(
    address: str, port: int, timeout: float, route: Route = DIRECT, dialogue_until: float | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """TCP to `address` (or to the route's proxy), then the route's CONNECT and STARTTLS, all within
    `timeout`, or the dialogue until `dialogue_until` (a `time.perf_counter()` value) when given; the
    milliseconds returned are the TCP connect's alone."""
    started = time.perf_counter()
    host, tcp_port = route.dial(address, port)
    via = f"proxy {route.proxy}: " if route.proxy is not None else ""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, tcp_port)
    except TimeoutError as error:
        # Our deadline, or the kernel's own ETIMEDOUT (also a TimeoutError).
        detail = _errno_text(error) if error.errno else f"no TCP answer within {timeout:g} s"
        raise _ConnectFailed(Failure.CONNECT_TIMEOUT, via + detail) from None
    except ConnectionRefusedError as error:
        raise _ConnectFailed(Failure.REFUSED, via + _errno_text(error)) from None
    except OSError as error:
        failure = Failure.UNREACHABLE if error.errno in _UNREACHABLE_ERRNOS else Failure.CONNECT_ERROR
        raise _ConnectFailed(failure, via + _errno_text(error)) from None
    connect_ms = (time.perf_counter() - started) * 1000.0
    if not route.direct:
        try:
            until = dialogue_until if dialogue_until is not None else started + timeout
            await before_tls(reader, writer, route, address, port, until)
        except StarttlsFailed as failed:
            writer.transport.abort()
            raise _ConnectFailed(failed.failure, failed.message, failed.proxy_status) from None
    return reader, writer, connect_ms


def _errno_text(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, "")
    text = error.strerror or str(error) or type(error).__name__
    return f"{name}: {text}" if name else text


async def _handshake_over(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    server_hostname: str | None,
    timeout: float,
    max_bytes: int,
    presented: bool,
) -> _Attempt:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
    transcript = Transcript()
    setattr(sslobj, _TRANSCRIPT, transcript)
    started = time.perf_counter()
    failure, error, alert, refused_by = Failure.NONE, "", "", Party.NONE
    verify_code: int | None = None
    verify_message = ""
    counter = _Counter()
    try:
        async with asyncio.timeout(timeout):
            await _drive(reader, writer, sslobj, incoming, outgoing, max_bytes, counter)
        transcript.handshake_done = True
        # A TLS 1.3 server judges the client's certificate only after the client's Finished, so its verdict
        # comes after the handshake; a server that asked for none has nothing to say then, and waiting for
        # one that sends no session ticket would add the whole read to every probe.
        if sslobj.version() == "TLSv1.3" and transcript.certificate_requested:
            left = started + timeout - time.perf_counter()
            await _read_after(reader, writer, sslobj, incoming, outgoing, transcript, min(POST_HANDSHAKE_READ_S, left))
    except TimeoutError:
        failure, error = Failure.HANDSHAKE_TIMEOUT, f"no complete handshake within {timeout:g} s"
    except ssl.SSLCertVerificationError as e:
        failure, refused_by = Failure.CERT_VERIFY, Party.CLIENT
        verify_code, verify_message = e.verify_code, e.verify_message or ""
        error = f"certificate verify failed: {verify_message} (code {verify_code})"
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, _PeerClosed) as e:
        failure, refused_by = Failure.CLOSED, Party.SERVER
        error = _closed_text(e, transcript)
    except ssl.SSLError as e:
        failure, alert, refused_by = _classify(e, transcript)
        error = str(e)
        if failure is Failure.NOT_TLS:
            error += _answer_text(counter.first)
    except _TooLarge:
        failure, refused_by = Failure.TOO_LARGE, Party.CLIENT
        error = f"the server sent more than {max_bytes} bytes without completing the handshake"
    except OSError as e:
        if e.errno in _RESET_ERRNOS:
            failure, error = Failure.RESET, f"the server reset the connection during the handshake: {_errno_text(e)}"
        else:
            failure, error = Failure.CLOSED, f"the connection broke during the handshake: {_errno_text(e)}"
        refused_by = Party.SERVER
    if _refused_client_without_certificate(failure, alert, transcript, presented):
        failure = Failure.CLIENT_CERT_REQUIRED
        names = f" (it accepts certificates from: {'; '.join(transcript.ca_names)})" if transcript.ca_names else ""
        error = f"the server requires a client certificate and none was presented{names}: {error}"
    duration_ms = (time.perf_counter() - started) * 1000.0
    done = transcript.handshake_done
    version, cipher = _negotiated(sslobj, transcript, done)
    attempt = _Attempt(
        failure=failure,
        error=error,
        alert=alert,
        refused_by=refused_by,
        verify_code=verify_code,
        verify_message=verify_message,
        verified=verify_code is None and (done or transcript.past_certificate),
        version=version,
        cipher=cipher,
        alpn=transcript.alpn or (sslobj.selected_alpn_protocol() or "" if done else ""),
        chain=_unverified_chain(sslobj),
        duration_ms=duration_ms,
        certificate_requested=transcript.certificate_requested,
        ca_names=transcript.ca_names,
        at_certificate=transcript.at_certificate,
    )
    if failure is Failure.NONE:
        _say_goodbye(sslobj)
    # Either the close_notify or the alert OpenSSL queued (bad certificate, ...) that tells the server why.
    _flush(outgoing, writer)
    return attempt


@dataclass
class _Counter:
    """Bytes received over one connection, against the cap, and the first of them."""

    received: int = 0
    first: bytes = b""


def _negotiated(sslobj: ssl.SSLObject, transcript: Transcript, done: bool) -> tuple[str, str]:
    """(version, cipher) the server chose: from its ServerHello, or from OpenSSL once the handshake is done."""
    hello = transcript.hello
    if hello is not None and not hello.retry:
        return _negotiated_by(hello)
    version = (sslobj.version() or "") if done else ""
    cipher = sslobj.cipher()
    return version, cipher[0] if cipher else ""


def _negotiated_by(hello: ServerHello) -> tuple[str, str]:
    return version_name(hello.version), _cipher_name(hello.cipher)


def _classify(error: ssl.SSLError, transcript: Transcript) -> tuple[Failure, str, Party]:
    """(failure, alert, who refused) from OpenSSL's reason code."""
    reason = error.reason or ""
    alert = _alert_description(reason)
    if not alert and not reason and transcript.fatal_alert is not None:
        # A reason Python's table does not name (it lacks no_application_protocol on 3.11): the alert itself.
        alert = alert_name(transcript.fatal_alert)
    if alert:
        failure = Failure.CLIENT_CERT_REQUIRED if alert == "certificate_required" else Failure.TLS_ALERT
        return failure, alert, Party.SERVER
    if error.library not in (None, "SSL"):
        return Failure.PROTOCOL_ERROR, "", Party.CLIENT
    if reason in _NOT_TLS and transcript.hello is None:
        return Failure.NOT_TLS, "", Party.CLIENT
    if reason in _NO_COMMON_VERSION:
        return Failure.NO_COMMON_VERSION, "", Party.CLIENT
    if reason in _NO_COMMON_CIPHER:
        return Failure.NO_COMMON_CIPHER, "", Party.CLIENT
    if reason in _WEAK_KEY_EXCHANGE:
        return Failure.WEAK_KEY_EXCHANGE, "", Party.CLIENT
    if reason == _EXCESSIVE_MESSAGE_SIZE and transcript.hello is not None and not transcript.saw(CERTIFICATE):
        return Failure.CERT_TOO_LARGE, "", Party.CLIENT
    return Failure.PROTOCOL_ERROR, "", Party.CLIENT


def _answer_text(first: bytes) -> str:
    """What the peer sent instead of TLS, for a person: its first line where it is text (an HTTP status line,
    an SSH or SMTP banner), else its first bytes in hex."""
    if not first:
        return ""
    line = first.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    if line and all(32 <= b < 127 for b in line):
        return f"; the server answered in plain text: '{line.decode('ascii')}'"
    return f"; the server's first bytes: {first[:16].hex(' ')}"


def _refused_client_without_certificate(failure: Failure, alert: str, transcript: Transcript, presented: bool) -> bool:
    """The server asked for a client certificate, got none, and then ended the handshake."""
    if presented or not transcript.certificate_requested:
        return False
    if failure is Failure.TLS_ALERT:
        return alert in _NO_CERTIFICATE_ALERTS
    # CLIENT_CERT_REQUIRED: TLS 1.3's certificate_required alert, already told apart; its error names the CAs too.
    return failure in (Failure.CLOSED, Failure.RESET, Failure.CLIENT_CERT_REQUIRED)


def _closed_text(error: BaseException, transcript: Transcript) -> str:
    when = "right after the handshake" if transcript.handshake_done else "during the handshake"
    # OpenSSL passes over a warning alert and says only that the connection ended; the warning may say why.
    warned = f", after a warning alert {alert_name(transcript.warning_alert)}" if transcript.warning_alert else ""
    if isinstance(error, ssl.SSLZeroReturnError):
        return f"the server closed the connection (close_notify) {when}{warned}"
    return f"the server closed the connection {when}{warned}"


async def _drive(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    sslobj: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    max_bytes: int,
    counter: _Counter,
) -> None:
    """Run the handshake to its end; the client's last flight stays in `outgoing` for the caller to send,
    so that it leaves with the close_notify in one write."""
    while True:
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        else:
            return
        _flush(outgoing, writer)
        await writer.drain()
        await _receive(reader, incoming, max_bytes, counter)


async def _receive(reader: asyncio.StreamReader, incoming: ssl.MemoryBIO, max_bytes: int, counter: _Counter) -> None:
    # Read at most one byte past the cap, so a flood never buffers more than the cap.
    data = await reader.read(min(_READ_CHUNK, max_bytes - counter.received + 1))
    if not data:
        raise _PeerClosed
    if len(counter.first) < _FIRST_BYTES:
        counter.first += data[: _FIRST_BYTES - len(counter.first)]
    counter.received += len(data)
    if counter.received > max_bytes:
        raise _TooLarge
    incoming.write(data)


async def _read_after(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    sslobj: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    transcript: Transcript,
    seconds: float,
) -> None:
    """After a TLS 1.3 handshake, read until the server's first record (a ticket, data or an alert), at most
    `seconds`. An alert raises as during the handshake. A close right after the handshake counts only
    where the server had asked for a client certificate (the caller decides); otherwise the handshake
    stands, and so does silence."""
    if seconds <= 0:
        return
    counter = _Counter()
    try:
        async with asyncio.timeout(seconds):
            while not transcript.after_handshake:
                try:
                    if sslobj.read(_READ_CHUNK):
                        return  # the server spoke first: the connection is up
                except ssl.SSLWantReadError:
                    pass
                if transcript.after_handshake:
                    return
                _flush(outgoing, writer)
                try:
                    await _receive(reader, incoming, _READ_CHUNK * 4, counter)
                except _TooLarge:
                    return
    except TimeoutError:
        return
    except (_PeerClosed, ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        if transcript.certificate_requested:
            raise
        return


def _say_goodbye(sslobj: ssl.SSLObject) -> None:
    """Queue a close_notify, so the server sees an orderly close rather than a reset."""
    # SSLWantReadError: OpenSSL would wait for the server's close_notify, which a probe does not need.
    with contextlib.suppress(ssl.SSLError, ValueError):
        sslobj.unwrap()


def _flush(outgoing: ssl.MemoryBIO, writer: asyncio.StreamWriter) -> None:
    if outgoing.pending and not writer.is_closing():
        writer.write(outgoing.read())


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close with a FIN when the peer lets us, reset otherwise; never leave the socket open."""
    if not writer.transport.get_write_buffer_size():
        # Nothing left to send: the transport closes the socket on the next loop iteration, no wait needed.
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    try:
        writer.close()
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.transport.abort()


def _alert_description(reason: str | None) -> str:
    """The RFC 8446 name of the alert a server sent, from OpenSSL's reason mnemonic; "" when none was."""
    if not reason:
        return ""
    if reason in _ALERT_REASONS_WITHOUT_PREFIX:
        return _ALERT_REASONS_WITHOUT_PREFIX[reason]
    for prefix in _ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason.removeprefix(prefix).lower()
    return ""


def _unverified_chain(sslobj: ssl.SSLObject) -> tuple[bytes, ...]:
    """The served chain as DER, in the order sent; public on Python 3.13+, `_sslobj` before."""
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(sslobj, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return ()
    try:
        certificates = getter()
    except (ValueError, ssl.SSLError):
        return ()
    return tuple(_der(c) for c in certificates or ())


def _der(certificate: Any) -> bytes:
    if isinstance(certificate, bytes | bytearray):
        return bytes(certificate)
    return certificate.public_bytes(_ssl.ENCODING_DER)
