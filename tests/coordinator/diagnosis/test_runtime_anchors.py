"""What a Java or Node store's verdict lets RUNTIME_STORE_DIFFERS say: the verdicts are openssl verify's with that
store (tests/judged.py), while Java's PKIX takes any certificate its store holds as the trust anchor, and Node
(OpenSSL underneath) wants a root. tests/agent/trust/test_runtime_clients.py holds these cases against the real
java and node."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography import x509

from tests.judged import NAME, der, judged, store
from tests.outcomes import observe
from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import runtimes
from tlsfleet.coordinator.diagnosis.model import Cause, Finding
from tlsfleet.coordinator.diagnosis.trust import findings
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome

JAVA_HOME = "JAVA_HOME in the agent's environment: /opt/jdk-17"
JAVA_CACERTS = "/opt/jdk-17/lib/security/cacerts"
NODE_ASKED = "node v20.20.2 at /usr/bin/node (--runtime node=/usr/bin/node): bundled roots (144)"


class Host:
    """A private CA whose root the host's system store holds; a runtime store holds other certificates."""

    def __init__(self) -> None:
        self.private = LabPKI("Acme Internal")
        self.public = LabPKI("Public Web")
        self.leaf = self.private.issue_leaf(NAME).cert
        self.chain = (der(self.leaf), self.private.intermediate.der)

    def outcome(self, runtime: str, *holds: x509.Certificate) -> ProbeOutcome:
        system = store("system", [self.public.root.cert, self.private.root.cert])
        certs = [self.public.root.cert, *holds]
        if runtime == "java":
            other = store(
                "java_home", certs, runtime="java", found_by=JAVA_HOME, kind="java-keystore", path=JAVA_CACERTS
            )
        else:
            other = store("node", certs, runtime="node", found_by=NODE_ASKED, kind="node", path="/usr/bin/node")
        return judged("app-1", self.chain, [system, other])


@pytest.fixture
def as_openssl_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores judged as `openssl verify` at the host's level, as agents did before they judged a Java store as
    Java's PKIX does: the coordinator still reads such reports."""
    monkeypatch.setattr(runtimes, "verification_rules", lambda kind, path: runtimes.HOST_RULES)


def _run(obs: Observation) -> list[Finding]:
    return [
        f for f in findings(obs, DiagnosisSettings.for_request(obs.request)) if f.cause is Cause.RUNTIME_STORE_DIFFERS
    ]


def _code(outcome: ProbeOutcome, name: str) -> int:
    assert outcome.result is not None
    return next(s.reference_verify_code for s in outcome.result.addresses[0].stores if s.store == name)


@pytest.mark.usefixtures("as_openssl_verify")
def test_a_java_store_holding_the_intermediate_is_not_said_to_reject() -> None:
    host = Host()
    outcome = host.outcome("java", host.private.intermediate.cert)
    assert _code(outcome, "java_home") == 2, "openssl verify: the store's intermediate has no root above it"
    assert _run(observe(outcome)) == [], "Java takes the intermediate its keystore holds as the anchor"


def test_a_java_store_holding_the_intermediate_or_the_leaf_is_judged_ok_as_java_does() -> None:
    host = Host()
    for holds in (host.private.intermediate.cert, host.leaf):
        outcome = host.outcome("java", holds)
        assert _code(outcome, "java_home") == 0, "a partial chain to a certificate the keystore holds, as Java's PKIX"
        assert _run(observe(outcome)) == []


def test_a_node_store_holding_the_intermediate_is_still_said_to_reject() -> None:
    host = Host()
    outcome = host.outcome("node", host.private.intermediate.cert)
    assert _code(outcome, "node") == 2
    [finding] = _run(observe(outcome))
    assert finding.summary.startswith("On app-1, Node.js (its bundled roots) rejects api.example.test:443")
    assert "Java" not in finding.summary


@pytest.mark.usefixtures("as_openssl_verify")
def test_a_java_gap_says_a_pinned_server_certificate_would_still_be_trusted() -> None:
    host = Host()
    for outcome in (host.outcome("java"), host.outcome("java", host.leaf)):
        assert _code(outcome, "java_home") == 20, "openssl verify gives the same code with and without the leaf"
        [finding] = _run(observe(outcome))
        assert finding.summary.startswith("On app-1, Java under JAVA_HOME (its cacerts) rejects api.example.test:443")
        assert "Java would still accept it where its keystore holds the server's own certificate" in finding.summary


@pytest.mark.usefixtures("as_openssl_verify")
def test_an_older_recording_without_the_reference_code_reads_the_agent_time_code() -> None:
    host = Host()
    outcome = host.outcome("java", host.private.intermediate.cert)
    assert outcome.result is not None
    address = outcome.result.addresses[0]
    stores = tuple(replace(s, reference_verify_code=0) for s in address.stores)
    assert all(s.at_reference_time is s.at_agent_time for s in stores)
    older = replace(outcome, result=replace(outcome.result, addresses=(replace(address, stores=stores),)))
    assert _run(observe(older)) == []
    assert Verdict.UNKNOWN_ISSUER in {s.at_reference_time for s in stores}


def test_a_keystore_named_itself_is_named_as_such_not_as_the_system_cacerts() -> None:
    host = Host()
    system = store("system", [host.public.root.cert, host.private.root.cert])
    named = "/srv/app/truststore.p12 (--runtime java=/srv/app/truststore.p12)"
    java = store("java", [host.public.root.cert], runtime="java", found_by=named, kind="java-keystore")
    java = replace(java, info=replace(java.info, path="/srv/app/truststore.p12"))
    [finding] = _run(observe(judged("app-1", host.chain, [system, java])))
    assert finding.summary.startswith("On app-1, Java with the keystore /srv/app/truststore.p12 rejects"), (
        finding.summary
    )
    assert "the system cacerts" not in finding.summary
