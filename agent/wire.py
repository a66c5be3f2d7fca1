"""Conversion between the in-process dataclasses and the tlsfleet.v1 protobuf messages.

The only module that touches both worlds: the agent service and the coordinator's gRPC vantage call it
at the edge and speak dataclasses everywhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import FieldDescriptor as _FieldDescriptor

from ..v1 import agent_pb2, probe_pb2
from .model import (
    AddressResult,
    AgentDescription,
    AgentIdentity,
    AiaFetch,
    Client,
    ClientView,
    Failure,
    Handshake,
    HostFacts,
    NativeVerdict,
    Party,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    RootCertificate,
    Starttls,
    StoreVerdict,
    Target,
    TlsVersion,
    TrustStore,
    Verdict,
)
from .naming import MAX_LABELS
from .probe.request_limits import MAX_ADDRESSES, RequestError, request_id_of


def _enum_maps(enum_cls: type, proto_enum: object, prefix: str) -> tuple[dict, dict]:
    """Pair a StrEnum with a protobuf enum by member name, failing loudly when they drift apart."""
    to_wire = {}
    for member in enum_cls:  # type: ignore[attr-defined]
        to_wire[member] = proto_enum.Value(f"{prefix}{member.name}")  # type: ignore[attr-defined]
    return to_wire, {number: member for member, number in to_wire.items()}


_VERDICT_TO_WIRE, _VERDICT_FROM_WIRE = _enum_maps(Verdict, probe_pb2.Verdict, "VERDICT_")
_FAILURE_TO_WIRE, _FAILURE_FROM_WIRE = _enum_maps(Failure, probe_pb2.Failure, "FAILURE_")
_CLIENT_TO_WIRE, _CLIENT_FROM_WIRE = _enum_maps(Client, probe_pb2.Client, "CLIENT_")
_VERSION_TO_WIRE = {
    TlsVersion.TLS1_0: probe_pb2.TLS_VERSION_1_0,
    TlsVersion.TLS1_1: probe_pb2.TLS_VERSION_1_1,
    TlsVersion.TLS1_2: probe_pb2.TLS_VERSION_1_2,
    TlsVersion.TLS1_3: probe_pb2.TLS_VERSION_1_3,
}
_VERSION_FROM_WIRE = {number: version for version, number in _VERSION_TO_WIRE.items()}


def _version_to_wire(version: TlsVersion | None) -> probe_pb2.TlsVersion:
    return (
        _VERSION_TO_WIRE.get(version, probe_pb2.TLS_VERSION_UNSPECIFIED)
        if version
        else probe_pb2.TLS_VERSION_UNSPECIFIED
    )


def _verdict_from_wire(number: int) -> Verdict:
    # An agent newer than this coordinator may send a verdict we do not know yet.
    return _VERDICT_FROM_WIRE.get(number, Verdict.OTHER)


def _failure_from_wire(number: int) -> Failure:
    return _FAILURE_FROM_WIRE.get(number, Failure.INTERNAL)


def _party_from_wire(text: str) -> Party:
    try:
        return Party(text)
    except ValueError:
        return Party.NONE


def _view_to_wire(v: ClientView) -> probe_pb2.ClientView:
    return probe_pb2.ClientView(
        client=_CLIENT_TO_WIRE[v.client],
        verdict=_VERDICT_TO_WIRE[v.verdict],
        verify_code=v.verify_code,
        failure=_FAILURE_TO_WIRE[v.failure],
        error=v.error,
        tls_version=v.tls_version,
        cipher=v.cipher,
        detail=v.detail,
    )


def _views_from_wire(views: Iterable[probe_pb2.ClientView]) -> tuple[ClientView, ...]:
    # A view of a client this coordinator does not know yet is left out rather than misnamed.
    return tuple(
        ClientView(
            client=_CLIENT_FROM_WIRE[v.client],
            verdict=_verdict_from_wire(v.verdict),
            verify_code=v.verify_code,
            failure=_failure_from_wire(v.failure),
            error=v.error,
            tls_version=v.tls_version,
            cipher=v.cipher,
            detail=v.detail,
        )
        for v in views
        if v.client in _CLIENT_FROM_WIRE
    )


# --- requests ---------------------------------------------------------------------------------------


def request_to_wire(request: ProbeRequest) -> probe_pb2.ProbeRequest:
    o = request.options
    options = probe_pb2.ProbeOptions(
        no_sni=not o.send_sni,
        alpn=list(o.alpn),
        min_version=_version_to_wire(o.min_version),
        max_version=_version_to_wire(o.max_version),
        pin_address=o.pin_address or "",
        max_addresses=o.max_addresses,
        resolve_timeout_s=o.resolve_timeout,
        connect_timeout_s=o.connect_timeout,
        handshake_timeout_s=o.handshake_timeout,
        reference_time_ns=o.reference_time_ns or 0,
    )
    if o.sni is not None:
        options.sni = o.sni
    if o.client_cert is not None:
        options.client_cert = o.client_cert
    if o.starttls is not Starttls.NONE:
        options.starttls = o.starttls.value
    options.via_proxy = o.via_proxy
    return probe_pb2.ProbeRequest(
        target=probe_pb2.Target(host=request.target.host, port=request.target.port),
        options=options,
        request_id=request.request_id,
    )


def request_from_wire(message: probe_pb2.ProbeRequest, defaults: ProbeOptions) -> ProbeRequest:
    """Unset numeric fields take the agent's defaults; validation of values is the caller's."""
    o = message.options
    options = ProbeOptions(
        sni=o.sni if o.HasField("sni") else None,
        send_sni=not o.no_sni,
        alpn=tuple(o.alpn),
        min_version=_VERSION_FROM_WIRE.get(o.min_version),
        max_version=_VERSION_FROM_WIRE.get(o.max_version),
        pin_address=o.pin_address or None,
        max_addresses=o.max_addresses or defaults.max_addresses,
        resolve_timeout=o.resolve_timeout_s or defaults.resolve_timeout,
        connect_timeout=o.connect_timeout_s or defaults.connect_timeout,
        handshake_timeout=o.handshake_timeout_s or defaults.handshake_timeout,
        reference_time_ns=o.reference_time_ns or None,
        client_cert=o.client_cert if o.HasField("client_cert") else None,
        starttls=_starttls_from_wire(o.starttls),
        via_proxy=o.via_proxy,
    )
    return ProbeRequest(
        target=Target(message.target.host, message.target.port),
        options=options,
        request_id=message.request_id,
    )


def _starttls_from_wire(text: str) -> Starttls:
    try:
        return Starttls(text or Starttls.NONE)
    except ValueError:
        accepted = ", ".join(p.value for p in Starttls)
        shown = text if len(text) <= 32 else f"{text[:32]}..."
        raise RequestError(f"STARTTLS protocol {shown!r} is not known to this agent; accepted: {accepted}") from None


# --- results ----------------------------------------------------------------------------------------

_V = TypeVar("_V")
_M = TypeVar("_M")
_SEEN_VALUES = 64


class _ByIdentity(Generic[_V, _M]):
    """The wire messages of an immutable value the agent hands over again and again (its trust stores, the
    store verdicts of a cached judgement): converted once, copied into each reply. Bounded; an entry holds
    its value, so the value's id cannot be reused while the entry lives."""

    def __init__(self, convert: Callable[[_V], Sequence[_M]]) -> None:
        self._convert = convert
        self._entries: dict[int, tuple[_V, Sequence[_M]]] = {}

    def __call__(self, value: _V) -> Sequence[_M]:
        entry = self._entries.get(id(value))
        if entry is not None and entry[0] is value:
            return entry[1]
        messages = self._convert(value)
        if len(self._entries) >= _SEEN_VALUES:
            del self._entries[next(iter(self._entries))]
        self._entries[id(value)] = (value, messages)
        return messages


