"""The probe engine: resolve a target, handshake with every address at once, judge each served chain.

One engine serves the agent's gRPC service, the one-shot CLI and scheduled reports. Verification time
is this host's wall clock (skewed clocks are what the fleet is meant to reveal) and, when the request
carries one, the coordinator's reference time.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..logs import get_logger
from ..model import (
    AddressResult,
    AiaFetch,
    Failure,
    Handshake,
    NativeVerdict,
    ProbeRequest,
    ProbeResult,
    Resolution,
    RootCertificate,
    TrustStore,
    Verdict,
)
from ..trust.certinfo import DER, fingerprint
from ..trust.names import parse_expected_name
from ..trust.runtimes import RuntimeOptions
from ..trust.stores import Discovery, LoadedStore, discover, forget_cached_reads, watch_signature
from ..trust.verify import judge_against_stores
from .handshake import ContextCache, handshake
from .request_limits import RequestError, validate_request
from .resolve import Resolver, resolve
from .starttls import LINE_PROTOCOLS, Route, route_for, words_after_starttls
from .targets import TargetError, is_ip_literal, normalize_host

if TYPE_CHECKING:  # the CLI's probes have neither; AIA fetching loads its code when an agent turns it on
    from .client_certs import ClientCertificate
    from .policy import ProbePolicy

__all__ = ["STORE_CHECK_INTERVAL_S", "ProbeEngine", "Resolver"]

log = get_logger("tlsfleet.agent")

# How long a second STARTTLS dialogue waits for the server's words before TLS, on a port that answered the
# ClientHello with something not TLS: a server says why at once, or not at all.
_LISTEN_BEFORE_TLS_S = 1.0
STORE_CHECK_INTERVAL_S = 1.0  # how often, at most, a probe or a describe checks whether a store changed


class ProbeEngine:
    """Runs probes; holds the discovered trust stores and the client TLS contexts between probes.

    `max_concurrency` bounds the handshakes in flight across all probes of one event loop.
    `native_cafile` makes the native client trust that bundle instead of the system store (lab setups
    and agents configured that way); `resolver` replaces the host's resolver (a fixed table in tests).
    `runtimes` says which runtimes' stores count (named with --runtime, and whether to search the host).
    `policy` (agent.probe.policy) is checked on every address before it is dialled, AIA fetches included;
    None checks nothing (the machine the CLI runs on).

    Stores are read on first use and again when they change: before a probe or a describe, at most every
    `store_check_interval` seconds, a stat of everything discovery read (files, directories and their
    entries, interpreters, JREs) tells whether to read them again; `refresh_stores` re-reads everything
    now (SIGHUP). A change is logged (`trust_stores_changed`) and the native contexts are rebuilt.
    """

    def __init__(
        self,
        *,
        extra_stores: Mapping[str, Path] | None = None,
        environ: Mapping[str, str] | None = None,
        max_concurrency: int = 256,
        native_cafile: str | None = None,
        resolver: Resolver | None = None,
        fetch_aia: bool = False,
        runtimes: RuntimeOptions | None = None,
        store_check_interval: float = STORE_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        client_certs: Mapping[str, ClientCertificate] | None = None,
        policy: ProbePolicy | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency {max_concurrency} is not accepted; at least 1")
        self._extra_stores = dict(extra_stores or {})
        self._environ = environ if environ is not None else os.environ
        self._max_concurrency = max_concurrency
        self._contexts = ContextCache(cafile=native_cafile)
        self._client_certs = dict(client_certs or {})
        self._resolver: Resolver = resolver or resolve
        self._fetch_aia = fetch_aia
        self.policy = policy  # None: every address may be probed (the machine the CLI runs on)
        self._runtime_options = runtimes or RuntimeOptions()
        self._store_check_interval = store_check_interval
        self._clock = clock
        self._stores: tuple[LoadedStore, ...] | None = None
        self._discovery: Discovery | None = None
        self._signature: tuple[object, ...] = ()
        self._checked_at = 0.0
        self._store_lock = threading.Lock()  # discovery may run in a worker thread (SIGHUP) and in the loop
        self._contexts_stale = False
        self._listed: tuple[tuple[LoadedStore, ...], tuple[TrustStore, ...]] | None = None  # trust_stores' roots
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def trust_stores(self, *, include_roots: bool = False) -> tuple[TrustStore, ...]:
        stores = self._loaded_stores()
        if not include_roots:
            return tuple(store.info for store in stores)
        listed = self._listed
        if listed is None or listed[0] is not stores:
            # Some 20 ms for a host's thousand-odd roots, at every Describe; the same until the stores change.
            listed = self._listed = (stores, tuple(replace(store.info, roots=_roots_of(store)) for store in stores))
        return listed[1]

    def runtimes(self) -> tuple[tuple[str, str], ...]:
        """(runtime, where and why) of every runtime found, for HostFacts.runtimes. Safe from any thread."""
        discovery = self._discovery
        if discovery is None:
            self._loaded_stores()
            discovery = self._discovery
        assert discovery is not None
        return tuple(r.fact() for r in discovery.runtimes)

    def refresh_stores(self, *, reason: str = "requested") -> None:
        """Read every trust store and find the runtimes again now, whatever the stat check says; native
        contexts, which loaded the old system store, are rebuilt before the next handshake. Blocking (it
        may run interpreters): async callers run it in a worker thread."""
        with self._store_lock:
            forget_cached_reads()
            self._reload(reason, always_log=True)

    def _loaded_stores(self) -> tuple[LoadedStore, ...]:
        if self._stores is None:
            with self._store_lock:
                if self._stores is None:
                    self._reload("first read")
        elif self._check_due() and self._store_lock.acquire(blocking=False):
            # Never waits: while a re-read runs elsewhere (SIGHUP), probes go on with the stores they have.
            try:
                if self._check_due():
                    assert self._discovery is not None
                    self._checked_at = self._clock()
                    if watch_signature(self._discovery.watches) != self._signature:
                        self._reload("changed on disk")
            finally:
                self._store_lock.release()
        if self._contexts_stale:  # on the thread that runs handshakes: a context is never cleared under one
            self._contexts_stale = False
            self._contexts.clear()
        assert self._stores is not None
        return self._stores

    def _check_due(self) -> bool:
        return self._clock() - self._checked_at >= self._store_check_interval

    def _reload(self, reason: str, *, always_log: bool = False) -> None:
        """Discover again (the caller holds the lock); log what changed, unless this is the first read."""
        before = self._discovery
        found = discover(self._environ, self._extra_stores, self._runtime_options)
        self._discovery = found
        self._signature = watch_signature(found.watches)
        self._checked_at = self._clock()
        self._stores = found.stores
        if before is None:
            return
        self._contexts_stale = True
        _log_change(before, found, reason, always=always_log)

    def _semaphore(self) -> asyncio.Semaphore:
        # A Semaphore belongs to one event loop; the CLI may run several loops one after another.
        loop = asyncio.get_running_loop()
        semaphore = self._slots.get(loop)
        if semaphore is None:
            semaphore = self._slots[loop] = asyncio.Semaphore(self._max_concurrency)
        return semaphore

    async def probe(self, request: ProbeRequest) -> ProbeResult:
        """Probe every address of the target. Raises RequestError for a request out of bounds; any
        failure after that is part of the result."""
        received_ns = time.time_ns()
        validate_request(request)
        target, options = request.target, request.options
        # The probe's own budget, which fit_to_deadline keeps inside the caller's deadline.
        deadline = time.monotonic() + options.resolve_timeout + options.connect_timeout + options.handshake_timeout
        self._client_cert(options.client_cert)  # an unknown name is refused before anything runs
        expected_name = _expected_name(options.sni or target.host)
        sni = expected_name if options.send_sni and not is_ip_literal(expected_name) else None
        stores = self._loaded_stores()
        route = route_for(request, self._environ)
        if route.proxy is not None:  # the proxy resolves the target's name; the agent connects to the proxy
            resolution = Resolution(addresses=(route.proxy.host,), duration_ms=0.0)
        elif options.pin_address is not None:
            resolution = Resolution(addresses=(normalize_host(options.pin_address),), duration_ms=0.0)
        else:
            resolution = await self._resolver(target.host, target.port, options.resolve_timeout, options.max_addresses)
        probes = [
            self._probe_address(address, request, sni, expected_name, route, deadline)
            for address in resolution.addresses
        ]
        # One address, the usual case, needs no task of its own.
        addresses = [await probes[0]] if len(probes) == 1 else await asyncio.gather(*probes)
        agent_time = datetime.now(UTC)
        reference_time = (
            datetime.fromtimestamp(options.reference_time_ns / 1e9, UTC)
            if options.reference_time_ns is not None
            else None
        )
        judged = tuple(_judged(r, stores, expected_name, agent_time, reference_time) for r in addresses)
        if self._fetch_aia:
            judged = tuple(
                await asyncio.gather(*(self._with_aia(r, stores, expected_name, agent_time, deadline) for r in judged))
            )
        return ProbeResult(
            target=target,
            sni=sni,
            expected_name=expected_name,
            resolution=resolution,
            addresses=judged,
            trust_stores=_store_infos(stores),
            agent_received_ns=received_ns,
            agent_replied_ns=time.time_ns(),
            reference_time_ns=options.reference_time_ns,
            request_id=request.request_id,
            starttls=options.starttls,
            proxy=route.proxy.label if route.proxy is not None else "",
        )

    async def _with_aia(
        self,
        result: AddressResult,
        stores: tuple[LoadedStore, ...],
        expected_name: str,
        at: datetime,
        deadline: float,
    ) -> AddressResult:
        """Where the issuer is missing, fetch it from the AIA URL and say whether that completes the chain:
        within the probe's deadline, to an address the policy allows."""
        from .aia import MISSING_ISSUER, fetch_and_judge

        if not result.chain or result.native.verdict not in MISSING_ISSUER or not stores:
            return result
        try:
            fetched = await fetch_and_judge(
                result.chain,
                _native_store(stores),
                expected_name,
                at,
                resolver=self._resolver,
                policy=self.policy,
                seconds_left=deadline - time.monotonic(),
            )
        except Exception as error:  # the probe's own result stands whatever the fetch does
            fetched = AiaFetch(url="", fetched=False, error=f"AIA fetch failed: {_describe(error)}")
        return replace(result, aia=fetched) if fetched is not None else result

    def client_cert_names(self) -> tuple[str, ...]:
        """The names of the client certificates probes may ask for (HostFacts.client_certs)."""
        return tuple(sorted(self._client_certs))

    def _client_cert(self, name: str | None) -> ClientCertificate | None:
        if name is None:
            return None
        certificate = self._client_certs.get(name)
        if certificate is None:
            shown = name if len(name) <= 64 else f"{name[:64]}..."
            configured = ", ".join(self.client_cert_names()) or "none (agent option --client-cert NAME=CERT,KEY)"
            raise RequestError(
                f"client certificate {shown!r} is not configured on this agent; configured: {configured}"
            )
        return certificate

    async def _probe_address(
        self, address: str, request: ProbeRequest, sni: str | None, expected_name: str, route: Route, deadline: float
    ) -> AddressResult:
        options = request.options
        # Checked on the address about to be dialled (through a proxy: the target, when it is an address).
        checked = address if route.proxy is None else route.connect_host
        if self.policy is not None and (route.proxy is None or is_ip_literal(checked)):
            decision = self.policy.decide(checked, request.target.port, request.target.host)
            if not decision.allowed:
                log.info("probe_denied", address=checked, port=request.target.port, rule=decision.rule)
                return AddressResult(
                    address=address, connect_failure=Failure.DENIED_BY_POLICY, connect_error=decision.message
                )
        client_cert = self._client_cert(options.client_cert)
        async with self._semaphore():
            try:
                result = await handshake(
                    address,
                    request.target.port,
                    server_hostname_for_sni=sni,
                    expected_name=expected_name,
                    alpn=options.alpn,
                    min_version=options.min_version,
                    max_version=options.max_version,
                    connect_timeout=options.connect_timeout,
                    handshake_timeout=options.handshake_timeout,
                    context_cache=self._contexts,
                    client_cert=client_cert,
                    route=route,
                    # What resolution left of the probe's budget (all of it for a pinned address).
                    spare_s=deadline - time.monotonic() - options.connect_timeout - options.handshake_timeout,
                )
            except Exception as error:  # one address must not sink the others
                return AddressResult(
                    address=address,
                    handshake=Handshake(failure=Failure.INTERNAL, error=_describe(error)),
                )
            if result.handshake.failure is Failure.NOT_TLS and route.starttls in LINE_PROTOCOLS:
                return await _heard_before_tls(result, request.target.port, route, deadline)
            return result


