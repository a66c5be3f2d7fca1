"""Node's and Java's own verification rules, held against the real node and java: a lab chain with a weak key
or digest (RSA-1024, SHA-1, MD5, P-192, P-224; leaf or intermediate) served by `openssl s_server` on loopback
at security level 0 (so that the server itself refuses nothing), a tiny node client (`tls.connect`) and a tiny
Java client (SSLSocket, endpoint identification "HTTPS", a keytool-built trustStore), and the agent's verdict
for the node or Java store must agree with what the client concluded.

Node verifies at its own security level (its bundled OpenSSL's default 1, or what the `nodejs_conf` section of
its OpenSSL configuration sets; `openssl_conf` only with --openssl-shared-config), not the host's. Java has no
security level: its jdk.certpath.disabledAlgorithms (and jdk.tls.disabledAlgorithms) decide, and any
certificate its keystore holds is a trust anchor.

Not covered against real java: the jdkCA constraint (SHA-1 under a root the JDK ships), which would need a lab
root in the JRE's own cacerts."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.agent.trust import runtime_clients
from tests.agent.trust.runtime_clients import DIRS as _DIRS
from tests.agent.trust.runtime_clients import JAVA, JAVAC, KEYTOOL, NODE, compile_java_client
from tests.judged import judged, store, with_native
from tests.outcomes import observe
from tlsfleet.agent.model import StoreVerdict, Verdict
from tlsfleet.agent.trust import libcrypto, runtimes
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.runtimes import RuntimeOptions, forget_answers
from tlsfleet.agent.trust.stores import KIND_JAVA, LoadedStore, discover, load_store
from tlsfleet.agent.trust.verify import judge_against_stores
from tlsfleet.coordinator.diagnosis.model import Severity
from tlsfleet.coordinator.diagnosis.policy import findings as policy_findings
from tlsfleet.coordinator.lab import pki as lab_pki
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem
from tlsfleet.coordinator.observation import DiagnosisSettings

OPENSSL = shutil.which("openssl", path=_DIRS)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(OPENSSL is None, reason=f"no openssl in {_DIRS} to serve weak chains"),
]
needs_node = pytest.mark.skipif(NODE is None, reason=f"no node executable in {_DIRS}")
needs_java = pytest.mark.skipif(None in (JAVA, JAVAC, KEYTOOL), reason=f"no java, javac and keytool in {_DIRS}")
NAME = "weak.test"
JAVA_HOME = "JAVA_HOME in the agent's environment: /opt/jdk-17"
CASES = ("ok", "rsa1024_leaf", "sha1_leaf", "md5_leaf", "sha1_int", "md5_int", "rsa1024_int", "p192_int", "p224_int")

WEAK = (66, 67, 68)  # X509_V_ERR_EE_KEY_TOO_SMALL, CA_KEY_TOO_SMALL, CA_MD_TOO_WEAK


# --- the lab: weak chains and a server that serves them -------------------------------------------------


def _resigned(issued: Issued, issuer: Issued, digest: str) -> Issued:
    """The certificate signed again by `issuer` with `digest` (sha1, md5), by `openssl x509`."""
    with tempfile.TemporaryDirectory(prefix="tlsfleet-weak-") as directory:
        work = Path(directory)
        write_pem(work / "in.pem", issued.cert_pem)
        write_pem(work / "s.key", issued.key_pem)
        write_pem(work / "ca.pem", issuer.cert_pem)
        write_pem(work / "ca.key", issuer.key_pem)
        keep = ("-copy_extensions", "copyall")
        steps = [
            ["x509", "-x509toreq", "-in", "in.pem", "-signkey", "s.key", "-out", "req.pem", *keep],
            ["x509", "-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca.key", f"-{digest}", "-days", "30"],
        ]
        steps[1] += [*keep, "-set_serial", str(issued.cert.serial_number), "-out", "out.pem"]
        for step in steps:
            done = subprocess.run([str(OPENSSL), *step], cwd=work, capture_output=True, timeout=30, check=False)
            assert done.returncode == 0, done.stderr
        return Issued(x509.load_pem_x509_certificate((work / "out.pem").read_bytes()), issued.key)


def _ec_intermediate(pki: LabPKI, name: str, curve: ec.EllipticCurve) -> Issued:
    # LabPKI's key kinds stop at P-256: the curve is handed to it through its key maker, for this one CA.
    key = ec.generate_private_key(curve)
    make = lab_pki._new_key
    lab_pki._new_key = lambda kind="p256": key  # type: ignore[assignment]
    try:
        return pki.issue_intermediate(name)
    finally:
        lab_pki._new_key = make


@dataclass(frozen=True)
class Case:
    leaf: Issued
    chain: tuple[Issued, ...]  # served after the leaf

    @property
    def ders(self) -> list[bytes]:
        return [c.der for c in (self.leaf, *self.chain)]


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Weak Lab", key_kind="rsa2048")  # RSA: MD5 has no ECDSA signature


@pytest.fixture(scope="module")
def cases(pki: LabPKI) -> dict[str, Case]:
    inter = pki.intermediate
    sha1_int = pki.issue_intermediate("Weak SHA-1 CA", digest="sha1")
    md5_int = _resigned(pki.issue_intermediate("Weak MD5 CA"), pki.root, "md5")
    rsa1024_int = pki.issue_intermediate("Weak RSA-1024 CA", key_kind="rsa1024")
    p192_int = _ec_intermediate(pki, "Weak P-192 CA", ec.SECP192R1())
    p224_int = _ec_intermediate(pki, "Weak P-224 CA", ec.SECP224R1())
    out = {
        "ok": Case(pki.issue_leaf(NAME), (inter,)),
        "rsa1024_leaf": Case(pki.issue_leaf(NAME, key_kind="rsa1024"), (inter,)),
        "sha1_leaf": Case(_resigned(pki.issue_leaf(NAME), inter, "sha1"), (inter,)),
        "md5_leaf": Case(_resigned(pki.issue_leaf(NAME), inter, "md5"), (inter,)),
        "sha1_int": Case(pki.issue_leaf(NAME, issuer=sha1_int), (sha1_int,)),
        "md5_int": Case(pki.issue_leaf(NAME, issuer=md5_int), (md5_int,)),
        "rsa1024_int": Case(pki.issue_leaf(NAME, issuer=rsa1024_int), (rsa1024_int,)),
        "p192_int": Case(pki.issue_leaf(NAME, issuer=p192_int), (p192_int,)),
        "p224_int": Case(pki.issue_leaf(NAME, issuer=p224_int), (p224_int,)),
    }
    assert tuple(out) == CASES
    return out


class WeakServer:
    """`openssl s_server` on 127.0.0.1 serving one chain at security level 0, stopped by its PID."""

    def __init__(self, case: Case, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        leaf, key, chain = work / "leaf.pem", work / "leaf.key", work / "chain.pem"
        write_pem(leaf, case.leaf.cert_pem)
        write_pem(key, case.leaf.key_pem)
        write_pem(chain, b"".join(c.cert_pem for c in case.chain))
        self._log = work / "s_server.out"
        argv = [str(OPENSSL), "s_server", "-accept", "127.0.0.1:0", "-cert", str(leaf), "-key", str(key)]
        # -www: answers each connection alone, never reading its own stdin.
        argv += ["-cert_chain", str(chain), "-cipher", "DEFAULT@SECLEVEL=0", "-www"]
        with open(self._log, "wb") as out:
            self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in self._log.read_text(errors="replace").splitlines():
                if line.startswith("ACCEPT "):
                    return int(line.rsplit(":", 1)[1])
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"s_server did not start: {self._log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture(scope="module")
def servers(cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, WeakServer]]:
    work = tmp_path_factory.mktemp("weak-servers")
    running: dict[str, WeakServer] = {}
    try:
        for name, case in cases.items():
            running[name] = WeakServer(case, work / name)
        yield running
    finally:
        for server in running.values():
            server.stop()


def _judged(chain: list[bytes], store: LoadedStore) -> StoreVerdict:
    (verdict,) = judge_against_stores(chain, (store,), NAME, datetime.now(UTC), None)
    return verdict


# --- Node -------------------------------------------------------------------------------------------------


def _config(path: Path, section: str, level: int) -> Path:
    tls = f"[tls]\nCipherString = DEFAULT@SECLEVEL={level}\n"
    path.write_text(f"{section} = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n{tls}")
    return path


def _node_env(tmp_path: Path, pki: LabPKI, setting: str) -> dict[str, str]:
    """Node's directory on PATH, the lab root as NODE_EXTRA_CA_CERTS, and one way of setting its OpenSSL up."""
    assert NODE is not None
    env = {"PATH": str(Path(NODE).parent), "NODE_EXTRA_CA_CERTS": str(write_pem(tmp_path / "root.pem", pki.root_pem()))}
    nodejs2, nodejs3 = _config(tmp_path / "n2.cnf", "nodejs_conf", 2), _config(tmp_path / "n3.cnf", "nodejs_conf", 3)
    shared2 = _config(tmp_path / "o2.cnf", "openssl_conf", 2)
    return (
        env
        | {
            "default": {},
            "OPENSSL_CONF nodejs_conf level 2": {"OPENSSL_CONF": str(nodejs2)},
            "OPENSSL_CONF nodejs_conf level 3": {"OPENSSL_CONF": str(nodejs3)},
            "OPENSSL_CONF openssl_conf level 2": {"OPENSSL_CONF": str(shared2)},
            "--openssl-shared-config": {"OPENSSL_CONF": str(shared2), "NODE_OPTIONS": "--openssl-shared-config"},
            "--openssl-config": {"NODE_OPTIONS": f"--openssl-config={nodejs2}"},
            "--tls-cipher-list level 0": {"NODE_OPTIONS": "--tls-cipher-list=DEFAULT@SECLEVEL=0"},
        }[setting]
    )