def _store_to_wire(store: TrustStore) -> probe_pb2.TrustStore:
    return probe_pb2.TrustStore(
        name=store.name,
        kind=store.kind,
        path=store.path,
        root_count=store.root_count,
        fingerprint=store.fingerprint,
        error=store.error,
        roots=[probe_pb2.RootCertificate(sha256=r.sha256, subject=r.subject) for r in store.roots],
        runtime=store.runtime,
        found_by=store.found_by,
        declared=store.declared,
    )


def _store_from_wire(m: probe_pb2.TrustStore) -> TrustStore:
    roots = tuple(RootCertificate(r.sha256, r.subject) for r in m.roots)
    return TrustStore(
        m.name, m.kind, m.path, m.root_count, m.fingerprint, m.error, roots, m.runtime, m.found_by, m.declared
    )


def _address_to_wire(a: AddressResult) -> probe_pb2.AddressResult:
    h = a.handshake
    message = probe_pb2.AddressResult(
        address=a.address,
        connect_failure=_FAILURE_TO_WIRE[a.connect_failure],
        connect_error=a.connect_error,
        handshake=probe_pb2.Handshake(
            failure=_FAILURE_TO_WIRE[h.failure],
            error=h.error,
            tls_version=h.tls_version,
            cipher=h.cipher,
            alpn=h.alpn,
            duration_ms=h.duration_ms,
            alert=h.alert,
            refused_by=h.refused_by.value,
            client_cert_requested=h.client_cert_requested,
            acceptable_ca_names=list(h.acceptable_ca_names),
            client_cert=h.client_cert,
        ),
        chain=list(a.chain),
        native=probe_pb2.NativeVerdict(
            verdict=_VERDICT_TO_WIRE[a.native.verdict],
            verify_code=a.native.verify_code,
            verify_message=a.native.verify_message,
            hostname_checked=a.native.hostname_checked,
        ),
        stores=_store_verdicts_to_wire(a.stores),
        views=[_view_to_wire(v) for v in a.views],
        proxy_status=a.proxy_status,
    )
    if a.connect_ms is not None:
        message.connect_ms = a.connect_ms
    if a.aia is not None:
        message.aia.CopyFrom(
            probe_pb2.AiaFetch(
                url=a.aia.url,
                fetched=a.aia.fetched,
                error=a.aia.error,
                certificate=a.aia.certificate,
                completes_chain=a.aia.completes_chain,
                verdict=_VERDICT_TO_WIRE[a.aia.verdict],
            )
        )
    return message


