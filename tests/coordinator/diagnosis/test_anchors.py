"""A root that expired in some hosts' stores behind a cross-signed chain: loud where clients fail, quiet where
they verify through the current root. Verdicts from OpenSSL's own verifier (tests.judged)."""

from __future__ import annotations

import pytest

from tests.judged import NAME, der, judged, store
from tests.outcomes import observe
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, cross_signed, expired_root
from tlsfleet.coordinator.outcomes import ProbeOutcome


class CrossSigned:
    """The current root 'New Root CA' cross-signed by 'Old Root CA', which expired 30 days ago; the server sends
    leaf, intermediate and the cross-sign, as Let's Encrypt's long chain did."""

    def __init__(self) -> None:
        self.new = LabPKI("New")
        self.old: Issued = expired_root("Old Root CA")
        cross = cross_signed(self.new.root, by=self.old)
        self.chain = (der(self.new.issue_leaf(NAME).cert), self.new.intermediate.der, der(cross.cert))

    def host(self, agent: str, *roots: Issued, ip: str = "10.0.0.1") -> ProbeOutcome:
        return judged(agent, self.chain, [store("system", [r.cert for r in roots])], ip=ip)


@pytest.fixture(scope="module")
def lab() -> CrossSigned:
    return CrossSigned()


def _loud(outcomes: list[ProbeOutcome]) -> list[Finding]:
    return [f for f in diagnose(observe(*outcomes)) if f.severity >= Severity.WARNING]


def test_hosts_with_only_the_old_root_fail_and_are_told_to_install_the_new_one(lab: CrossSigned) -> None:
    legacy = lab.host("legacy-1", lab.old)
    current = lab.host("current-1", lab.new.root, ip="10.0.0.2")
    assert legacy.result is not None and legacy.result.addresses[0].native.verify_code == 10
    [finding] = _loud([legacy, current])
    assert finding.cause is Cause.EXPIRED and finding.severity is Severity.CRITICAL
    assert finding.agents == ("legacy-1",)
    assert finding.summary.startswith(
        "On legacy-1, OpenSSL clients reject api.example.test:443 (verify error 10, certificate has expired): in "
        "its trust store the served chain ends at 'CN=Old Root CA', which has expired"
    )
    assert "current-1 verifies it through 'CN=New Root CA', which that store lacks" in finding.summary
    assert finding.fix.startswith("Install the current root 'CN=New Root CA' in the system trust store of legacy-1")
    assert any(c.startswith("openssl verify -attime ") for c in finding.reproduce)


def test_every_host_with_the_new_root_is_quiet_though_the_cross_sign_is_still_sent(lab: CrossSigned) -> None:
    both = lab.host("current-1", lab.new.root, lab.old)  # the old root left beside the new one
    assert _loud([lab.host("current-2", lab.new.root, ip="10.0.0.2"), both]) == []


def test_no_trust_or_runtime_finding_claims_the_store_trusts_an_expired_root(lab: CrossSigned) -> None:
    causes = {f.cause for f in diagnose(observe(lab.host("legacy-1", lab.old), lab.host("legacy-2", lab.old)))}
    assert causes == {Cause.EXPIRED}
