"""Bad input stays bounded: recordings with a 200-certificate chain, a leaf with 10,000 SANs, and 5,000
outcomes are diagnosed to a handful of findings of bounded size. Speed is measured by
bench/bench_diagnosis.py, not asserted here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.outcomes import NOW_NS, address, observe, outcome, silent
from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.coordinator.diagnosis.engine import MAX_PER_CAUSE, bounded, diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Evidence, Finding, Severity
from tlsfleet.coordinator.json_output import certificate_json
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import build_matrix
from tlsfleet.coordinator.observation import Observation
from tlsfleet.coordinator.recording import load, save

HOST = "api.example.test"
NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
SUMMARY_LIMIT = 4000  # characters: a sentence a person reads, however long the lists behind it


def _round_trip(observation: Observation, tmp_path: Path) -> Observation:
    path = tmp_path / "recording.json"
    save(path, observation)
    return load(path)


# The causes whose wording these tests hold to SUMMARY_LIMIT (the rules of validity, names, clock, endpoints,
# interception, sni); the count of findings is bounded for every cause.
WORDED = frozenset(
    {
        Cause.EXPIRED,
        Cause.NOT_YET_VALID,
        Cause.EXPIRING_SOON,
        Cause.HOSTNAME_MISMATCH,
        Cause.MALFORMED_CERTIFICATE,
        Cause.CLOCK_SKEW,
        Cause.DNS_DIFFERENCE,
        Cause.INCONSISTENT_BACKENDS,
        Cause.TLS_INTERCEPTION,
        Cause.SNI_DIFFERENCE,
    }
)


def _bounded_text(findings: tuple[Finding, ...]) -> None:
    for f in findings:
        if f.cause not in WORDED:
            continue
        assert len(f.summary) <= SUMMARY_LIMIT, (f.cause, len(f.summary))
        assert len(f.fix) <= SUMMARY_LIMIT, (f.cause, len(f.fix))


def test_a_200_certificate_chain_gives_a_handful_of_findings(pki: LabPKI, tmp_path: Path) -> None:
    bundled = LabPKI("Bundled")
    leaf = pki.issue_leaf(HOST, not_after=NOW + timedelta(days=20))
    extras = [
        bundled.issue_intermediate(f"Bundled {i}", not_after=NOW + timedelta(days=3 + i % 25)) for i in range(198)
    ]
    chain = (leaf.der, pki.intermediate.der, *(c.der for c in extras))
    observation = _round_trip(observe(*(outcome(f"web-{i}", [address("10.0.0.1", chain)]) for i in range(3))), tmp_path)
    found = diagnose(observation)
    assert len(found) <= 5, [f.cause for f in found]
    (soon,) = [f for f in found if f.cause is Cause.EXPIRING_SOON]
    assert soon.severity is Severity.CRITICAL and "and 198 more certificates" in soon.summary
    assert f"leaf 'CN={HOST}'" in soon.summary, "the leaf is named among the rest"
    _bounded_text(found)
    assert sum(len(e.values) for e in soon.evidence) <= 3 + 10 + 2


def _many_sans(pki: LabPKI, n: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(f"host-{i}.example.test") for i in range(n)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "many.example.test")]))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(pki.intermediate.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_leaf_with_10000_sans_is_listed_by_its_first_few(pki: LabPKI, tmp_path: Path) -> None:
    leaf = _many_sans(pki, 10_000)
    chain = (leaf, pki.intermediate.der)
    outcomes = [outcome(f"web-{i}", [address("10.0.0.1", chain, native=Verdict.HOSTNAME_MISMATCH)]) for i in range(50)]
    observation = _round_trip(observe(*outcomes), tmp_path)
    found = diagnose(observation)
    assert len(found) <= 5
    (mismatch,) = [f for f in found if f.cause is Cause.HOSTNAME_MISMATCH]
    assert "(+9990 more)" in mismatch.summary
    _bounded_text(found)
    assert all(len(v) <= SUMMARY_LIMIT for f in found if f.cause in WORDED for e in f.evidence for _w, v in e.values)
    cell = build_matrix(observation.outcomes).rows[0].cell("leaf")
    assert cell.startswith("host-0.example.test, host-1.example.test") and "+9995 more" in cell
    assert len(certificate_json(leaf)["san"]) == 10_000, "--json keeps every name"


@pytest.mark.slow  # a fleet-sized diagnosis: a second or two
def test_5000_outcomes_are_diagnosed_to_a_bounded_list(pki: LabPKI) -> None:
    leaves = [(pki.issue_leaf(HOST).der, pki.intermediate.der) for _ in range(20)]
    expired = (
        pki.issue_leaf(HOST, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=1)).der,
        pki.intermediate.der,
    )
    outcomes = []
    for n in range(5000):
        if n % 100 == 99:
            outcomes.append(silent(f"agent-{n}"))
            continue
        region = n % 50
        lacking = n % 10 == 3
        verdict = Verdict.UNKNOWN_ISSUER if lacking else Verdict.OK
        first = address(f"10.{region}.0.1", leaves[region % 20], native=verdict)
        stale = region == 0 and not lacking
        second = address(f"10.{region}.0.2", expired if region == 0 else leaves[region % 20], native=verdict)
        if stale:
            second = address(f"10.{region}.0.2", expired, native=Verdict.EXPIRED)
        offset = 2 * 86_400_000.0 if n % 25 == 7 else float(n % 5)
        outcomes.append(outcome(f"agent-{n}", [first, second], offset_ms=offset))
    found = diagnose(observe(*outcomes))
    assert 0 < len(found) <= 30, [f.cause for f in found]
    per_kind: dict[tuple[Cause, Severity], int] = {}
    for f in found:
        per_kind[(f.cause, f.severity)] = per_kind.get((f.cause, f.severity), 0) + 1
    assert max(per_kind.values()) <= MAX_PER_CAUSE
    clock = [f for f in found if f.cause is Cause.CLOCK_SKEW]
    assert sum(len(f.agents) for f in clock) == 200, "every skewed vantage is still named"
    _bounded_text(found)


@pytest.mark.slow  # a fleet-sized diagnosis: a second or two
def test_5000_distinct_leaves_of_one_ca_are_one_trust_question(pki: LabPKI) -> None:
    """Every vantage served its own leaf of the same CA (the stores' verified paths say so); a tenth lack the
    root. That is one private CA missing on 500 hosts, not 500 chains nobody trusts."""
    inter, root = fingerprint(pki.intermediate.der), fingerprint(pki.root.der)
    outcomes = []
    for n in range(5000):
        leaf = pki.issue_leaf(HOST).der
        lacking = n % 10 == 3
        verdict = Verdict.UNKNOWN_ISSUER if lacking else Verdict.OK
        path = (fingerprint(leaf), inter, root)
        outcomes.append(
            outcome(
                f"agent-{n}", [address("10.0.0.1", (leaf, pki.intermediate.der), native=verdict, verified_path=path)]
            )
        )
    found = diagnose(observe(*outcomes))
    assert [(f.cause, f.severity) for f in found] == [(Cause.PRIVATE_CA_NOT_TRUSTED, Severity.CRITICAL)]
    assert len(found[0].agents) == 500 and len(found[0].summary) <= SUMMARY_LIMIT


def test_findings_beyond_the_cap_are_merged_and_name_everyone() -> None:
    many = [
        Finding(
            Cause.CLOCK_SKEW,
            Severity.WARNING,
            f"agent-{i}'s clock is off",
            (f"agent-{i}",),
            evidence=(Evidence("clock offset", ((f"agent-{i}", "+2 d"),)),),
            fix=f"Fix agent-{i}.",
            prediction=True,
        )
        for i in range(12)
    ]
    other = Finding(Cause.EXPIRED, Severity.CRITICAL, "expired", ("agent-0",))
    out = bounded([*many, other])
    clock = [f for f in out if f.cause is Cause.CLOCK_SKEW]
    assert len(clock) == MAX_PER_CAUSE and other in out
    merged = next(f for f in clock if len(f.agents) > 1)
    assert merged.agents == tuple(f"agent-{i}" for i in range(MAX_PER_CAUSE - 1, 12))
    assert merged.prediction and merged.summary.startswith("8 findings of this cause and severity")
    assert len(merged.evidence[0].values) == 8
    assert bounded(many[:MAX_PER_CAUSE]) == many[:MAX_PER_CAUSE], "up to the cap, nothing is merged"


@pytest.mark.parametrize("limit", [2, MAX_PER_CAUSE])
def test_the_cap_keeps_the_highest_ranked_findings_as_they_are(limit: int) -> None:
    wide = Finding(Cause.CLOCK_SKEW, Severity.WARNING, "wide", ("a", "b", "c"))
    narrow = [Finding(Cause.CLOCK_SKEW, Severity.WARNING, f"n{i}", (f"n{i}",)) for i in range(limit + 2)]
    out = bounded([*narrow, wide], limit)
    assert out[0] is wide and len(out) == limit