def _verdicts_to_wire(verdicts: tuple[StoreVerdict, ...]) -> list[probe_pb2.StoreVerdict]:
    return [
        probe_pb2.StoreVerdict(
            store=s.store,
            at_agent_time=_VERDICT_TO_WIRE[s.at_agent_time],
            at_reference_time=_VERDICT_TO_WIRE[s.at_reference_time],
            verified_path=list(s.verified_path),
            detail=s.detail,
            verify_code=s.verify_code,
            reference_verify_code=s.reference_verify_code,
            strict_note=s.strict_note,
            same_as=list(s.same_as),
        )
        for s in verdicts
    ]


def _stores_to_wire(stores: tuple[TrustStore, ...]) -> list[probe_pb2.TrustStore]:
    return [_store_to_wire(s) for s in stores]


_store_verdicts_to_wire = _ByIdentity(_verdicts_to_wire)
_trust_stores_to_wire = _ByIdentity(_stores_to_wire)


def _address_from_wire(m: probe_pb2.AddressResult) -> AddressResult:
    h = m.handshake
    return AddressResult(
        address=m.address,
        connect_ms=m.connect_ms if m.HasField("connect_ms") else None,
        connect_failure=_failure_from_wire(m.connect_failure),
        connect_error=m.connect_error,
        handshake=Handshake(
            failure=_failure_from_wire(h.failure),
            error=h.error,
            tls_version=h.tls_version,
            cipher=h.cipher,
            alpn=h.alpn,
            duration_ms=h.duration_ms,
            alert=h.alert,
            refused_by=_party_from_wire(h.refused_by),
            client_cert_requested=h.client_cert_requested,
            acceptable_ca_names=tuple(h.acceptable_ca_names),
            client_cert=h.client_cert,
        ),
        chain=tuple(m.chain),
        native=NativeVerdict(
            verdict=_verdict_from_wire(m.native.verdict),
            verify_code=m.native.verify_code,
            verify_message=m.native.verify_message,
            hostname_checked=m.native.hostname_checked,
        ),
        stores=tuple(
            StoreVerdict(
                store=s.store,
                at_agent_time=_verdict_from_wire(s.at_agent_time),
                at_reference_time=_verdict_from_wire(s.at_reference_time),
                verified_path=tuple(s.verified_path),
                detail=s.detail,
                verify_code=s.verify_code,
                reference_verify_code=s.reference_verify_code,
                strict_note=s.strict_note,
                same_as=tuple(s.same_as),
            )
            for s in m.stores
        ),
        aia=_aia_from_wire(m.aia) if m.HasField("aia") else None,
        views=_views_from_wire(m.views),
        proxy_status=m.proxy_status,
    )


def _aia_from_wire(m: probe_pb2.AiaFetch) -> AiaFetch:
    return AiaFetch(
        url=m.url,
        fetched=m.fetched,
        error=m.error,
        certificate=m.certificate,
        completes_chain=m.completes_chain,
        verdict=_verdict_from_wire(m.verdict),
    )


