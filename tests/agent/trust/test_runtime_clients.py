"""What RUNTIME_STORE_DIFFERS says Java and Node.js would do, held against the real java and node: a lab TLS server
on loopback (leaf and intermediate), a tiny Java client (SSLSocket, endpoint identification "HTTPS", the JRE's
default trust manager reading the keystore named by javax.net.ssl.trustStore) and a tiny node client
(`tls.connect`, its default CA list plus NODE_EXTRA_CA_CERTS, checkServerIdentity), and the agent's verdict
for the same store, which is each runtime's own: Java's PKIX takes any certificate its keystore holds as the
trust anchor (an imported intermediate, or the server's own certificate), as the agent's partial chain does,
while node (OpenSSL underneath) wants a path to a self-signed root. test_runtime_semantics.py holds the weak
keys and digests. The Java client is compiled once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.agent.trust import runtime_clients
from tests.agent.trust.runtime_clients import DIRS as _DIRS
from tests.agent.trust.runtime_clients import JAVA, JAVAC, KEYTOOL, NODE, compile_java_client
from tests.judged import NAME, judged, store
from tests.outcomes import observe
from tlsfleet.agent.model import per_store
from tlsfleet.agent.trust.runtimes import RuntimeOptions, forget_answers
from tlsfleet.agent.trust.stores import KIND_JAVA, discover, load_store
from tlsfleet.coordinator.diagnosis.model import Cause, Finding
from tlsfleet.coordinator.diagnosis.trust import findings
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.observation import DiagnosisSettings
from tlsfleet.coordinator.outcomes import ProbeOutcome

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
needs_java = pytest.mark.skipif(None in (JAVA, JAVAC, KEYTOOL), reason=f"no java, javac and keytool in {_DIRS}")
needs_node = pytest.mark.skipif(NODE is None, reason=f"no node executable in {_DIRS}")

JAVA_HOME = "JAVA_HOME in the agent's environment: /opt/jdk-17"
NO_PATH = "sun.security.provider.certpath.SunCertPathBuilderException"


@pytest.fixture(scope="session")
def java_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_java_client(tmp_path_factory.mktemp("java-client"))


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Runtime Lab")


@pytest.fixture(scope="module")
def leaf(pki: LabPKI) -> Issued:
    return pki.issue_leaf(NAME)


@pytest.fixture(scope="module")
def server(pki: LabPKI, leaf: Issued) -> Iterator[TlsServer]:
    running = TlsServer(ServedIdentity.of(leaf, pki.intermediate)).start()
    try:
        yield running
    finally:
        running.stop()


def _chain(pki: LabPKI, leaf: Issued) -> tuple[bytes, bytes]:
    return leaf.der, pki.intermediate.der


def java_says(classes: Path, truststore: Path, port: int) -> str:
    """Java's "OK", or the class of the innermost cause of its refusal."""
    return runtime_clients.java_says(classes, truststore, port, NAME).split(": ", 1)[0]


def node_says(env: dict[str, str], port: int) -> str:
    return runtime_clients.node_says(env, port, NAME)[0]


def _keystore(path: Path, *certs: x509.Certificate) -> Path:
    entries = [pkcs12.PKCS12Certificate(c, f"entry-{i}".encode()) for i, c in enumerate(certs)]
    path.write_bytes(pkcs12.serialize_java_truststore(entries, serialization.BestAvailableEncryption(b"changeit")))
    return path


def _diagnosed(outcome: ProbeOutcome) -> list[Finding]:
    obs = observe(outcome)
    found = findings(obs, DiagnosisSettings.for_request(obs.request))
    return [f for f in found if f.cause is Cause.RUNTIME_STORE_DIFFERS]