async def _heard_before_tls(result: AddressResult, port: int, route: Route, deadline: float) -> AddressResult:
    """A ClientHello after STARTTLS answered by something not TLS: listen once more, on a new connection, for
    what the server says after accepting STARTTLS. A server whose TLS could not start says so in plain text
    (Dovecot's `* BYE [UNAVAILABLE] TLS initialization failed.`), and that refusal is the result; a port
    that said nothing before the ClientHello keeps its not-TLS result."""
    seconds = min(_LISTEN_BEFORE_TLS_S, deadline - time.monotonic())
    spoke = await words_after_starttls(result.address, port, route, seconds) if seconds > 0 else None
    if spoke is None:
        return result
    return AddressResult(
        address=result.address,
        connect_ms=result.connect_ms,
        connect_failure=spoke.failure,
        connect_error=spoke.message,
        native=NativeVerdict(Verdict.NO_CHAIN, hostname_checked=result.native.hostname_checked),
    )


_last_infos: tuple[tuple[LoadedStore, ...], tuple[TrustStore, ...]] = ((), ())


def _store_infos(stores: tuple[LoadedStore, ...]) -> tuple[TrustStore, ...]:
    """The stores' records, as one tuple for as long as the stores stay the same: the wire converts a tuple it
    has seen before only once."""
    global _last_infos
    last = _last_infos
    if last[0] is not stores:
        last = _last_infos = (stores, tuple(store.info for store in stores))
    return last[1]