def result_to_wire(result: ProbeResult, agent_name: str, agent_version: str) -> probe_pb2.ProbeResult:
    r = result.resolution
    message = probe_pb2.ProbeResult(
        agent=probe_pb2.AgentRef(name=agent_name, version=agent_version),
        target=probe_pb2.Target(host=result.target.host, port=result.target.port),
        expected_name=result.expected_name,
        resolution=probe_pb2.Resolution(
            addresses=list(r.addresses),
            duration_ms=r.duration_ms,
            failure=_FAILURE_TO_WIRE[r.failure],
            error=r.error,
            truncated_from=r.truncated_from,
        ),
        addresses=[_address_to_wire(a) for a in result.addresses],
        trust_stores=_trust_stores_to_wire(result.trust_stores),
        agent_received_ns=result.agent_received_ns,
        agent_replied_ns=result.agent_replied_ns,
        reference_time_ns=result.reference_time_ns or 0,
        request_id=result.request_id,
        starttls="" if result.starttls is Starttls.NONE else result.starttls.value,
        proxy=result.proxy,
    )
    if result.sni is not None:
        message.sni = result.sni
    return message


def result_from_wire(m: probe_pb2.ProbeResult) -> tuple[ProbeResult, str, str]:
    """The result, and the agent name and version the reply claims."""
    r = m.resolution
    result = ProbeResult(
        target=Target(m.target.host, m.target.port),
        sni=m.sni if m.HasField("sni") else None,
        expected_name=m.expected_name,
        resolution=Resolution(
            addresses=tuple(r.addresses),
            duration_ms=r.duration_ms,
            failure=_failure_from_wire(r.failure),
            error=r.error,
            truncated_from=r.truncated_from,
        ),
        addresses=tuple(_address_from_wire(a) for a in m.addresses),
        trust_stores=_trust_stores_from_wire(m.trust_stores),
        agent_received_ns=m.agent_received_ns,
        agent_replied_ns=m.agent_replied_ns,
        reference_time_ns=m.reference_time_ns or None,
        request_id=m.request_id,
        starttls=_starttls_reported(m.starttls),
        proxy=m.proxy,
    )
    return result, m.agent.name, m.agent.version


_last_stores_read: tuple[tuple[probe_pb2.TrustStore, ...], tuple[TrustStore, ...]] = ((), ())


def _trust_stores_from_wire(messages: Sequence[probe_pb2.TrustStore]) -> tuple[TrustStore, ...]:
    """An agent repeats its store list in every reply: a list equal to the one read last gives the same tuple."""
    global _last_stores_read
    seen, stores = _last_stores_read
    if len(messages) == len(seen) and all(a == b for a, b in zip(messages, seen, strict=True)):
        return stores
    stores = tuple(_store_from_wire(s) for s in messages)
    copies = tuple(probe_pb2.TrustStore.FromString(s.SerializeToString()) for s in messages)
    _last_stores_read = (copies, stores)
    return stores


def _starttls_reported(text: str) -> Starttls:
    # A result is kept whatever a newer agent reports; a protocol unknown here reads as none.
    try:
        return Starttls(text or Starttls.NONE)
    except ValueError:
        return Starttls.NONE


# --- descriptions -----------------------------------------------------------------------------------


def description_to_wire(d: AgentDescription) -> agent_pb2.AgentDescription:
    f = d.facts
    facts = agent_pb2.HostFacts(
        hostname=f.hostname,
        os=f.os,
        python_version=f.python_version,
        openssl_version=f.openssl_version,
        agent_version=f.agent_version,
        proxy_env=[agent_pb2.Label(key=k, value=v) for k, v in f.proxy_env],
        resolv_conf=list(f.resolv_conf),
        hosts_entries=list(f.hosts_entries),
        ntp_detail=f.ntp_detail,
        gathered_ns=f.gathered_ns,
        openssl_policy=[agent_pb2.Label(key=k, value=v) for k, v in f.openssl_policy],
        runtimes=[agent_pb2.Label(key=k, value=v) for k, v in f.runtimes],
        client_certs=list(f.client_certs),
    )
    if f.ntp_synchronized is not None:
        facts.ntp_synchronized = f.ntp_synchronized
    return agent_pb2.AgentDescription(
        agent=probe_pb2.AgentRef(name=d.identity.name, version=d.identity.version),
        labels=[agent_pb2.Label(key=k, value=v) for k, v in d.identity.labels],
        facts=facts,
        trust_stores=[_store_to_wire(s) for s in d.trust_stores],
        agent_time_ns=d.agent_time_ns,
        probe_policy=list(d.probe_policy),
    )


