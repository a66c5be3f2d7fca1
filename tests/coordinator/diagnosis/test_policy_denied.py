"""Addresses an agent's probe policy refused: a warning when nothing was probed at all (never a quiet pass),
an info finding when other vantages or addresses were probed; never read as unreachable or as a handshake
that did not complete; the matrix cell names the rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.outcomes import address, observe, outcome
from tlsfleet.agent import exit_codes
from tlsfleet.agent.model import AddressResult, Failure
from tlsfleet.coordinator.cli.probe import exit_code_for
from tlsfleet.coordinator.diagnosis import policy_denied
from tlsfleet.coordinator.diagnosis.engine import RULES, diagnose
from tlsfleet.coordinator.diagnosis.model import CAUSE_TITLES, Cause, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import build_matrix

HOST = "api.example.test"
METADATA = "denied by policy: built-in deny 169.254.0.0/16 (link-local)"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes]:
    pki = LabPKI("Acme")
    return (pki.issue_leaf(HOST).der, pki.intermediate.der)


def denied(ip: str, message: str = METADATA) -> AddressResult:
    return replace(address(ip, connect_failure=Failure.DENIED_BY_POLICY), connect_error=message)


def test_the_rule_is_registered_and_its_cause_has_a_title() -> None:
    assert policy_denied.findings in RULES
    assert CAUSE_TITLES[Cause.POLICY_DENIED]


def test_every_vantage_denied_is_a_warning_that_nothing_was_probed() -> None:
    observation = observe(outcome("a", [denied("169.254.169.254")]), outcome("b", [denied("169.254.169.254")]))
    findings = diagnose(observation)
    [finding] = findings
    assert (finding.cause, finding.severity) == (Cause.POLICY_DENIED, Severity.WARNING)
    assert finding.summary.startswith("Nothing was probed: the probe policy of a and b refused every address")
    assert "built-in deny 169.254.0.0/16 (link-local)" in finding.summary
    assert finding.agents == ("a", "b") and finding.addresses == ("169.254.169.254",)
    assert finding.evidence[0].values == (("a@169.254.169.254", METADATA), ("b@169.254.169.254", METADATA))
    assert "--allow" in finding.fix and finding.reproduce == ("tlsfleet agents --agents a,b",)
    assert exit_code_for(observation, findings, Severity.WARNING) == exit_codes.PROBLEM


def test_some_vantages_denied_is_an_info_naming_them_and_the_rule(chain: tuple[bytes, bytes]) -> None:
    observation = observe(
        outcome("a", [address("10.0.0.1", chain)]),
        outcome("b", [denied("10.0.0.1", "denied by policy: deny 10.0.0.0/8")]),
    )
    findings = diagnose(observation)
    [finding] = findings
    assert (finding.cause, finding.severity) == (Cause.POLICY_DENIED, Severity.INFO)
    assert finding.agents == ("b",)
    assert finding.summary.startswith("b did not probe api.example.test:443 at 10.0.0.1")
    assert "(deny 10.0.0.0/8)" in finding.summary
    assert exit_code_for(observation, findings, Severity.WARNING) == exit_codes.OK


def test_one_address_denied_among_probed_ones_is_an_info(chain: tuple[bytes, bytes]) -> None:
    rows = [address("10.0.0.1", chain), denied("169.254.1.1")]
    [finding] = diagnose(observe(outcome("a", rows), outcome("b", rows)))
    assert (finding.cause, finding.severity) == (Cause.POLICY_DENIED, Severity.INFO)
    assert finding.addresses == ("169.254.1.1",)


def test_a_denied_address_is_neither_unreachable_nor_an_incomplete_handshake(chain: tuple[bytes, bytes]) -> None:
    only_denied = observe(outcome("a", [denied("169.254.169.254")]))
    causes = {f.cause for f in diagnose(only_denied)}
    assert Cause.UNREACHABLE not in causes and Cause.HANDSHAKE_INCOMPLETE not in causes
    # A real connect failure beside a denial is still reported, and only for the address that failed.
    refused = address("10.0.0.2", connect_failure=Failure.REFUSED)
    mixed = observe(outcome("a", [address("10.0.0.1", chain), refused, denied("169.254.1.1")]))
    [unreachable] = [f for f in diagnose(mixed) if f.cause is Cause.UNREACHABLE]
    assert unreachable.addresses == ("10.0.0.2",)


def test_the_matrix_cell_names_the_rule(chain: tuple[bytes, bytes]) -> None:
    matrix = build_matrix([outcome("a", [denied("169.254.169.254")]), outcome("b", [address("10.0.0.1", chain)])])
    first, second = matrix.rows
    assert first.cell("native") == METADATA and not first.ok
    assert second.ok