def node_says(env: dict[str, str], port: int) -> tuple[str, str]:
    """(node's error code or OK, its message) for a connection to the lab server."""
    return runtime_clients.node_says(env, port, NAME)


NODE_SETTINGS = (
    "default",
    "OPENSSL_CONF nodejs_conf level 2",
    "OPENSSL_CONF nodejs_conf level 3",
    "OPENSSL_CONF openssl_conf level 2",
    "--openssl-shared-config",
    "--openssl-config",
    "--tls-cipher-list level 0",
)


@needs_node
@pytest.mark.parametrize("setting", NODE_SETTINGS)
def test_the_node_store_verdict_is_nodes_own_for_weak_keys_and_digests(
    tmp_path: Path, pki: LabPKI, cases: dict[str, Case], servers: dict[str, WeakServer], setting: str
) -> None:
    env = _node_env(tmp_path, pki, setting)
    forget_answers()
    found = discover(env, runtimes=RuntimeOptions(python_dirs=()))
    node = next(s for s in found.stores if s.info.name == "node")
    runtime = next(r for r in found.runtimes if r.kind == "node")
    accepted: list[str] = []
    for name, case in cases.items():
        said, message = node_says(env, servers[name].port)
        verdict = _judged(case.ders, node)
        if said == "OK":
            accepted.append(name)
            assert verdict.at_agent_time is Verdict.OK, (setting, name, verdict.detail, runtime.detail)
        else:
            # Node names these refusals UNSPECIFIED, with OpenSSL's text for the code; its verify callback lets
            # OpenSSL go on, so node tells the last weak key or digest of the chain where the agent tells the first.
            assert verdict.at_agent_time is not Verdict.OK, (setting, name, said, message, runtime.detail)
            assert verdict.verify_code in WEAK and message in {libcrypto.error_string(c) for c in WEAK}, (
                setting,
                name,
                message,
                verdict.detail,
            )
    level = {"OPENSSL_CONF nodejs_conf level 2": 2, "--openssl-shared-config": 2, "--openssl-config": 2}.get(setting)
    level = {"OPENSSL_CONF nodejs_conf level 3": 3, "--tls-cipher-list level 0": 0}.get(setting, level or 1)
    assert f"verifies at security level {level} (" in runtime.detail, runtime.detail
    # What tells the levels apart, so that this test says something about each.
    expected = {
        0: set(CASES),
        1: {"ok", "rsa1024_leaf", "rsa1024_int", "p192_int", "p224_int"},
        2: {"ok", "p224_int"},
        3: set(),
    }[level]
    assert set(accepted) == expected, (setting, accepted)


