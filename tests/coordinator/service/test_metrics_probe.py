"""The probe metrics named after blackbox_exporter's and ssl_exporter's (probe success, TLS version and cipher,
earliest expiry, per-certificate expiry with bounded identities, durations), and build and process info:
from recorded outcomes with real lab certificates, exported by the real /metrics endpoint and parsed."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet import __version__
from tlsfleet.agent.model import Failure, Verdict
from tlsfleet.agent.trust.certinfo import summarize
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.service.metrics import FleetMetrics, probe_series
from tlsfleet.coordinator.service.report_model import TargetRun

from .test_metrics import Endpoint, agents, labels, run_of

API = "api.example.test:443"


def test_probe_success_is_1_only_when_every_address_completed_and_was_accepted(pki: LabPKI) -> None:
    leaf = pki.issue_leaf("api.example.test")
    chain = (leaf.der, pki.intermediate.der)
    observation = observe(
        outcome("ok", [address("10.0.0.5", chain), address("10.0.0.6", chain)]),
        outcome("untrusted", [address("10.0.0.5", chain, native=Verdict.UNKNOWN_ISSUER)]),
        # One address accepted, the other never finished its handshake: a failure.
        outcome("half", [address("10.0.0.5", chain), address("10.0.0.6", (), failure=Failure.HANDSHAKE_TIMEOUT)]),
        outcome("refused", [address("10.0.0.5", connect_failure=Failure.REFUSED)]),
        outcome("unresolved", [], resolution_failure=Failure.DNS_ERROR),
        silent("gone"),
        req=request(),
    )
    series, dropped = probe_series(API, observation, (), datetime.now(UTC))
    assert dropped == 0
    assert series["tlsfleet_probe_success"] == {
        (API, "ok"): 1.0,
        (API, "untrusted"): 0.0,
        (API, "half"): 0.0,
        (API, "refused"): 0.0,
        (API, "unresolved"): 0.0,
        (API, "gone"): 0.0,
    }
    # The verdict metric keeps its meaning: what the native client said, per agent that answered.
    assert series["tlsfleet_verdict_ok"][(API, "untrusted", "unknown_issuer")] == 0.0
    assert series["tlsfleet_verdict_ok"][(API, "unresolved", "no_chain")] == 0.0
    assert not any(agent == "gone" for _, agent, _ in series["tlsfleet_verdict_ok"])
    # A rejected chain was still negotiated: its version and cipher are known; a refused port has none.
    assert (API, "untrusted", "TLSv1.3") in series["tlsfleet_probe_tls_version_info"]
    assert (API, "ok", "TLS_AES_128_GCM_SHA256") in series["tlsfleet_probe_tls_cipher_info"]
    assert not any(agent == "refused" for _, agent, _ in series["tlsfleet_probe_tls_version_info"])
    assert {agent for _, agent in series["tlsfleet_probe_duration_seconds"]} == {
        "ok",
        "untrusted",
        "half",
        "refused",
        "unresolved",
        "gone",
    }
    phases = series["tlsfleet_probe_phase_duration_seconds"]
    assert phases[(API, "ok", "resolve")] == pytest.approx(0.001)
    assert phases[(API, "ok", "connect")] == pytest.approx(0.0005)
    assert (API, "gone", "resolve") not in phases


def test_expiry_per_certificate_and_the_earliest_of_the_chain(pki: LabPKI) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    leaf = pki.issue_leaf("api.example.test", not_after=at + timedelta(days=40))
    # The intermediate expires before the leaf: blackbox's earliest expiry is the chain's, not the leaf's.
    short = pki.issue_intermediate("Short Intermediate", not_after=at + timedelta(days=9))
    rotated = pki.issue_leaf("api.example.test", not_after=at + timedelta(days=60))
    observation = observe(
        outcome(
            "a1",
            [address("10.0.0.5", (leaf.der, short.der)), address("10.0.0.6", (rotated.der, pki.intermediate.der))],
        ),
        req=request(),
    )
    series, dropped = probe_series(API, observation, (), at)
    assert dropped == 0
    assert series["tlsfleet_probe_ssl_earliest_cert_expiry"] == {(API, "a1"): (at + timedelta(days=9)).timestamp()}
    assert series["tlsfleet_certificate_expiry_timestamp_seconds"] == {
        (API, "a1"): (at + timedelta(days=40)).timestamp()
    }
    certs = series["tlsfleet_ssl_cert_not_after"]
    assert len(certs) == 4
    for der in (leaf.der, short.der, rotated.der, pki.intermediate.der):
        s = summarize(der)
        assert certs[(API, "a1", s.sha256, s.subject, s.issuer, s.serial)] == s.not_after.timestamp()


def test_certificate_identities_are_capped_per_target_and_agent_and_the_drops_counted(pki: LabPKI) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    leaves = [pki.issue_leaf("api.example.test", not_after=at + timedelta(days=10 + n)) for n in range(5)]
    observation = observe(
        outcome("a1", [address(f"10.0.0.{n}", (leaf.der,)) for n, leaf in enumerate(reversed(leaves))]),
        outcome("a2", [address("10.0.0.1", (leaves[4].der,))]),
        req=request(),
    )
    series, dropped = probe_series(API, observation, (), at, max_certificates=3)
    assert dropped == 2
    kept = series["tlsfleet_ssl_cert_not_after"]
    # The earliest to expire stay, whatever order they were served in; each agent has its own room.
    assert sorted(v for k, v in kept.items() if k[1] == "a1") == [
        summarize(leaf.der).not_after.timestamp() for leaf in leaves[:3]
    ]
    assert [v for k, v in kept.items() if k[1] == "a2"] == [summarize(leaves[4].der).not_after.timestamp()]

    run = run_of(
        [TargetRun(target=API, observation=observation, findings=(), duration_ms=1)], agents("a1", "a2"), at=at
    )
    metrics = FleetMetrics(max_certificates_per_agent=3)
    metrics.observe_run(run)
    metrics.observe_run(run)
    served = Endpoint(metrics)
    try:
        found = served.families()
    finally:
        served.close()
    assert len(found["tlsfleet_ssl_cert_not_after"]) == 4
    assert found["tlsfleet_metrics_series_dropped_total"][labels(metric="tlsfleet_ssl_cert_not_after")] == 4.0
    with pytest.raises(ValueError, match="max_certificates_per_agent 0 is not accepted"):
        FleetMetrics(max_certificates_per_agent=0)


def test_build_and_process_info_are_exported() -> None:
    served = Endpoint(FleetMetrics())
    try:
        found = served.families()
    finally:
        served.close()
    [(build, value)] = found["tlsfleet_build_info"].items()
    assert value == 1.0
    build_labels = dict(build)
    assert build_labels["version"] == __version__
    assert build_labels["openssl"] == ssl.OPENSSL_VERSION
    assert build_labels["python"].count(".") == 2 and build_labels["grpcio"][0].isdigit()
    assert found["process_resident_memory_bytes"][()] > 0
    assert "process_cpu_seconds_total" in found
    assert "python_info" in found
