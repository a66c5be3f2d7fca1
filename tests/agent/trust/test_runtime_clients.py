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

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

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

_DIRS = "/usr/local/bin:/usr/bin:/bin"
JAVA, JAVAC, KEYTOOL, NODE = (shutil.which(c, path=_DIRS) for c in ("java", "javac", "keytool", "node"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
needs_java = pytest.mark.skipif(None in (JAVA, JAVAC, KEYTOOL), reason=f"no java, javac and keytool in {_DIRS}")
needs_node = pytest.mark.skipif(NODE is None, reason=f"no node executable in {_DIRS}")

JAVA_HOME = "JAVA_HOME in the agent's environment: /opt/jdk-17"
JAVA_CLIENT = r"""
import java.net.InetSocketAddress;
import java.net.Socket;
import javax.net.ssl.*;

public class TrustProbe {
    public static void main(String[] args) throws Exception {
        try (Socket plain = new Socket()) {
            plain.connect(new InetSocketAddress(args[0], Integer.parseInt(args[1])), 5000);
            plain.setSoTimeout(5000);
            SSLSocket tls = (SSLSocket) SSLContext.getDefault().getSocketFactory()
                .createSocket(plain, args[2], Integer.parseInt(args[1]), true);
            SSLParameters parameters = tls.getSSLParameters();
            parameters.setEndpointIdentificationAlgorithm("HTTPS");
            tls.setSSLParameters(parameters);
            tls.startHandshake();
            System.out.println("OK");
        } catch (SSLException e) {
            Throwable cause = e;
            while (cause.getCause() != null) cause = cause.getCause();
            System.out.println(cause.getClass().getName());
        }
    }
}
"""
NO_PATH = "sun.security.provider.certpath.SunCertPathBuilderException"
NODE_CLIENT = r"""
const socket = require("tls").connect({host: "127.0.0.1", port: Number(process.argv[1]), servername: process.argv[2]});
socket.setTimeout(5000, () => { console.log("TIMEOUT"); process.exit(0); });
socket.on("secureConnect", () => { console.log("OK"); socket.destroy(); });
socket.on("error", (e) => { console.log(e.code || String(e)); });
"""


@pytest.fixture(scope="session")
def java_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert JAVAC is not None
    classes = tmp_path_factory.mktemp("java-client")
    source = classes / "TrustProbe.java"
    source.write_text(JAVA_CLIENT)
    done = subprocess.run([JAVAC, "-d", str(classes), str(source)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return classes


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
    assert JAVA is not None
    argv = [JAVA, f"-Djavax.net.ssl.trustStore={truststore}", "-Djavax.net.ssl.trustStorePassword=changeit"]
    argv += ["-cp", str(classes), "TrustProbe", "127.0.0.1", str(port), NAME]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": _DIRS})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def node_says(env: dict[str, str], port: int) -> str:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", NODE_CLIENT, str(port), NAME], capture_output=True, text=True, timeout=20, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


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
