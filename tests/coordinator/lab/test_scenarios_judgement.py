"""The judgement scenarios end to end: real servers and proxies, real agent processes (one with its clock
three days ahead), the real CLI (once with its own clock 40 days ahead), and the top finding each must give."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.coordinator.lab.lab_runs import checked_run, clean_fleet
from tlsfleet.agent.trust.libcrypto import security_level
from tlsfleet.coordinator.lab.fleet import LabFleet
from tlsfleet.coordinator.lab.ground_truth import openssl_verify
from tlsfleet.coordinator.lab.pki import write_pem
from tlsfleet.coordinator.lab.scenarios import Scenario, scenario_address
from tlsfleet.coordinator.lab.scenarios_judgement import (
    JUDGEMENT_AGENTS,
    JUDGEMENT_SCENARIOS,
    POLICY_CODES,
    judgement_scenario,
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    yield from clean_fleet(
        tmp_path_factory.mktemp("judgement-fleet"), agents=JUDGEMENT_AGENTS, scenarios=JUDGEMENT_SCENARIOS
    )


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.name) for s in JUDGEMENT_SCENARIOS])
def test_judgement_top_finding(fleet: LabFleet, scenario: Scenario, tmp_path: Path) -> None:
    if scenario.name == "weak-ca-key" and security_level() < 2:
        pytest.skip(f"weak-ca-key: this host's OpenSSL security level {security_level()} accepts RSA 1024 keys")
    run = checked_run(fleet, scenario, findings_reported=False)
    assert "Traceback" not in run.probe.stderr, run.probe.stderr
    assert run.symptom_problem is None, f"{scenario.name} ({scenario.story}): {run.symptom_problem}"
    assert run.finding_problem is None, f"{scenario.name} ({scenario.story}) on {run.target}: {run.finding_problem}"
    findings = run.probe.findings() or []
    if scenario.expect.cause is None:
        assert run.probe.exit_code == 0, run.probe.stderr
    else:
        assert run.probe.exit_code in (1, 3), f"a finding was made, yet exit code {run.probe.exit_code}"
    # Bounded output: a handful of findings whatever the chain length or the number of certificates.
    assert len(findings) <= 8, [f["cause"] for f in findings]
    causes = [f["cause"] for f in findings]
    if scenario.name.startswith("dns-steered"):
        assert "dns_difference" in causes, "the DNS difference is said beside the interception"
    if scenario.name == "coordinator-clock-ahead":
        assert not {"expired", "not_yet_valid"} & set(causes), findings
    if scenario.name == "malformed-key-usage":
        assert "hostname_mismatch" not in causes, findings
    if scenario.name in POLICY_CODES:
        _agrees_with_openssl_verify(fleet, scenario, run.probe.vantages(), tmp_path)


def _agrees_with_openssl_verify(
    fleet: LabFleet, scenario: Scenario, vantages: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The served chain, verified by `openssl verify` against the root at this host's security level, gets
    the code the agents' native clients reported."""
    root = write_pem(tmp_path / "root.pem", fleet.acme.root_pem())
    for agent in scenario.agents:
        for address in vantages[agent]["result"]["addresses"]:
            chain = [base64.b64decode(c) for c in address["chain"]]
            leaf, untrusted = tmp_path / "leaf.pem", tmp_path / "untrusted.pem"
            leaf.write_bytes(_pem(chain[0]))
            untrusted.write_bytes(b"".join(_pem(der) for der in chain[1:]))
            truth = openssl_verify(leaf, untrusted, cafile=str(root), name=scenario.host, auth_level=security_level())
            assert truth.code == POLICY_CODES[scenario.name] == address["native"]["verify_code"], truth.output


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_catalogue_is_consistent() -> None:
    names = [s.name for s in JUDGEMENT_SCENARIOS]
    assert len(set(names)) == len(names)
    agents = {a.name for a in JUDGEMENT_AGENTS}
    for scenario in JUDGEMENT_SCENARIOS:
        assert set(scenario.agents) <= agents, scenario.name
        assert set(scenario.expect.agents) <= set(scenario.agents), scenario.name
        assert scenario.story.endswith((".", ":")), scenario.name
        assert "root" not in scenario.requires({a.name: a for a in JUDGEMENT_AGENTS}), scenario.name
    index = names.index("ip-target") + 1
    assert judgement_scenario("ip-target").host == scenario_address(index, 1)
    assert "libfaketime" in judgement_scenario("coordinator-clock-ahead").requires(
        {a.name: a for a in JUDGEMENT_AGENTS}
    )
    with pytest.raises(KeyError, match="ip-target"):
        judgement_scenario("no-such-scenario")
