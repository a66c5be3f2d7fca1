"""One TCP connect and one TLS handshake to one address: the native verdict and the served chain.

The handshake is driven by hand through `ssl.MemoryBIO` over a plain asyncio stream. Unlike
`asyncio`'s own TLS transport, that keeps the `SSLObject` after `SSLCertVerificationError`, so the chain
the server sent is still there (`get_unverified_chain()`), whatever the verdict.

What this module found about the state left after a verification failure (CPython 3.11, OpenSSL 3.0):
`version()` is None (CPython answers only once the handshake has finished), `cipher()` is known for
TLS 1.3 (the ServerHello was processed) but None for TLS 1.2. So after a verification failure a second
handshake with CERT_NONE (same SNI, ALPN and version bounds) learns the version, cipher and ALPN. It is
a second connection: behind a load balancer it may reach another backend, which is why only those three
fields are taken from it and never the chain or the verdict.

Sessions are never resumed (no `session=` is ever passed, and Python's client contexts keep no session
cache): a resumed handshake carries no Certificate message, so there would be no chain to report.
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import errno
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..model import AddressResult, Failure, Handshake, NativeVerdict, TlsVersion, Verdict
from ..trust.verify import verdict_from_openssl_code
from .targets import is_ip_literal

__all__ = ["MAX_HANDSHAKE_BYTES", "ContextCache", "handshake"]

MAX_HANDSHAKE_BYTES = 1024 * 1024
CONTEXT_CACHE_SIZE = 64
_READ_CHUNK = 64 * 1024
_CLOSE_TIMEOUT = 1.0
_MIN_SECOND_ATTEMPT = 0.05  # seconds; below this a second handshake cannot finish anyway

_SSL_VERSIONS: dict[TlsVersion, ssl.TLSVersion] = {
    TlsVersion.TLS1_0: ssl.TLSVersion.TLSv1,
    TlsVersion.TLS1_1: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLS1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS1_3: ssl.TLSVersion.TLSv1_3,
}
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)
# OpenSSL names a received alert SSL_R_<prefix>_<description>; a few descriptions carry no "ALERT_".
_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")
_ALERT_REASONS_WITHOUT_PREFIX = {
    "TLSV1_UNRECOGNIZED_NAME": "unrecognized_name",
    "TLSV1_UNSUPPORTED_EXTENSION": "unsupported_extension",
    "TLSV1_CERTIFICATE_UNOBTAINABLE": "certificate_unobtainable",
    "TLSV1_BAD_CERTIFICATE_STATUS_RESPONSE": "bad_certificate_status_response",
    "TLSV1_BAD_CERTIFICATE_HASH_VALUE": "bad_certificate_hash_value",
}


def _tls_version(value: TlsVersion | str | None) -> ssl.TLSVersion | None:
    if value is None or value == "":
        return None
    try:
        return _SSL_VERSIONS[TlsVersion(value)]
    except ValueError:
        accepted = ", ".join(v.value for v in TlsVersion)
        raise ValueError(f"TLS version {value!r} is not known; accepted: {accepted}") from None


@dataclass(frozen=True)
class _ContextKey:
    verify: bool
    check_hostname: bool
    alpn: tuple[str, ...]
    min_version: ssl.TLSVersion | None
    max_version: ssl.TLSVersion | None


class ContextCache:
    """Client `SSLContext`s by (verification, hostname check, ALPN, version bounds); LRU, bounded.

    A context is expensive (it parses the whole trust store) and immutable once built here, so probes
    share them. `cafile` replaces the system store with one bundle, as `ssl.create_default_context(cafile=)`
    does; it exists for the lab and for agents configured with an explicit native bundle. Without it,
    contexts load the system store, honouring SSL_CERT_FILE/SSL_CERT_DIR as OpenSSL reads them when the
    context is built: `clear()` after the store changed.
    """

    def __init__(self, *, cafile: str | None = None, maxsize: int = CONTEXT_CACHE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError(f"context cache size {maxsize} is not accepted; at least 1")
        self._cafile = cafile
        self._maxsize = maxsize
        self._contexts: OrderedDict[_ContextKey, ssl.SSLContext] = OrderedDict()

    @property
    def cafile(self) -> str | None:
        return self._cafile

    def __len__(self) -> int:
        return len(self._contexts)

    def clear(self) -> None:
        self._contexts.clear()

    def get(
        self,
        *,
        verify: bool,
        check_hostname: bool,
        alpn: tuple[str, ...] = (),
        min_version: TlsVersion | str | None = None,
        max_version: TlsVersion | str | None = None,
    ) -> ssl.SSLContext:
        key = _ContextKey(
            verify=verify,
            check_hostname=check_hostname and verify,
            alpn=tuple(alpn),
            min_version=_tls_version(min_version),
            max_version=_tls_version(max_version),
        )
        context = self._contexts.get(key)
        if context is not None:
            self._contexts.move_to_end(key)
            return context
        context = self._build(key)
        self._contexts[key] = context
        if len(self._contexts) > self._maxsize:
            self._contexts.popitem(last=False)
        return context

    def _build(self, key: _ContextKey) -> ssl.SSLContext:
        if self._cafile is not None:
            context = ssl.create_default_context(cafile=self._cafile)
        else:
            context = ssl.create_default_context()
        context.check_hostname = key.check_hostname
        if not key.verify:
            context.verify_mode = ssl.CERT_NONE
        if key.alpn:
            context.set_alpn_protocols(list(key.alpn))
        if key.min_version is not None:
            context.minimum_version = key.min_version
        if key.max_version is not None:
            context.maximum_version = key.max_version
        return context


@dataclass(frozen=True)
class _Attempt:
    """What one handshake over one connection produced."""

    failure: Failure = Failure.NONE
    error: str = ""
    alert: str = ""
    verify_code: int | None = None  # set when the native client rejected the chain
    verify_message: str = ""
    version: str = ""
    cipher: str = ""
    alpn: str = ""
    chain: tuple[bytes, ...] = ()
    duration_ms: float = 0.0


class _ConnectFailed(Exception):
    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


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
) -> AddressResult:
    """Connect to `address`:`port` and run one CERT_REQUIRED handshake; failures are results, not raises.

    With `server_hostname_for_sni` the name is sent in SNI and OpenSSL checks it (it must equal
    `expected_name`). Without it, an IP-literal `expected_name` is still checked (Python sends no SNI for
    IP literals anyway); a DNS name cannot be checked by Python without being sent, so the native
    verdict then says `hostname_checked=False` and only the offline verification checks the name.
    The returned AddressResult has no store verdicts; the caller adds them.
    """
    server_hostname, check_hostname = _hostname_plan(server_hostname_for_sni, expected_name)
    context = context_cache.get(
        verify=True, check_hostname=check_hostname, alpn=alpn, min_version=min_version, max_version=max_version
    )
    # The second handshake (after a verification failure) must fit in the same connect + handshake budget,
    # so the caller's deadline arithmetic holds.
    deadline = time.perf_counter() + connect_timeout + handshake_timeout
    try:
        reader, writer, connect_ms = await _connect(address, port, connect_timeout)
    except _ConnectFailed as failed:
        return AddressResult(
            address=address,
            connect_failure=failed.failure,
            connect_error=failed.message,
            native=NativeVerdict(Verdict.NO_CHAIN, hostname_checked=check_hostname),
        )
    try:
        attempt = await _handshake_over(
            reader, writer, context, server_hostname, handshake_timeout, max_handshake_bytes
        )
    finally:
        await _close(writer)
    if attempt.failure is Failure.CERT_VERIFY and not attempt.version:
        attempt = await _complete_parameters(
            attempt,
            address,
            port,
            context_cache.get(
                verify=False, check_hostname=False, alpn=alpn, min_version=min_version, max_version=max_version
            ),
            server_hostname,
            deadline,
            max_handshake_bytes,
        )
    return AddressResult(
        address=address,
        connect_ms=connect_ms,
        handshake=Handshake(
            failure=attempt.failure,
            error=attempt.error,
            tls_version=attempt.version,
            cipher=attempt.cipher,
            alpn=attempt.alpn,
            duration_ms=attempt.duration_ms,
            alert=attempt.alert,
        ),
        chain=attempt.chain,
        native=_native_verdict(attempt, check_hostname),
    )


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
    if attempt.failure is Failure.NONE:
        return NativeVerdict(Verdict.OK, 0, "ok", hostname_checked=hostname_checked)
    if attempt.chain:
        # A chain arrived but the handshake broke off for another reason; the native verdict is unknown.
        return NativeVerdict(
            Verdict.OTHER,
            0,
            f"the handshake failed ({attempt.failure}) before the native client finished",
            hostname_checked=hostname_checked,
        )
    return NativeVerdict(Verdict.NO_CHAIN, hostname_checked=hostname_checked)


async def _connect(address: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
    except TimeoutError as error:
        # Our deadline, or the kernel's own ETIMEDOUT (also a TimeoutError).
        detail = _errno_text(error) if error.errno else f"no TCP answer within {timeout:g} s"
        raise _ConnectFailed(Failure.CONNECT_TIMEOUT, detail) from None
    except ConnectionRefusedError as error:
        raise _ConnectFailed(Failure.REFUSED, _errno_text(error)) from None
    except OSError as error:
        failure = Failure.UNREACHABLE if error.errno in _UNREACHABLE_ERRNOS else Failure.CONNECT_ERROR
        raise _ConnectFailed(failure, _errno_text(error)) from None
    return reader, writer, (time.perf_counter() - started) * 1000.0


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
) -> _Attempt:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
    started = time.perf_counter()
    failure, error, alert = Failure.NONE, "", ""
    verify_code: int | None = None
    verify_message = ""
    try:
        async with asyncio.timeout(timeout):
            await _drive(reader, writer, sslobj, incoming, outgoing, max_bytes)
    except TimeoutError:
        failure, error = Failure.HANDSHAKE_TIMEOUT, f"no complete handshake within {timeout:g} s"
    except ssl.SSLCertVerificationError as e:
        failure, verify_code, verify_message = Failure.CERT_VERIFY, e.verify_code, e.verify_message or ""
        error = f"certificate verify failed: {verify_message} (code {verify_code})"
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
        failure, error = Failure.CLOSED, f"the server ended the connection during the handshake: {e}"
    except ssl.SSLError as e:
        alert = _alert_description(e.reason)
        failure = Failure.TLS_ALERT if alert else Failure.PROTOCOL_ERROR
        error = str(e)
    except _PeerClosed:
        failure, error = Failure.CLOSED, "the server closed the connection during the handshake"
    except _TooLarge:
        failure = Failure.TOO_LARGE
        error = f"the server sent more than {max_bytes} bytes without completing the handshake"
    except OSError as e:
        failure, error = Failure.CLOSED, f"the connection broke during the handshake: {_errno_text(e)}"
    duration_ms = (time.perf_counter() - started) * 1000.0
    done = failure is Failure.NONE
    attempt = _Attempt(
        failure=failure,
        error=error,
        alert=alert,
        verify_code=verify_code,
        verify_message=verify_message,
        version=(sslobj.version() or "") if done else "",
        cipher=_cipher_name(sslobj),
        alpn=sslobj.selected_alpn_protocol() or "",
        chain=_unverified_chain(sslobj),
        duration_ms=duration_ms,
    )
    if done:
        _say_goodbye(sslobj)
    # Either the close_notify or the alert OpenSSL queued (bad certificate, ...) that tells the server why.
    _flush(outgoing, writer)
    return attempt


async def _drive(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    sslobj: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    max_bytes: int,
) -> None:
    received = 0
    while True:
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        else:
            _flush(outgoing, writer)
            return
        _flush(outgoing, writer)
        await writer.drain()
        # Read at most one byte past the cap, so a flood never buffers more than the cap.
        data = await reader.read(min(_READ_CHUNK, max_bytes - received + 1))
        if not data:
            raise _PeerClosed
        received += len(data)
        if received > max_bytes:
            raise _TooLarge
        incoming.write(data)


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
    try:
        writer.close()
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.transport.abort()


async def _complete_parameters(
    attempt: _Attempt,
    address: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    deadline: float,
    max_bytes: int,
) -> _Attempt:
    """Version, cipher and ALPN from a CERT_NONE handshake, for an attempt that lost them to the verdict.

    Both phases share what is left until `deadline` (a `time.perf_counter()` value)."""
    left = deadline - time.perf_counter()
    if left < _MIN_SECOND_ATTEMPT:
        return _with_parameters(attempt, None, "no time left for a second handshake")
    try:
        reader, writer, _ = await _connect(address, port, left)
    except _ConnectFailed as failed:
        return _with_parameters(attempt, None, f"second connection failed: {failed.message}")
    try:
        left = max(deadline - time.perf_counter(), _MIN_SECOND_ATTEMPT)
        second = await _handshake_over(reader, writer, context, server_hostname, left, max_bytes)
    finally:
        await _close(writer)
    if second.failure is not Failure.NONE:
        return _with_parameters(attempt, None, f"second handshake failed: {second.error}")
    return _with_parameters(attempt, second, "")


def _with_parameters(attempt: _Attempt, second: _Attempt | None, note: str) -> _Attempt:
    error = f"{attempt.error}; version unknown ({note})" if note else attempt.error
    return _Attempt(
        failure=attempt.failure,
        error=error,
        alert=attempt.alert,
        verify_code=attempt.verify_code,
        verify_message=attempt.verify_message,
        version=second.version if second else "",
        cipher=attempt.cipher or (second.cipher if second else ""),
        alpn=attempt.alpn or (second.alpn if second else ""),
        chain=attempt.chain,
        duration_ms=attempt.duration_ms,
    )


def _cipher_name(sslobj: ssl.SSLObject) -> str:
    cipher = sslobj.cipher()
    return cipher[0] if cipher else ""


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