def description_from_wire(m: agent_pb2.AgentDescription) -> AgentDescription:
    f = m.facts
    return AgentDescription(
        identity=AgentIdentity(
            name=m.agent.name,
            version=m.agent.version,
            labels=tuple((label.key, label.value) for label in m.labels),
        ),
        facts=HostFacts(
            hostname=f.hostname,
            os=f.os,
            python_version=f.python_version,
            openssl_version=f.openssl_version,
            agent_version=f.agent_version,
            proxy_env=tuple((label.key, label.value) for label in f.proxy_env),
            resolv_conf=tuple(f.resolv_conf),
            hosts_entries=tuple(f.hosts_entries),
            ntp_synchronized=f.ntp_synchronized if f.HasField("ntp_synchronized") else None,
            ntp_detail=f.ntp_detail,
            gathered_ns=f.gathered_ns,
            openssl_policy=tuple((label.key, label.value) for label in f.openssl_policy),
            runtimes=tuple((label.key, label.value) for label in f.runtimes),
            client_certs=tuple(f.client_certs),
        ),
        trust_stores=tuple(_store_from_wire(s) for s in m.trust_stores),
        agent_time_ns=m.agent_time_ns,
        probe_policy=tuple(m.probe_policy),
    )


# --- what a coordinator accepts from an agent ---------------------------------------------------------

# An agent's reply is trusted no further than mutual TLS proves (its name): each string, list and number is
# bounded here, far beyond what a real agent sends, so that a broken or hostile one cannot make the
# coordinator's tables, reports and history as large or as strange as it likes.
MAX_WIRE_TEXT = 16 * 1024  # characters of one string
MAX_WIRE_BYTES = 1024 * 1024  # bytes of one certificate, and of one address's served chain
MAX_WIRE_ITEMS = 256  # items of a list not named below
MAX_WIRE_DURATION_MS = 86_400_000.0
_MAX_ITEMS = {
    "tlsfleet.v1.ProbeResult.addresses": MAX_ADDRESSES,
    "tlsfleet.v1.Resolution.addresses": MAX_ADDRESSES,
    "tlsfleet.v1.AddressResult.chain": 10_000,  # as many as a handshake of MAX_HANDSHAKE_BYTES can carry
    "tlsfleet.v1.StoreVerdict.verified_path": 129,  # the longest chain OpenSSL is asked to build, and its anchor
    "tlsfleet.v1.AddressResult.views": 16,
    "tlsfleet.v1.TrustStore.roots": 10_000,
    "tlsfleet.v1.AgentDescription.probe_policy": 4096,
    "tlsfleet.v1.AgentDescription.labels": MAX_LABELS,
}
_FINGERPRINTS = re.compile("[0-9a-f]+")


class WireError(ValueError):
    """A message from an agent that this coordinator refuses; the text names the field and the limit."""


def result_problem(m: probe_pb2.ProbeResult, request: ProbeRequest | None = None) -> str:
    """Why this reply cannot be taken as the answer to `request` (or to any request), or "" when it can."""
    try:
        _check_message(m, None)
        for index, a in enumerate(m.addresses):
            _check_address(a, f"addresses[{index}]")
    except WireError as error:
        return str(error)
    if request is None:
        return ""
    asked = request.target
    if (m.target.host, m.target.port) != (asked.host, asked.port):
        return f"it answers for {shown(m.target.host)}:{m.target.port}, but {asked} was asked"
    # The agent echoes the id as it logs it (request_id_of); a request sent without one gets a fresh one.
    if request.request_id and m.request_id != request_id_of(request.request_id):
        return f"it answers request '{shown(m.request_id)}', but request {request.request_id!r} was asked"
    most = 1 if request.options.pin_address else request.options.max_addresses
    for field, count in (("addresses", len(m.addresses)), ("resolution.addresses", len(m.resolution.addresses))):
        if count > most:
            return f"{field} has {count} entries, but at most {most} were asked for"
    return ""


def description_problem(m: agent_pb2.AgentDescription) -> str:
    """Why this description is refused, or ""."""
    try:
        _check_message(m, None)
    except WireError as error:
        return str(error)
    return ""