def _java_host(pki: LabPKI, leaf: Issued, keystore: Path) -> tuple[ProbeOutcome, int]:
    """The host as its agent reports it: the system store holds the root, JAVA_HOME's cacerts is `keystore`."""
    java = load_store("java_home", keystore, kind=KIND_JAVA, runtime="java", found_by=JAVA_HOME, declared=True)
    outcome = judged("app-1", _chain(pki, leaf), [store("system", [pki.root.cert]), java], ip="127.0.0.1")
    assert outcome.result is not None
    verdict = next(s for s in per_store(outcome.result.addresses[0].stores) if s.store == "java_home")
    return outcome, verdict.reference_verify_code


@needs_java
def test_a_java_keystore_without_the_root_java_and_the_finding_reject(
    tmp_path: Path, java_client: Path, pki: LabPKI, leaf: Issued, server: TlsServer
) -> None:
    keystore = _keystore(tmp_path / "cacerts", LabPKI("Elsewhere").root.cert)
    assert java_says(java_client, keystore, server.port) == NO_PATH
    outcome, code = _java_host(pki, leaf, keystore)
    assert code == 20
    [finding] = _diagnosed(outcome)
    assert finding.summary.startswith(f"On app-1, Java under JAVA_HOME (its cacerts) rejects {NAME}:443")


@needs_java
def test_a_java_keystore_with_the_root_java_accepts_and_nothing_is_said(
    tmp_path: Path, java_client: Path, pki: LabPKI, leaf: Issued, server: TlsServer
) -> None:
    keystore = _keystore(tmp_path / "cacerts", pki.root.cert)
    assert java_says(java_client, keystore, server.port) == "OK"
    outcome, code = _java_host(pki, leaf, keystore)
    assert code == 0 and _diagnosed(outcome) == []


@needs_java
def test_a_java_keystore_holding_the_intermediate_java_accepts_and_nothing_is_said(
    tmp_path: Path, java_client: Path, pki: LabPKI, leaf: Issued, server: TlsServer
) -> None:
    keystore = _keystore(tmp_path / "cacerts", pki.intermediate.cert)
    assert java_says(java_client, keystore, server.port) == "OK"
    outcome, code = _java_host(pki, leaf, keystore)
    assert code == 0, "Java takes the intermediate as its anchor, and so does the agent for a Java store"
    assert _diagnosed(outcome) == []


@needs_java
def test_a_java_keystore_holding_the_server_certificate_java_and_the_agent_accept(
    tmp_path: Path, java_client: Path, pki: LabPKI, leaf: Issued, server: TlsServer
) -> None:
    keystore = _keystore(tmp_path / "cacerts", leaf.cert)
    assert java_says(java_client, keystore, server.port) == "OK"
    outcome, code = _java_host(pki, leaf, keystore)
    assert code == 0, "the server's own certificate in the keystore is Java's anchor, and the agent's"
    assert _diagnosed(outcome) == []


@needs_node
def test_node_extra_ca_certs_holding_the_intermediate_node_and_the_finding_reject(
    tmp_path: Path, pki: LabPKI, leaf: Issued, server: TlsServer
) -> None:
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    assert NODE is not None
    extra = write_pem(tmp_path / "extra.pem", pki.intermediate.cert_pem)
    env = {"PATH": str(Path(NODE).parent), "SSL_CERT_DIR": str(empty_dir), "NODE_EXTRA_CA_CERTS": str(extra)}
    assert node_says(env, server.port) == "UNABLE_TO_GET_ISSUER_CERT", "node, unlike Java, wants a root"
    forget_answers()
    found = discover(env, runtimes=RuntimeOptions(python_dirs=()))
    node = next(s for s in found.stores if s.info.name == "node")
    outcome = judged("app-1", _chain(pki, leaf), [store("system", [pki.root.cert]), node], ip="127.0.0.1")
    assert outcome.result is not None
    assert (
        next(s for s in per_store(outcome.result.addresses[0].stores) if s.store == "node").reference_verify_code == 2
    )
    [finding] = _diagnosed(outcome)
    assert finding.summary.startswith(f"On app-1, Node.js (its bundled roots) rejects {NAME}:443"), finding.summary
    assert "Java" not in finding.summary
