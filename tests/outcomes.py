"""Builders for recorded probe outcomes, for diagnosis tests that need no network.

Chains come from the lab PKI (real certificates); everything else is what an agent would have sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from tlsfleet.agent.model import (
    AddressResult,
    Failure,
    Handshake,
    NativeVerdict,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    StoreVerdict,
    Target,
    TrustStore,
    Verdict,
)
from tlsfleet.coordinator.observation import Observation, Variant
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageState

NOW_NS = time.time_ns()
_OPENSSL_CODES = {
    Verdict.OK: 0,
    Verdict.NOT_YET_VALID: 9,
    Verdict.EXPIRED: 10,
    Verdict.SELF_SIGNED: 18,
    Verdict.UNTRUSTED_ROOT: 19,
    Verdict.UNKNOWN_ISSUER: 20,
    Verdict.HOSTNAME_MISMATCH: 62,
    Verdict.IP_MISMATCH: 64,
}


def request(
    host: str = "api.example.test", port: int = 443, *, sni: str | None = None, send_sni: bool = True
) -> ProbeRequest:
    return ProbeRequest(
        target=Target(host, port), options=ProbeOptions(sni=sni, send_sni=send_sni, reference_time_ns=NOW_NS)
    )


def address(
    ip: str,
    chain: Sequence[bytes] = (),
    *,
    native: Verdict = Verdict.OK,
    stores: Mapping[str, Verdict | tuple[Verdict, Verdict]] | None = None,
    failure: Failure | None = None,
    connect_failure: Failure = Failure.NONE,
    tls_version: str = "TLSv1.3",
    alert: str = "",
    verified_path: Sequence[str] = (),
) -> AddressResult:
    """One address's result. `stores` maps a store name to its verdict (or (at agent time, at reference time));
    by default a single 'system' store that agrees with the native verdict."""
    if connect_failure is not Failure.NONE:
        return AddressResult(address=ip, connect_failure=connect_failure, connect_error=str(connect_failure))
    store_map = stores if stores is not None else {"system": native}
    verdicts = []
    for name, value in store_map.items():
        at_agent, at_reference = value if isinstance(value, tuple) else (value, value)
        path = tuple(verified_path) if at_agent is Verdict.OK else ()
        verdicts.append(
            StoreVerdict(store=name, at_agent_time=at_agent, at_reference_time=at_reference, verified_path=path)
        )
    if failure is None:
        failure = Failure.NONE if native is Verdict.OK else Failure.CERT_VERIFY
    if not chain:
        native = Verdict.NO_CHAIN
    return AddressResult(
        address=ip,
        connect_ms=0.5,
        handshake=Handshake(
            failure=failure,
            tls_version=tls_version if failure in (Failure.NONE, Failure.CERT_VERIFY) else "",
            cipher="TLS_AES_128_GCM_SHA256",
            alert=alert,
        ),
        chain=tuple(chain),
        native=NativeVerdict(native, verify_code=_OPENSSL_CODES.get(native, 0)),
        stores=tuple(verdicts),
    )


def outcome(
    agent: str,
    addresses: Sequence[AddressResult],
    *,
    req: ProbeRequest | None = None,
    offset_ms: float = 0.0,
    error_ms: float = 1.0,
    labels: Sequence[tuple[str, str]] = (),
    resolved: Sequence[str] | None = None,
    resolution_failure: Failure = Failure.NONE,
    trust_stores: Sequence[TrustStore] = (),
) -> ProbeOutcome:
    req = req or request()
    addresses = tuple(addresses)
    resolution = Resolution(
        addresses=tuple(resolved) if resolved is not None else tuple(a.address for a in addresses),
        duration_ms=1.0,
        failure=resolution_failure,
        error="Name or service not known" if resolution_failure is not Failure.NONE else "",
    )
    sni = None if not req.options.send_sni else (req.options.sni or req.target.host)
    result = ProbeResult(
        target=req.target,
        sni=sni,
        expected_name=req.options.sni or req.target.host,
        resolution=resolution,
        addresses=addresses if resolution_failure is Failure.NONE else (),
        trust_stores=tuple(trust_stores),
        agent_received_ns=NOW_NS + int(offset_ms * 1e6),
        agent_replied_ns=NOW_NS + int(offset_ms * 1e6),
        reference_time_ns=req.options.reference_time_ns,
    )
    return ProbeOutcome(
        vantage=VantageInfo(name=agent, address=f"{agent}.test:7443", labels=tuple(labels)),
        state=VantageState.OK,
        result=result,
        agent_version="0.1.0",
        clock=ClockEstimate(offset_ms=offset_ms, error_ms=error_ms),
        duration_ms=5.0,
    )


def silent(agent: str, state: VantageState = VantageState.TIMEOUT) -> ProbeOutcome:
    return ProbeOutcome(
        vantage=VantageInfo(name=agent, address=f"{agent}.test:7443"), state=state, error=f"{state} in test"
    )


def observe(*outcomes: ProbeOutcome, req: ProbeRequest | None = None, variants: Sequence[Variant] = ()) -> Observation:
    return Observation(request=req or request(), outcomes=tuple(outcomes), variants=tuple(variants))