# Where a value sits, as (parent, field name, index or None); spelled out ("addresses[0].chain") only for an error.
_Where = tuple[Any, str, int | None] | None


def _check_message(m: object, where: _Where) -> None:
    """Every string, bytes, list and floating-point number of `m`, recursively, within the limits above."""
    for field, value in m.ListFields():  # type: ignore[attr-defined]
        kind = field.type
        if field.is_repeated:
            most = _MAX_ITEMS.get(field.full_name, MAX_WIRE_ITEMS)
            if len(value) > most:
                at = _spelled((where, field.name, None))
                raise WireError(f"{at} has {len(value)} entries; at most {most} are accepted")
            if kind == field.TYPE_MESSAGE:
                for index, item in enumerate(value):
                    _check_message(item, (where, field.name, index))
            elif kind in _SIZED:
                most = _SIZED[kind][0]
                if max(map(len, value)) > most:
                    index = next(i for i, item in enumerate(value) if len(item) > most)
                    _too_long((where, field.name, index), value[index], kind)
            elif kind in _FLOATING:
                for index, item in enumerate(value):
                    _check_number(item, (where, field.name, index), duration=field.name.endswith("_ms"))
        elif kind == field.TYPE_MESSAGE:
            _check_message(value, (where, field.name, None))
        elif kind in _SIZED:
            if len(value) > _SIZED[kind][0]:
                _too_long((where, field.name, None), value, kind)
        elif kind in _FLOATING:
            _check_number(value, (where, field.name, None), duration=field.name.endswith("_ms"))


_SIZED = {
    _FieldDescriptor.TYPE_STRING: (MAX_WIRE_TEXT, "characters"),
    _FieldDescriptor.TYPE_BYTES: (MAX_WIRE_BYTES, "bytes"),
}
_FLOATING = frozenset({_FieldDescriptor.TYPE_DOUBLE, _FieldDescriptor.TYPE_FLOAT})


def _spelled(where: _Where) -> str:
    if where is None:
        return ""
    parent, name, index = where
    head = _spelled(parent)
    at = f"{head}.{name}" if head else name
    return at if index is None else f"{at}[{index}]"


def _too_long(where: _Where, value: str | bytes, kind: int) -> None:
    most, unit = _SIZED[kind]
    raise WireError(f"{_spelled(where)} is {len(value)} {unit} long; at most {most} are accepted")


def _check_number(value: float, where: _Where, *, duration: bool) -> None:
    # NaN and infinity are no JSON numbers: --json, the history and the reports could not carry them.
    if not math.isfinite(value):
        raise WireError(f"{_spelled(where)} is {value!r}; accepted: a finite number")
    if duration and not 0 <= value <= MAX_WIRE_DURATION_MS:
        raise WireError(f"{_spelled(where)} is {value!r}; accepted: 0 to {MAX_WIRE_DURATION_MS:.0f} ms")


def _check_address(a: probe_pb2.AddressResult, where: str) -> None:
    """What a list's length does not say: each client and each store judged once, paths of fingerprints."""
    served = sum(len(der) for der in a.chain)
    if served > MAX_WIRE_BYTES:  # no handshake an agent reads carries more (OpenSSL stops at 100 KiB)
        raise WireError(f"{where}.chain is {served} bytes in all; at most {MAX_WIRE_BYTES} are accepted")
    clients = [v.client for v in a.views]
    if len(set(clients)) != len(clients):
        raise WireError(f"{where}.views names a client more than once")
    stores: set[str] = set()
    total = 0
    for index, s in enumerate(a.stores):
        for name in (s.store, *s.same_as):
            if name in stores:
                raise WireError(f"{where}.stores[{index}] judges store '{shown(name)}' a second time")
            stores.add(name)
        total += 1 + len(s.same_as)
        if total > MAX_WIRE_ITEMS:
            raise WireError(f"{where}.stores judge more than {MAX_WIRE_ITEMS} stores")
        path = s.verified_path
        if path and (set(map(len, path)) != {64} or not _FINGERPRINTS.fullmatch("".join(path))):
            fp = next(fp for fp in path if len(fp) != 64 or not _FINGERPRINTS.fullmatch(fp))
            raise WireError(f"{where}.stores[{index}].verified_path holds '{shown(fp)}', not a SHA-256 fingerprint")


def shown(text: str) -> str:
    """A string from the wire as it may appear in an error: short, with no control characters."""
    short = text if len(text) <= 64 else f"{text[:64]}..."
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in short)
