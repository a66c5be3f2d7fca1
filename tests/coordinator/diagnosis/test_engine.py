"""The engine as a whole: every rule runs, findings are ranked, and the precision rules hold end to end."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.outcomes import address, observe, outcome, silent
from tlsfleet.agent.model import Failure, Verdict
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Severity
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.recording import save


def chain_for(pki: LabPKI, **kwargs: object) -> tuple[bytes, ...]:
    leaf = pki.issue_leaf("api.example.test", **kwargs)
    return (leaf.der, pki.intermediate.der)


def test_healthy_fleet_raises_nothing_of_warning_or_worse(pki: LabPKI) -> None:
    chain = chain_for(pki)
    findings = diagnose(observe(*(outcome(f"web-{i}", [address("127.0.0.2", chain)]) for i in range(5))))
    assert [f for f in findings if f.severity >= Severity.WARNING] == []


def test_findings_are_ranked_by_severity_then_breadth(pki: LabPKI) -> None:
    expiring = chain_for(pki, not_after=datetime.now(UTC) + timedelta(days=20))
    observation = observe(
        # every vantage sees a certificate expiring in 20 days (warning, 4 vantages)
        outcome("a", [address("127.0.0.2", expiring)]),
        outcome("b", [address("127.0.0.2", expiring)]),
        outcome(
            "c", [address("127.0.0.2", expiring, stores={"system": Verdict.OK, "certifi": Verdict.UNKNOWN_ISSUER})]
        ),
        # one vantage is 2 days ahead, but nothing flips (warning, 1 vantage)
        outcome("d", [address("127.0.0.2", expiring)], offset_ms=2 * 86_400_000),
        silent("e", VantageState.OFFLINE),
    )
    findings = diagnose(observation)
    ranks = [(int(f.severity), len(f.agents)) for f in findings]
    assert ranks == sorted(ranks, key=lambda r: (-r[0], -r[1]))
    causes = [f.cause for f in findings]
    assert causes[0] is Cause.EXPIRING_SOON
    assert Cause.CLOCK_SKEW in causes and Cause.RUNTIME_STORE_DIFFERS in causes
    assert causes[-1] is Cause.VANTAGE_UNAVAILABLE


def test_one_failing_vantage_never_blames_the_server(pki: LabPKI) -> None:
    chain = chain_for(pki)
    observation = observe(
        outcome("good-1", [address("127.0.0.2", chain)]),
        outcome("good-2", [address("127.0.0.2", chain)]),
        outcome("bad", [address("127.0.0.2", chain, native=Verdict.UNKNOWN_ISSUER)]),
    )
    findings = diagnose(observation)
    assert findings[0].cause is Cause.PRIVATE_CA_NOT_TRUSTED
    assert findings[0].agents == ("bad",)
    server_side = {
        Cause.EXPIRED,
        Cause.NOT_YET_VALID,
        Cause.HOSTNAME_MISMATCH,
        Cause.INCOMPLETE_CHAIN,
        Cause.UNTRUSTED_CHAIN,
    }
    assert not [f for f in findings if f.cause in server_side]


def test_when_every_vantage_agrees_no_environment_is_blamed(pki: LabPKI) -> None:
    expired = chain_for(
        pki, not_before=datetime.now(UTC) - timedelta(days=90), not_after=datetime.now(UTC) - timedelta(days=2)
    )
    observation = observe(
        *(outcome(f"web-{i}", [address("127.0.0.2", expired, native=Verdict.EXPIRED)]) for i in range(3))
    )
    findings = diagnose(observation)
    assert findings[0].cause is Cause.EXPIRED
    assert set(findings[0].agents) == {"web-0", "web-1", "web-2"}
    environmental = {
        Cause.PRIVATE_CA_NOT_TRUSTED,
        Cause.RUNTIME_STORE_DIFFERS,
        Cause.CLOCK_SKEW,
        Cause.DNS_DIFFERENCE,
        Cause.TLS_INTERCEPTION,
    }
    assert not [f for f in findings if f.cause in environmental]


def test_nobody_answering_says_so_and_nothing_else(pki: LabPKI) -> None:
    findings = diagnose(observe(silent("a"), silent("b", VantageState.REFUSED)))
    assert {f.cause for f in findings} == {Cause.VANTAGE_UNAVAILABLE}
    assert all(f.severity is Severity.INFO for f in findings)


def test_refused_everywhere_is_a_critical_network_fact(pki: LabPKI) -> None:
    findings = diagnose(observe(*(outcome(n, [address("127.0.0.9", connect_failure=Failure.REFUSED)]) for n in "ab")))
    assert findings[0].cause is Cause.UNREACHABLE and findings[0].severity is Severity.CRITICAL


@pytest.mark.e2e  # the real CLI
def test_diagnose_command_reads_a_recording(pki: LabPKI, tmp_path: Path) -> None:
    chain = chain_for(pki)
    recording = tmp_path / "case.json"
    save(
        recording,
        observe(
            outcome("good", [address("127.0.0.2", chain)]),
            outcome("bad", [address("127.0.0.2", chain, native=Verdict.UNKNOWN_ISSUER)]),
        ),
    )
    done = subprocess.run(
        [*tlsfleet_command(), "diagnose", str(recording), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["findings"][0]["cause"] == "private_ca_not_trusted"
    assert report["findings"][0]["agents"] == ["bad"]
    assert {v["agent"] for v in report["vantages"]} == {"good", "bad"}
    relaxed = subprocess.run(
        [*tlsfleet_command(), "diagnose", str(recording), "--fail-on", "critical"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert relaxed.returncode == 1
    assert "private_ca_not_trusted" in relaxed.stdout


@pytest.mark.e2e  # the real CLI
def test_diagnose_command_names_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("[]")
    done = subprocess.run([*tlsfleet_command(), "diagnose", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "not a tlsfleet recording" in done.stderr


def test_a_rule_that_fails_costs_only_its_own_findings(pki: LabPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one rule, met on an observation nobody foresaw, is logged with its traceback; the other rules
    still speak, and a failing host still gets a finding."""
    import structlog

    from tlsfleet.coordinator.diagnosis import engine

    def broken(observation: object, settings: object) -> list[object]:
        raise KeyError("a field no rule expected")

    chain = chain_for(pki, not_after=datetime.now(UTC) + timedelta(days=20))
    observation = observe(
        outcome("a", [address("127.0.0.2", chain)]),
        outcome("b", [address("127.0.0.2", chain, native=Verdict.UNKNOWN_ISSUER)]),
    )
    expected = {f.cause for f in diagnose(observation)}
    monkeypatch.setattr(engine, "RULES", (broken, *engine.RULES))
    with structlog.testing.capture_logs() as events:
        findings = diagnose(observation)
    assert {f.cause for f in findings} == expected
    [event] = [e for e in events if e["event"] == "diagnosis_rule_failed"]
    assert event["log_level"] == "error"
    assert event["rule"].endswith("broken") and event["error"] == "KeyError: 'a field no rule expected'"
    assert event["target"] == f"{observation.request.target.host}:{observation.request.target.port}"
    # Every rule failing: the failing host is still named, by the finding that says nothing explained it.
    monkeypatch.setattr(engine, "RULES", (broken,))
    with structlog.testing.capture_logs():
        alone = diagnose(observation)
    assert [f.agents for f in alone if f.severity >= Severity.WARNING] == [("b",)]
