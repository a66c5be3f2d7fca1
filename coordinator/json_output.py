"""The full results as JSON: for `--json`, for saving, and for machines reading the CLI.

Every key is written out here, field by field: the output is a public contract, so renaming a field of the
model must not rename a key (tests/coordinator/test_json_contract.py pins the keys).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..agent.documents import document
from ..agent.model import (
    AddressResult,
    AgentDescription,
    AiaFetch,
    ClientView,
    Handshake,
    HostFacts,
    NativeVerdict,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    StoreVerdict,
    Target,
    TrustStore,
)
from ..agent.trust.certinfo import CertificateParseError, summarize
from .diagnosis.model import Finding
from .observation import Observation
from .outcomes import ClockEstimate, DescribeOutcome, ProbeOutcome


def iso_from_ns(ns: int | None) -> str | None:
    if not ns:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def certificate_json(der: bytes) -> dict[str, Any]:
    try:
        s = summarize(der)
    except CertificateParseError as error:
        return {"error": str(error)}
    return {
        "sha256": s.sha256,
        "subject": s.subject,
        "issuer": s.issuer,
        "san": list(s.san),
        "not_before": s.not_before.isoformat(),
        "not_after": s.not_after.isoformat(),
        "is_ca": s.is_ca,
        "self_issued": s.is_self_issued,
        "subject_key_id": s.subject_key_id,
        "authority_key_id": s.authority_key_id,
        "aia_ca_issuers": list(s.aia_ca_issuers),
    }


def probe_outcome_json(outcome: ProbeOutcome) -> dict[str, Any]:
    return {
        "agent": outcome.vantage.name,
        "address": outcome.vantage.address,
        "kind": outcome.vantage.kind.value,
        "labels": dict(outcome.vantage.labels),
        "state": outcome.state.value,
        "error": outcome.error,
        "agent_version": outcome.agent_version,
        "duration_ms": round(outcome.duration_ms, 3),
        "clock": _clock_json(outcome.clock),
        "result": _result_json(outcome.result) if outcome.result is not None else None,
    }


def probe_report_json(observation: Observation, findings: Sequence[Finding], *, exit_code: int) -> dict[str, Any]:
    request = observation.request
    return document(
        "probe",
        {
            "target": str(request.target),
            "request": _request_json(request),
            "reference_time": iso_from_ns(request.options.reference_time_ns),
            "exit_code": exit_code,
            "findings": [finding_json(f) for f in findings],
            "vantages": [probe_outcome_json(o) for o in observation.outcomes],
            "variants": [
                {
                    "label": v.label,
                    "request": _request_json(v.request),
                    "vantages": [probe_outcome_json(o) for o in v.outcomes],
                }
                for v in observation.variants
            ],
        },
    )


def describe_outcome_json(outcome: DescribeOutcome) -> dict[str, Any]:
    return {
        "agent": outcome.vantage.name,
        "address": outcome.vantage.address,
        "kind": outcome.vantage.kind.value,
        "labels": dict(outcome.vantage.labels),
        "state": outcome.state.value,
        "error": outcome.error,
        "duration_ms": round(outcome.duration_ms, 3),
        "clock": _clock_json(outcome.clock),
        "description": _description_json(outcome.description) if outcome.description is not None else None,
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "cause": finding.cause.value,
        "severity": str(finding.severity),
        "summary": finding.summary,
        "agents": list(finding.agents),
        "addresses": list(finding.addresses),
        "evidence": [{"field": e.field, "values": [list(pair) for pair in e.values]} for e in finding.evidence],
        "fix": finding.fix,
        "reproduce": list(finding.reproduce),
    }


def _request_json(request: ProbeRequest) -> dict[str, Any]:
    return {
        "target": _target_json(request.target),
        "options": _options_json(request.options),
        "request_id": request.request_id,
    }


def trust_store_json(store: TrustStore) -> dict[str, Any]:
    return {
        "name": store.name,
        "kind": store.kind,
        "path": store.path,
        "root_count": store.root_count,
        "fingerprint": store.fingerprint,
        "error": store.error,
        "roots": [{"sha256": r.sha256, "subject": r.subject} for r in store.roots],
        "runtime": store.runtime,
        "found_by": store.found_by,
        "declared": store.declared,
    }


def _target_json(target: Target) -> dict[str, Any]:
    return {"host": target.host, "port": target.port}


def _options_json(o: ProbeOptions) -> dict[str, Any]:
    return {
        "sni": o.sni,
        "send_sni": o.send_sni,
        "alpn": list(o.alpn),
        "min_version": o.min_version.value if o.min_version is not None else None,
        "max_version": o.max_version.value if o.max_version is not None else None,
        "pin_address": o.pin_address,
        "max_addresses": o.max_addresses,
        "resolve_timeout": o.resolve_timeout,
        "connect_timeout": o.connect_timeout,
        "handshake_timeout": o.handshake_timeout,
        "reference_time_ns": o.reference_time_ns,
        "client_cert": o.client_cert,
        "starttls": o.starttls.value,
        "via_proxy": o.via_proxy,
    }


def _clock_json(clock: ClockEstimate | None) -> dict[str, Any] | None:
    if clock is None:
        return None
    return {"offset_ms": clock.offset_ms, "error_ms": clock.error_ms}


def _result_json(r: ProbeResult) -> dict[str, Any]:
    return {
        "target": _target_json(r.target),
        "sni": r.sni,
        "expected_name": r.expected_name,
        "resolution": _resolution_json(r.resolution),
        "addresses": [_address_json(a) for a in r.addresses],
        "trust_stores": [trust_store_json(s) for s in r.trust_stores],
        "agent_received_ns": r.agent_received_ns,
        "agent_replied_ns": r.agent_replied_ns,
        "reference_time_ns": r.reference_time_ns,
        "request_id": r.request_id,
        "agent_received": iso_from_ns(r.agent_received_ns),
        "agent_replied": iso_from_ns(r.agent_replied_ns),
        "starttls": r.starttls.value,
        "proxy": r.proxy,
    }


def _resolution_json(r: Resolution) -> dict[str, Any]:
    return {
        "addresses": list(r.addresses),
        "duration_ms": r.duration_ms,
        "failure": r.failure.value,
        "error": r.error,
        "truncated_from": r.truncated_from,
    }


def _address_json(a: AddressResult) -> dict[str, Any]:
    return {
        "address": a.address,
        "connect_ms": a.connect_ms,
        "connect_failure": a.connect_failure.value,
        "connect_error": a.connect_error,
        "proxy_status": a.proxy_status,
        "handshake": _handshake_json(a.handshake),
        "chain": [_base64(der) for der in a.chain],
        "native": _native_json(a.native),
        "stores": [_store_verdict_json(s) for s in a.stores],
        "aia": _aia_json(a.aia) if a.aia is not None else None,
        "views": [_view_json(v) for v in a.views],
        "certificates": [certificate_json(der) for der in a.chain],
    }


def _view_json(v: ClientView) -> dict[str, Any]:
    return {
        "client": v.client.value,
        "verdict": v.verdict.value,
        "verify_code": v.verify_code,
        "failure": v.failure.value,
        "error": v.error,
        "tls_version": v.tls_version,
        "cipher": v.cipher,
        "detail": v.detail,
    }


def _handshake_json(h: Handshake) -> dict[str, Any]:
    return {
        "failure": h.failure.value,
        "error": h.error,
        "tls_version": h.tls_version,
        "cipher": h.cipher,
        "alpn": h.alpn,
        "duration_ms": h.duration_ms,
        "alert": h.alert,
        "refused_by": h.refused_by.value,
        "client_cert_requested": h.client_cert_requested,
        "acceptable_ca_names": list(h.acceptable_ca_names),
        "client_cert": h.client_cert,
    }


def _native_json(n: NativeVerdict) -> dict[str, Any]:
    return {
        "verdict": n.verdict.value,
        "verify_code": n.verify_code,
        "verify_message": n.verify_message,
        "hostname_checked": n.hostname_checked,
    }


def _store_verdict_json(s: StoreVerdict) -> dict[str, Any]:
    return {
        "store": s.store,
        "at_agent_time": s.at_agent_time.value,
        "at_reference_time": s.at_reference_time.value,
        "verified_path": list(s.verified_path),
        "detail": s.detail,
        "verify_code": s.verify_code,
        "reference_verify_code": s.reference_verify_code,
        "strict_note": s.strict_note,
        "same_as": list(s.same_as),
    }


def _aia_json(a: AiaFetch) -> dict[str, Any]:
    return {
        "url": a.url,
        "fetched": a.fetched,
        "error": a.error,
        "certificate": _base64(a.certificate),
        "completes_chain": a.completes_chain,
        "verdict": a.verdict.value,
    }


def _description_json(d: AgentDescription) -> dict[str, Any]:
    return {
        "identity": {
            "name": d.identity.name,
            "version": d.identity.version,
            "labels": [list(pair) for pair in d.identity.labels],
        },
        "facts": _facts_json(d.facts),
        "trust_stores": [trust_store_json(s) for s in d.trust_stores],
        "agent_time_ns": d.agent_time_ns,
        "probe_policy": list(d.probe_policy),
    }


def _facts_json(f: HostFacts) -> dict[str, Any]:
    return {
        "hostname": f.hostname,
        "os": f.os,
        "python_version": f.python_version,
        "openssl_version": f.openssl_version,
        "agent_version": f.agent_version,
        "proxy_env": [list(pair) for pair in f.proxy_env],
        "resolv_conf": list(f.resolv_conf),
        "hosts_entries": list(f.hosts_entries),
        "ntp_synchronized": f.ntp_synchronized,
        "ntp_detail": f.ntp_detail,
        "gathered_ns": f.gathered_ns,
        "openssl_policy": [list(pair) for pair in f.openssl_policy],
        "runtimes": [list(pair) for pair in f.runtimes],
        "client_certs": list(f.client_certs),
    }


def _base64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")
