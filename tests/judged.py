"""Recorded outcomes whose verdicts OpenSSL itself gave: chains judged offline by the agent's own verifier
(`agent.trust.verify`, X509_verify_cert through ctypes) against stores built in memory, as an agent on a
host holding those roots would report them. No network, no agent process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.outcomes import NOW_NS, outcome
from tlsfleet.agent.model import (
    AddressResult,
    AiaFetch,
    Failure,
    Handshake,
    NativeVerdict,
    ProbeRequest,
    TrustStore,
    Verdict,
)
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.stores import LoadedStore, store_fingerprint
from tlsfleet.agent.trust.verify import judge_against_stores
from tlsfleet.coordinator.outcomes import ProbeOutcome

NAME = "api.example.test"
NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def store(
    name: str,
    roots: Sequence[x509.Certificate],
    *,
    path: str = "",
    kind: str = "file",
    runtime: str = "",
    found_by: str = "",
) -> LoadedStore:
    fps = [fingerprint(der(c)) for c in roots]
    info = TrustStore(
        name=name,
        kind=kind,
        path=path or (SYSTEM_BUNDLE if name == "system" else f"/stores/{name.replace(':', '_')}.pem"),
        root_count=len(roots),
        fingerprint=store_fingerprint(fps),
        runtime=runtime,
        found_by=found_by,
    )
    return LoadedStore(info=info, roots=tuple(roots))


def judged(
    agent: str,
    chain: Sequence[bytes],
    stores: Sequence[LoadedStore],
    *,
    ip: str = "10.0.0.1",
    name: str = NAME,
    aia: AiaFetch | None = None,
    python_code: int | None = None,
    req: ProbeRequest | None = None,
) -> ProbeOutcome:
    """One agent's outcome for one address: each store judged by OpenSSL, the native verdict being the first
    store's (the system store, as the native client reads it). `python_code`: a python view that differs."""
    at = NOW if req is None else datetime.fromtimestamp((req.options.reference_time_ns or NOW_NS) / 1e9, tz=UTC)
    verdicts = judge_against_stores(list(chain), list(stores), name, at, at)
    first = verdicts[0]
    native = NativeVerdict(first.at_agent_time, first.verify_code)
    failure = Failure.NONE if first.at_agent_time is Verdict.OK else Failure.CERT_VERIFY
    views = ()
    if python_code is not None:
        from tlsfleet.agent.model import Client, ClientView
        from tlsfleet.agent.trust.verify import verdict_from_openssl_code

        views = (ClientView(Client.PYTHON, verdict_from_openssl_code(python_code), python_code),)
    row = AddressResult(
        address=ip,
        connect_ms=0.5,
        handshake=Handshake(failure=failure, tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256"),
        chain=tuple(chain),
        native=native,
        stores=verdicts,
        aia=aia,
        views=views,
    )
    return outcome(agent, [row], trust_stores=[s.info for s in stores], req=req)


def with_native(outcome_: ProbeOutcome, verdict: Verdict, code: int) -> ProbeOutcome:
    """The same outcome with another native verdict (a host whose OpenSSL level or defaults differ)."""
    assert outcome_.result is not None
    addresses = tuple(replace(a, native=NativeVerdict(verdict, code)) for a in outcome_.result.addresses)
    return replace(outcome_, result=replace(outcome_.result, addresses=addresses))


def stores_of(outcome_: ProbeOutcome) -> Mapping[str, tuple[Verdict, int, tuple[str, ...]]]:
    assert outcome_.result is not None
    return {
        s.store: (s.at_agent_time, s.verify_code, s.verified_path) for a in outcome_.result.addresses for s in a.stores
    }
