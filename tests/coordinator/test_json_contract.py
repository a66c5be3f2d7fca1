"""The public `--json` documents key by key: renaming a field of the model must not rename a key.

json_output writes every key out by hand; this pins the complete set of keys, at every depth, of a probe
report and of an agent description, built with every optional part present.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tests.outcomes import NOW_NS, address, observe, outcome, request, silent
from tlsfleet.agent.model import (
    AgentDescription,
    AgentIdentity,
    AiaFetch,
    Client,
    ClientView,
    HostFacts,
    ProbeOptions,
    ProbeRequest,
    RootCertificate,
    Target,
    TlsVersion,
    TrustStore,
    Verdict,
)
from tlsfleet.coordinator.diagnosis.model import Cause, Evidence, Finding, Severity
from tlsfleet.coordinator.json_output import describe_outcome_json, probe_report_json
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import Variant
from tlsfleet.coordinator.outcomes import ClockEstimate, DescribeOutcome, VantageInfo, VantageKind, VantageState

# Maps whose keys are data (an agent's labels), not part of the document's shape.
_DATA_MAPS = frozenset({"labels"})

_STORE_KEYS = {
    "name",
    "kind",
    "path",
    "root_count",
    "fingerprint",
    "error",
    "roots",
    "roots[].sha256",
    "roots[].subject",
    "runtime",
    "found_by",
    "declared",
}
_VANTAGE_KEYS = {"agent", "address", "kind", "labels", "state", "error", "clock", "clock.offset_ms", "clock.error_ms"}
_PROBE_VANTAGE_KEYS = (
    _VANTAGE_KEYS
    | {"agent_version", "duration_ms", "result"}
    | {
        f"result.{key}"
        for key in {
            "target",
            "target.host",
            "target.port",
            "sni",
            "expected_name",
            "resolution",
            "resolution.addresses",
            "resolution.duration_ms",
            "resolution.failure",
            "resolution.error",
            "resolution.truncated_from",
            "addresses",
            "addresses[].address",
            "addresses[].connect_ms",
            "addresses[].connect_failure",
            "addresses[].connect_error",
            "addresses[].proxy_status",
            "addresses[].handshake",
            "addresses[].handshake.failure",
            "addresses[].handshake.error",
            "addresses[].handshake.tls_version",
            "addresses[].handshake.cipher",
            "addresses[].handshake.alpn",
            "addresses[].handshake.duration_ms",
            "addresses[].handshake.alert",
            "addresses[].handshake.refused_by",
            "addresses[].handshake.client_cert_requested",
            "addresses[].handshake.acceptable_ca_names",
            "addresses[].handshake.client_cert",
            "addresses[].chain",
            "addresses[].native",
            "addresses[].native.verdict",
            "addresses[].native.verify_code",
            "addresses[].native.verify_message",
            "addresses[].native.hostname_checked",
            "addresses[].stores",
            "addresses[].stores[].store",
            "addresses[].stores[].at_agent_time",
            "addresses[].stores[].at_reference_time",
            "addresses[].stores[].verified_path",
            "addresses[].stores[].detail",
            "addresses[].stores[].verify_code",
            "addresses[].stores[].reference_verify_code",
            "addresses[].stores[].strict_note",
            "addresses[].stores[].same_as",
            "addresses[].views",
            *(
                f"addresses[].views[].{k}"
                for k in ("client", "verdict", "verify_code", "failure", "error", "tls_version", "cipher", "detail")
            ),
            "addresses[].aia",
            "addresses[].aia.url",
            "addresses[].aia.fetched",
            "addresses[].aia.error",
            "addresses[].aia.certificate",
            "addresses[].aia.completes_chain",
            "addresses[].aia.verdict",
            "addresses[].certificates",
            "addresses[].certificates[].sha256",
            "addresses[].certificates[].subject",
            "addresses[].certificates[].issuer",
            "addresses[].certificates[].san",
            "addresses[].certificates[].not_before",
            "addresses[].certificates[].not_after",
            "addresses[].certificates[].is_ca",
            "addresses[].certificates[].self_issued",
            "addresses[].certificates[].subject_key_id",
            "addresses[].certificates[].authority_key_id",
            "addresses[].certificates[].aia_ca_issuers",
            "trust_stores",
            *(f"trust_stores[].{k}" for k in _STORE_KEYS),
            "agent_received_ns",
            "agent_replied_ns",
            "reference_time_ns",
            "request_id",
            "agent_received",
            "agent_replied",
            "starttls",
            "proxy",
        }
    }
)
_REQUEST_KEYS = {
    "target",
    "target.host",
    "target.port",
    "options",
    *(
        f"options.{key}"
        for key in (
            "sni",
            "send_sni",
            "alpn",
            "min_version",
            "max_version",
            "pin_address",
            "max_addresses",
            "resolve_timeout",
            "connect_timeout",
            "handshake_timeout",
            "reference_time_ns",
            "client_cert",
            "starttls",
            "via_proxy",
        )
    ),
    "request_id",
}
PROBE_REPORT_KEYS = {
    "schema",
    "kind",
    "target",
    "request",
    *(f"request.{k}" for k in _REQUEST_KEYS),
    "reference_time",
    "exit_code",
    "findings",
    *(
        f"findings[].{k}"
        for k in (
            "cause",
            "severity",
            "summary",
            "agents",
            "addresses",
            "evidence",
            "evidence[].field",
            "evidence[].values",
            "fix",
            "reproduce",
        )
    ),
    "vantages",
    *(f"vantages[].{k}" for k in _PROBE_VANTAGE_KEYS),
    "variants",
    "variants[].label",
    "variants[].request",
    *(f"variants[].request.{k}" for k in _REQUEST_KEYS),
    "variants[].vantages",
    *(f"variants[].vantages[].{k}" for k in _PROBE_VANTAGE_KEYS),
}
DESCRIBE_KEYS = _VANTAGE_KEYS | {
    "duration_ms",
    "description",
    "description.identity",
    "description.identity.name",
    "description.identity.version",
    "description.identity.labels",
    "description.facts",
    *(
        f"description.facts.{k}"
        for k in (
            "hostname",
            "os",
            "python_version",
            "openssl_version",
            "agent_version",
            "proxy_env",
            "resolv_conf",
            "hosts_entries",
            "ntp_synchronized",
            "ntp_detail",
            "gathered_ns",
            "openssl_policy",
            "runtimes",
            "client_certs",
        )
    ),
    "description.trust_stores",
    *(f"description.trust_stores[].{k}" for k in _STORE_KEYS),
    "description.agent_time_ns",
    "description.probe_policy",
}


def key_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every key at every depth as a dotted path; `[]` stands for any element of a list."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            if key not in _DATA_MAPS:
                yield from key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            yield from key_paths(item, f"{prefix}[]")


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Contract")


_STORES = (
    TrustStore(
        name="system",
        kind="file",
        path="/etc/ssl/certs/ca-certificates.crt",
        root_count=1,
        fingerprint="ab" * 32,
        roots=(RootCertificate(sha256="cd" * 32, subject="CN=Contract Root CA"),),
    ),
)


def test_probe_report_keys(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test")
    served = address("192.0.2.1", [leaf.der], native=Verdict.UNKNOWN_ISSUER, verified_path=("ab",))
    fetched = AiaFetch(
        url="http://aia.example.test/ca.der",
        fetched=True,
        certificate=pki.intermediate.der,
        completes_chain=True,
        verdict=Verdict.OK,
    )
    req = ProbeRequest(
        target=Target("api.example.test", 443),
        options=ProbeOptions(alpn=("h2",), min_version=TlsVersion.TLS1_2, reference_time_ns=NOW_NS),
        request_id="r-1",
    )
    answered = outcome(
        "web-1",
        [dataclasses.replace(served, aia=fetched, views=(ClientView(Client.OPENSSL, Verdict.UNKNOWN_ISSUER, 20),))],
        req=req,
        labels=[("env", "prod")],
        trust_stores=_STORES,
    )
    finding = Finding(
        cause=Cause.INCOMPLETE_CHAIN,
        severity=Severity.WARNING,
        summary="the issuer is not served",
        agents=("web-1",),
        addresses=("192.0.2.1",),
        evidence=(Evidence("served chain", (("web-1@192.0.2.1", "leaf only"),)),),
        fix="serve the full chain",
        reproduce=("openssl s_client -connect 192.0.2.1:443",),
    )
    variant = Variant(label="no SNI", request=request(send_sni=False), outcomes=(answered, silent("db-1")))
    document = probe_report_json(observe(answered, silent("db-1"), req=req, variants=[variant]), [finding], exit_code=1)

    assert set(key_paths(document)) == PROBE_REPORT_KEYS
    assert document["vantages"][0]["labels"] == {"env": "prod"}
    assert document["vantages"][0]["kind"] == "grpc" and document["vantages"][1]["result"] is None


def test_describe_outcome_keys() -> None:
    facts = HostFacts(
        hostname="web-1",
        os="Linux",
        python_version="3.11.9",
        openssl_version="OpenSSL 3.0.13",
        agent_version="0.1.0",
        proxy_env=(("HTTPS_PROXY", "http://proxy.example.test:3128"),),
        resolv_conf=("nameserver 192.0.2.53",),
        hosts_entries=("192.0.2.1 api.example.test",),
        ntp_synchronized=True,
        ntp_detail="timedatectl NTPSynchronized=yes",
        gathered_ns=NOW_NS,
    )
    described = DescribeOutcome(
        vantage=VantageInfo(name="web-1", address="web-1.test:7443", labels=(("env", "prod"),)),
        state=VantageState.OK,
        description=AgentDescription(
            identity=AgentIdentity(name="web-1", version="0.1.0", labels=(("env", "prod"),)),
            facts=facts,
            trust_stores=_STORES,
            agent_time_ns=NOW_NS,
        ),
        clock=ClockEstimate(offset_ms=1.5, error_ms=0.5),
        duration_ms=2.0,
    )
    document = describe_outcome_json(described)

    assert set(key_paths(document)) == DESCRIBE_KEYS
    assert document["labels"] == {"env": "prod"}

    local = DescribeOutcome(
        vantage=VantageInfo(name="local", address="local", kind=VantageKind.LOCAL),
        state=VantageState.TIMEOUT,
        error="no answer",
    )
    unanswered = describe_outcome_json(local)
    assert set(unanswered) == set(document)  # the same keys, with nothing under them
    assert (unanswered["kind"], unanswered["clock"], unanswered["description"]) == ("local", None, None)