@lru_cache(maxsize=1024)
def _expected_name(name: str) -> str:
    """The normalized name a probe checks; a refused name raises (and is not cached)."""
    try:
        normalized = normalize_host(name)
        if is_ip_literal(normalized):
            # An IPv6 zone ("fe80::1%eth0") says which link to connect on; the certificate names the address alone,
            # as curl checks it (OpenSSL refuses a zone in the name it is given to check).
            normalized = normalized.partition("%")[0]
        parse_expected_name(normalized)
    except (TargetError, ValueError) as error:
        raise RequestError(f"cannot probe for the name {name!r}: {error}") from None
    return normalized


def _judged(
    result: AddressResult,
    stores: tuple[LoadedStore, ...],
    expected_name: str,
    agent_time: datetime,
    reference_time: datetime | None,
) -> AddressResult:
    """The served chain judged by OpenSSL against every store: one StoreVerdict per distinct root set, in
    discovery order; the first store of a set keeps `store`, the others with the identical roots are in
    its `same_as` (ProbeResult.trust_stores still lists every store; `model.per_store` expands them)."""
    if not result.chain:
        return result
    try:
        verdicts = judge_against_stores(result.chain, stores, expected_name, agent_time, reference_time)
    except Exception as error:  # a judging bug must not hide what the handshake saw
        was = result.handshake.failure
        return replace(
            result,
            handshake=replace(
                result.handshake,
                failure=Failure.INTERNAL,
                error=f"judging the served chain failed: {_describe(error)} (handshake outcome: {was})",
            ),
        )
    return replace(result, stores=verdicts)


