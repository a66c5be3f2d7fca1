"""The probe engine: resolve a target, handshake with every address at once, judge each served chain.

One engine serves the agent's gRPC service, the one-shot CLI and scheduled reports. Verification time
is this host's wall clock (skewed clocks are what the fleet is meant to reveal) and, when the request
carries one, the coordinator's reference time.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from ..model import (
    AddressResult,
    AiaFetch,
    Failure,
    Handshake,
    ProbeRequest,
    ProbeResult,
    Resolution,
    RootCertificate,
    TrustStore,
)
from ..trust.certinfo import fingerprint
from ..trust.names import parse_expected_name
from ..trust.stores import LoadedStore, discover_stores
from ..trust.verify import judge_against_stores
from .aia import MISSING_ISSUER, fetch_and_judge
from .handshake import ContextCache, handshake
from .request_limits import RequestError, validate_request
from .resolve import Resolver, resolve
from .targets import TargetError, is_ip_literal, normalize_host

__all__ = ["ProbeEngine", "Resolver"]


class ProbeEngine:
    """Runs probes; holds the discovered trust stores and the client TLS contexts between probes.

    `max_concurrency` bounds the handshakes in flight across all probes of one event loop.
    `native_cafile` makes the native client trust that bundle instead of the system store (lab setups
    and agents configured that way); `resolver` replaces the host's resolver (a fixed table in tests).
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
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency {max_concurrency} is not accepted; at least 1")
        self._extra_stores = dict(extra_stores or {})
        self._environ = environ if environ is not None else os.environ
        self._max_concurrency = max_concurrency
        self._contexts = ContextCache(cafile=native_cafile)
        self._resolver: Resolver = resolver or resolve
        self._fetch_aia = fetch_aia
        self._stores: tuple[LoadedStore, ...] | None = None
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def trust_stores(self, *, include_roots: bool = False) -> tuple[TrustStore, ...]:
        stores = self._loaded_stores()
        if not include_roots:
            return tuple(store.info for store in stores)
        return tuple(replace(store.info, roots=_roots_of(store)) for store in stores)

    def refresh_stores(self) -> None:
        """Read the trust stores again, and rebuild native contexts, which loaded the old system store."""
        self._stores = discover_stores(self._environ, self._extra_stores)
        self._contexts.clear()

    def _loaded_stores(self) -> tuple[LoadedStore, ...]:
        if self._stores is None:
            self._stores = discover_stores(self._environ, self._extra_stores)
        return self._stores

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
        expected_name = _expected_name(options.sni or target.host)
        sni = expected_name if options.send_sni and not is_ip_literal(expected_name) else None
        stores = self._loaded_stores()
        if options.pin_address is not None:
            resolution = Resolution(addresses=(normalize_host(options.pin_address),), duration_ms=0.0)
        else:
            resolution = await self._resolver(target.host, target.port, options.resolve_timeout, options.max_addresses)
        addresses = await asyncio.gather(
            *(self._probe_address(address, request, sni, expected_name) for address in resolution.addresses)
        )
        agent_time = datetime.now(UTC)
        reference_time = (
            datetime.fromtimestamp(options.reference_time_ns / 1e9, UTC)
            if options.reference_time_ns is not None
            else None
        )
        judged = tuple(_judged(r, stores, expected_name, agent_time, reference_time) for r in addresses)
        if self._fetch_aia:
            judged = tuple(
                await asyncio.gather(*(self._with_aia(r, stores, expected_name, agent_time) for r in judged))
            )
        return ProbeResult(
            target=target,
            sni=sni,
            expected_name=expected_name,
            resolution=resolution,
            addresses=judged,
            trust_stores=tuple(store.info for store in stores),
            agent_received_ns=received_ns,
            agent_replied_ns=time.time_ns(),
            reference_time_ns=options.reference_time_ns,
            request_id=request.request_id,
        )

    async def _with_aia(
        self, result: AddressResult, stores: tuple[LoadedStore, ...], expected_name: str, at: datetime
    ) -> AddressResult:
        """Where the issuer is missing, fetch it from the AIA URL and say whether that completes the chain."""
        if not result.chain or result.native.verdict not in MISSING_ISSUER or not stores:
            return result
        try:
            fetched = await fetch_and_judge(result.chain, _native_store(stores), expected_name, at)
        except Exception as error:  # the probe's own result stands whatever the fetch does
            fetched = AiaFetch(url="", fetched=False, error=f"AIA fetch failed: {_describe(error)}")
        return replace(result, aia=fetched) if fetched is not None else result

    async def _probe_address(
        self, address: str, request: ProbeRequest, sni: str | None, expected_name: str
    ) -> AddressResult:
        options = request.options
        async with self._semaphore():
            try:
                return await handshake(
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
                )
            except Exception as error:  # one address must not sink the others
                return AddressResult(
                    address=address,
                    handshake=Handshake(failure=Failure.INTERNAL, error=_describe(error)),
                )


def _expected_name(name: str) -> str:
    try:
        normalized = normalize_host(name)
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


def _roots_of(store: LoadedStore) -> tuple[RootCertificate, ...]:
    return tuple(
        RootCertificate(sha256=fingerprint(cert.public_bytes(Encoding.DER)), subject=cert.subject.rfc4514_string())
        for cert in store.roots
    )


def _native_store(stores: tuple[LoadedStore, ...]) -> LoadedStore:
    """The store the host's OpenSSL default context uses: SSL_CERT_FILE when set, else the system bundle."""
    by_name = {s.info.name: s for s in stores}
    return by_name.get("ssl_cert_file") or by_name.get("system") or stores[0]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
