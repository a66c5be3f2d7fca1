"""The chain listing groups what was served by chain, keeps the order first seen, and says who got none."""

from __future__ import annotations

from tests.outcomes import address, observe, outcome, silent
from tlsfleet.agent.model import Failure, Verdict
from tlsfleet.coordinator.cli.chain import render, served_chains
from tlsfleet.coordinator.lab.pki import LabPKI


def test_vantages_served_the_same_chain_are_listed_together() -> None:
    pki = LabPKI("Group")
    ours = (pki.issue_leaf("api.example.test").der, pki.intermediate.der)
    proxy = LabPKI("Proxy")
    theirs = (proxy.issue_leaf("api.example.test").der,)
    observation = observe(
        outcome("edge-1", [address("10.0.0.1", ours)]),
        outcome("edge-2", [address("10.0.0.2", theirs, native=Verdict.UNKNOWN_ISSUER)]),
        outcome("edge-3", [address("10.0.0.1", ours), address("10.0.0.9", connect_failure=Failure.REFUSED)]),
        silent("edge-4"),
    )
    chains, without = served_chains(observation)
    assert [c.chain for c in chains] == [ours, theirs]
    assert chains[0].seen_by == ("edge-1@10.0.0.1 (ok)", "edge-3@10.0.0.1 (ok)")
    assert chains[1].seen_by == ("edge-2@10.0.0.2 (unknown_issuer)",)
    assert without == ("edge-3@10.0.0.9: no chain (refused: refused)", "edge-4: did not answer (timeout)")
    lines = list(render(chains, without, "pem"))
    assert lines[0] == "# chain 1 of 2: 2 certificate(s), TLSv1.3"
    assert lines.count("-----BEGIN CERTIFICATE-----") == 3
    assert lines[-1] == "# edge-4: did not answer (timeout)"


def test_a_certificate_the_parser_refuses_is_still_shown() -> None:
    observation = observe(outcome("edge-1", [address("10.0.0.1", (b"\x30\x03\x02\x01\x00",))]))
    chains, _ = served_chains(observation)
    lines = list(render(chains, (), "pem"))
    assert any("not a certificate the parser accepts" in line for line in lines)
    assert "-----BEGIN CERTIFICATE-----" in lines