@needs_node
def test_a_changed_configuration_file_is_asked_again(tmp_path: Path, pki: LabPKI, cases: dict[str, Case]) -> None:
    env = _node_env(tmp_path, pki, "OPENSSL_CONF nodejs_conf level 2")
    forget_answers()
    first = discover(env, runtimes=RuntimeOptions(python_dirs=()))
    node = next(s for s in first.stores if s.info.name == "node")
    assert ("file", env["OPENSSL_CONF"]) in first.watches
    assert _judged(cases["rsa1024_leaf"].ders, node).verify_code == 66
    time.sleep(0.01)
    _config(Path(env["OPENSSL_CONF"]), "nodejs_conf", 1)
    again = discover(env, runtimes=RuntimeOptions(python_dirs=()))
    node = next(s for s in again.stores if s.info.name == "node")
    assert _judged(cases["rsa1024_leaf"].ders, node).at_agent_time is Verdict.OK, "the same store, another level"


# --- Java -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def java_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_java_client(tmp_path_factory.mktemp("weak-java-client"))


def _keytool_store(path: Path, *certs: Issued) -> Path:
    assert KEYTOOL is not None
    for i, cert in enumerate(certs):
        pem = write_pem(path.with_name(f"{path.name}.{i}.pem"), cert.cert_pem)
        argv = [KEYTOOL, "-importcert", "-noprompt", "-alias", f"lab-{i}", "-file", str(pem)]
        argv += ["-keystore", str(path), "-storepass", "changeit", "-storetype", "PKCS12"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": _DIRS})
        assert done.returncode == 0, done.stderr
    return path


def java_says(classes: Path, truststore: Path, port: int, *properties: str) -> str:
    return runtime_clients.java_says(classes, truststore, port, NAME, *properties)


def _agree(java: str, verdict: StoreVerdict, what: str) -> None:
    if java == "OK":
        assert verdict.at_agent_time is Verdict.OK, (what, verdict.detail)
    else:
        assert verdict.at_agent_time is not Verdict.OK, (what, java)
        assert verdict.detail.startswith("Java refuses "), (what, verdict.detail)


@needs_java
def test_a_keystore_holding_the_private_root_java_and_the_agent_agree_on_weak_chains(
    tmp_path: Path, java_client: Path, pki: LabPKI, cases: dict[str, Case], servers: dict[str, WeakServer]
) -> None:
    keystore = _keytool_store(tmp_path / "truststore.p12", pki.root)
    store = load_store("java", keystore, kind=KIND_JAVA, runtime="java")
    accepted = []
    for name, case in cases.items():
        said = java_says(java_client, keystore, servers[name].port)
        _agree(said, _judged(case.ders, store), name)
        if said == "OK":
            accepted.append(name)
    # Java 17 under a private root: no security level, SHA-1 is refused only under the JDK's own roots.
    assert set(accepted) == {"ok", "rsa1024_leaf", "sha1_leaf", "sha1_int", "rsa1024_int"}, accepted


@needs_java
@pytest.mark.parametrize("holds", ["intermediate", "leaf"])
def test_a_keystore_holding_an_intermediate_or_the_leaf_is_an_anchor_for_java_and_the_agent(
    tmp_path: Path,
    java_client: Path,
    pki: LabPKI,
    cases: dict[str, Case],
    servers: dict[str, WeakServer],
    holds: str,
) -> None:
    for name in ("ok", "sha1_leaf", "md5_leaf"):
        case = cases[name]
        anchor = case.chain[0] if holds == "intermediate" else case.leaf
        keystore = _keytool_store(tmp_path / f"{name}.p12", anchor)
        store = load_store("java", keystore, kind=KIND_JAVA, runtime="java")
        said = java_says(java_client, keystore, servers[name].port)
        verdict = _judged(case.ders, store)
        _agree(said, verdict, f"{name} under the {holds}")
        if said == "OK":
            assert verdict.verified_path[-1] == fingerprint(anchor.der), (name, holds, verdict)
    ok = _judged(cases["ok"].ders, load_store("java", tmp_path / "ok.p12", kind=KIND_JAVA, runtime="java"))
    assert ok.verify_code == 0, "OpenSSL alone would want a self-signed root (code 2 or 20)"


@needs_java
def test_the_jres_java_security_decides_for_its_cacerts(
    tmp_path: Path, java_client: Path, pki: LabPKI, cases: dict[str, Case], servers: dict[str, WeakServer]
) -> None:
    """A JRE home whose java.security disables SHA-1 outright and RSA below 2048 bits: the agent reads it for the
    cacerts of that home (JAVA_HOME); the real java is given the same property file."""
    home = tmp_path / "jre"
    (home / "lib" / "security").mkdir(parents=True)
    (home / "conf" / "security").mkdir(parents=True)
    keystore = _keytool_store(home / "lib" / "security" / "cacerts", pki.root)
    security = home / "conf" / "security" / "java.security"
    security.write_text(
        "# stricter than Java 17's defaults\n"
        "jdk.certpath.disabledAlgorithms=MD2, MD5, SHA1, \\\n"
        "    RSA keySize < 2048, DSA keySize < 1024, EC keySize < 224\n"
        "jdk.tls.disabledAlgorithms=SSLv3, TLSv1, TLSv1.1, MD5withRSA, EC keySize < 224\n"
    )
    forget_answers()
    found = discover({"JAVA_HOME": str(home)}, runtimes=RuntimeOptions(search=False))
    store = next(s for s in found.stores if s.info.name == "java_home")
    runtime = next(r for r in found.runtimes if r.kind == "java")
    assert f"jdk.certpath.disabledAlgorithms from {security}" in runtime.detail
    assert ("file", str(security)) in found.watches
    accepted = []
    for name in ("ok", "rsa1024_leaf", "sha1_leaf", "sha1_int", "rsa1024_int"):
        said = java_says(java_client, keystore, servers[name].port, f"-Djava.security.properties={security}")
        _agree(said, _judged(cases[name].ders, store), name)
        if said == "OK":
            accepted.append(name)
    assert accepted == ["ok"], accepted


# --- what the verdict cache and the coordinator make of it ------------------------------------------------


def test_stores_of_one_content_are_judged_apart_by_their_rules_and_the_cache_follows_them(
    pki: LabPKI, cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system store and a node store holding the same root: node's own level judges node's, and a changed
    level (a new discovery) is a new verdict, not a cached one."""
    if libcrypto.security_level() < 2:
        pytest.skip("this host's OpenSSL security level accepts 1024-bit keys")
    levels = {"node": 1}

    def rules(kind: str, path: str) -> runtimes.VerifyRules:
        if kind == "node":
            return runtimes.VerifyRules("node", levels["node"], "as node said")
        return runtimes.HOST_RULES

    monkeypatch.setattr(runtimes, "verification_rules", rules)
    system = store("system", [pki.root.cert])
    node = store("node", [pki.root.cert], kind="node", path="/opt/node/bin/node", runtime="node")
    chain = cases["rsa1024_leaf"].ders
    now = datetime.now(UTC)
    first = {v.store: v.verify_code for v in judge_against_stores(chain, (system, node), NAME, now, None)}
    assert first == {"system": 66, "node": 0}, "one content, two ways of verifying: two verdicts"
    levels["node"] = 2
    again = {v.store: v.verify_code for v in judge_against_stores(chain, (system, node), NAME, now, None)}
    assert again == {"system": 66, "node": 66}


@needs_java
def test_a_weakness_only_java_refuses_is_a_warning_for_a_java_home_store(
    tmp_path: Path, java_client: Path, pki: LabPKI, cases: dict[str, Case], servers: dict[str, WeakServer]
) -> None:
    """A P-224 CA: OpenSSL's level 2 takes it, Java 17 cannot verify with it. The declared java_home store's
    refusal is Java's own, so it is not worded as openssl verify's; an RSA-1024 CA is none of the java store's."""
    keystore = _keytool_store(tmp_path / "cacerts", pki.root)
    java_home = load_store("java_home", keystore, kind=KIND_JAVA, runtime="java", found_by=JAVA_HOME, declared=True)
    system = store("system", [pki.root.cert])
    for name, java_accepts in (("p224_int", False), ("rsa1024_int", True)):
        assert (java_says(java_client, keystore, servers[name].port) == "OK") is java_accepts, name
        host = judged("a", tuple(cases[name].ders), [system, java_home], name=NAME)
        host = with_native(host, Verdict.OK, 0)
        obs = observe(host)
        found = [f for f in policy_findings(obs, DiagnosisSettings.for_request(obs.request))]
        if java_accepts:  # the system store's refusal at level 2 is its own finding; Java's store says nothing
            assert not [f for f in found if "java_home" in f.summary], [f.summary for f in found]
            continue
        [finding] = found
        assert finding.severity is Severity.WARNING, finding.summary
        assert "Java itself accepts it" not in finding.summary and "the java_home store on a refuses it" in (
            finding.summary
        )