def _log_change(before: Discovery, after: Discovery, reason: str, *, always: bool) -> None:
    """One JSON line: which stores changed (root counts and fingerprints before and after), which came or went."""
    old = {s.info.name: s.info for s in before.stores}
    new = {s.info.name: s.info for s in after.stores}
    changed = [
        {
            "store": name,
            "path": new[name].path,
            "roots_before": old[name].root_count,
            "roots_after": new[name].root_count,
            "fingerprint_before": old[name].fingerprint[:16],
            "fingerprint_after": new[name].fingerprint[:16],
            **({"error": new[name].error} if new[name].error else {}),
        }
        for name in new
        if name in old and _identity(old[name]) != _identity(new[name])
    ]
    added = [{"store": n, "path": new[n].path, "roots_after": new[n].root_count} for n in new if n not in old]
    removed = [{"store": n, "path": old[n].path, "roots_before": old[n].root_count} for n in old if n not in new]
    runtimes_before = [r.fact() for r in before.runtimes]
    runtimes_after = [r.fact() for r in after.runtimes]
    runtimes = {} if runtimes_before == runtimes_after else {"runtimes": [list(f) for f in runtimes_after]}
    if changed or added or removed or runtimes:
        log.info("trust_stores_changed", reason=reason, changed=changed, added=added, removed=removed, **runtimes)
    elif always:
        log.info("trust_stores_unchanged", reason=reason, stores=len(new))


def _identity(store: TrustStore) -> tuple[str, str, str]:
    return store.fingerprint, store.error, store.path


def _roots_of(store: LoadedStore) -> tuple[RootCertificate, ...]:
    return tuple(
        RootCertificate(sha256=fingerprint(cert.public_bytes(DER)), subject=cert.subject.rfc4514_string())
        for cert in store.roots
    )


def _native_store(stores: tuple[LoadedStore, ...]) -> LoadedStore:
    """The store the host's OpenSSL default context uses: SSL_CERT_FILE when set, else the system bundle."""
    by_name = {s.info.name: s for s in stores}
    return by_name.get("ssl_cert_file") or by_name.get("system") or stores[0]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
