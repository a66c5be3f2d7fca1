"""The full results as JSON: for `--json`, for saving, and for machines reading the CLI."""

from __future__ import annotations

import base64
import dataclasses
import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..agent.trust.certinfo import CertificateParseError, summarize
from .diagnosis.model import Finding
from .observation import Observation
from .outcomes import DescribeOutcome, ProbeOutcome

SCHEMA_VERSION = 1


def iso_from_ns(ns: int | None) -> str | None:
    if not ns:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """Dataclasses, enums and tuples as JSON values; certificates as base64 DER."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


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
    data: dict[str, Any] = {
        "agent": outcome.vantage.name,
        "address": outcome.vantage.address,
        "kind": outcome.vantage.kind,
        "labels": dict(outcome.vantage.labels),
        "state": outcome.state.value,
        "error": outcome.error,
        "agent_version": outcome.agent_version,
        "duration_ms": round(outcome.duration_ms, 3),
        "clock": _plain(outcome.clock),
        "result": None,
    }
    if outcome.result is not None:
        result = _plain(outcome.result)
        result["agent_received"] = iso_from_ns(outcome.result.agent_received_ns)
        result["agent_replied"] = iso_from_ns(outcome.result.agent_replied_ns)
        for address_json, address in zip(result["addresses"], outcome.result.addresses, strict=True):
            address_json["certificates"] = [certificate_json(der) for der in address.chain]
        data["result"] = result
    return data


def probe_report_json(observation: Observation, findings: Sequence[Finding], *, exit_code: int) -> dict[str, Any]:
    request = observation.request
    return {
        "schema": SCHEMA_VERSION,
        "target": str(request.target),
        "request": _plain(request),
        "reference_time": iso_from_ns(request.options.reference_time_ns),
        "exit_code": exit_code,
        "findings": [finding_json(f) for f in findings],
        "vantages": [probe_outcome_json(o) for o in observation.outcomes],
        "variants": [
            {
                "label": v.label,
                "request": _plain(v.request),
                "vantages": [probe_outcome_json(o) for o in v.outcomes],
            }
            for v in observation.variants
        ],
    }


def describe_outcome_json(outcome: DescribeOutcome) -> dict[str, Any]:
    return {
        "agent": outcome.vantage.name,
        "address": outcome.vantage.address,
        "kind": outcome.vantage.kind,
        "labels": dict(outcome.vantage.labels),
        "state": outcome.state.value,
        "error": outcome.error,
        "duration_ms": round(outcome.duration_ms, 3),
        "clock": _plain(outcome.clock),
        "description": _plain(outcome.description),
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
