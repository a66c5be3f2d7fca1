"""Asking a node executable for its bundled roots: real node where there is one, and scripts standing in for a
node that hangs, prints garbage or too much, exits non-zero; the answer kept until the executable changes;
Node's rule for the store it uses."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tlsfleet.agent.trust import node_roots, store_cache
from tlsfleet.agent.trust.node_roots import NodeAnswer, ask_node, node_trust, openssl_defaults, sources
from tlsfleet.agent.trust.runtimes import RuntimeOptions, find_runtimes, forget_answers
from tlsfleet.agent.trust.stores import discover
from tlsfleet.coordinator.lab.pki import LabPKI

NODE = shutil.which("node", path="/usr/local/bin:/usr/bin:/bin")
FOUND = RuntimeOptions(python_dirs=())


@pytest.fixture(autouse=True)
def fresh_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_cache, "_enabled", False)  # an agent's view: nothing from earlier processes
    forget_answers()  # a script at a reused path must be asked again


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Bundled")


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def answering(path: Path, pki: LabPKI, counter: Path | None = None, **fields: object) -> Path:
    """A node that answers like Node 20 does, with the lab root as its one bundled root; each run is
    counted in `counter`."""
    answer = {
        "version": "v20.0.0",
        "roots": [pki.root_pem().decode()],
        "openssl_store_default": False,
        "system_cert_path": "",
        "shared_openssl": True,
        "flags": ["--use-openssl-ca", "--use-bundled-ca"],
        **fields,
    }
    data = path.parent / f"{path.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(answer))
    count = f"/bin/echo run >> {counter}\n" if counter else ""
    return script(path, f"{count}exec /bin/cat {data}\n")


def running(pid: int) -> bool:
    """Whether the process is still alive a moment after SIGKILL (its delivery is asynchronous); a killed one
    whose parent is gone may linger as a zombie of PID 1."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        if "State:\tZ" in status:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(NODE is None, reason="no node executable in /usr/local/bin, /usr/bin or /bin")
def test_real_node_lists_its_bundled_roots() -> None:
    assert NODE is not None
    answer = ask_node(NODE)
    assert not answer.failed, answer.failed
    assert answer.version.startswith("v") and len(answer.roots) > 50
    assert all(r.startswith("-----BEGIN CERTIFICATE-----") for r in answer.roots)
    assert {"--use-openssl-ca", "--use-bundled-ca"} <= answer.flags
    cafile, cadir = openssl_defaults(answer)
    assert cafile.endswith("/cert.pem") and cadir.endswith("/certs")


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
def test_a_node_that_hangs_is_killed_and_listed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "pid"
    node = script(tmp_path / "bin" / "node", f"/bin/echo $$ > {pid_file}\nexec /bin/sleep 30\n")
    monkeypatch.setattr(node_roots, "NODE_TIMEOUT_S", 0.5)
    found = discover({"PATH": str(node.parent)}, runtimes=FOUND)
    assert [r.fact() for r in found.runtimes if r.kind == "node"] == [
        ("node", f"{node} (`node` on PATH): did not answer within 0.5 s; its roots are not judged")
    ]
    assert not [s for s in found.stores if s.info.name.startswith("node")]
    assert not running(int(pid_file.read_text()))


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
def test_a_node_whose_child_holds_the_pipe_is_killed_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    node = script(tmp_path / "node", f"/bin/sleep 30 &\n/bin/echo $! > {pid_file}\nexit 0\n")
    assert ask_node(str(node), timeout=0.5).failed == "did not answer within 0.5 s"
    assert not running(int(pid_file.read_text()))


@pytest.mark.parametrize(
    ("body", "failed"),
    [
        ("/bin/echo 'Welcome to Node.js'\n", "printed no answer (expected its version and bundled roots as JSON)"),
        ('/bin/echo \'{"version": 20, "roots": [], "flags": []}\'\n', "printed no answer"),
        ('/bin/echo \'{"version": "v20.1.0", "roots": [1], "flags": []}\'\n', "printed no answer"),
        ("/bin/echo boom >&2\nexit 3\n", "exited 3: boom"),
        ("exec /bin/cat /dev/zero\n", f"printed more than {node_roots.MAX_ANSWER_BYTES} bytes"),
    ],
    ids=["garbage", "wrong-types", "roots-not-text", "exit-status", "too-much"],
)
def test_a_node_without_a_usable_answer_has_no_store(tmp_path: Path, body: str, failed: str) -> None:
    node = script(tmp_path / "bin" / "node", body)
    answer = ask_node(str(node))
    assert answer.failed.startswith(failed)
    found = discover({"PATH": str(node.parent)}, runtimes=FOUND)
    (runtime,) = [r for r in found.runtimes if r.kind == "node"]
    assert runtime.detail == f"{answer.failed}; its roots are not judged" and "\n" not in runtime.detail
    assert not [s for s in found.stores if s.info.name.startswith("node")]


def test_too_many_roots_are_refused_by_count(tmp_path: Path, pki: LabPKI) -> None:
    roots = [pki.root_pem().decode()] * (node_roots.MAX_BUNDLED_ROOTS + 1)
    node = answering(tmp_path / "node", pki, roots=roots)
    assert ask_node(str(node)).failed == f"listed {len(roots)} bundled roots, over the cap of 1024"


def test_a_node_that_is_not_executable_is_listed_as_before(tmp_path: Path) -> None:
    plain = tmp_path / "node"
    plain.write_text("not a program\n")
    (runtime,) = find_runtimes({}, RuntimeOptions(named=(("node", str(plain)),), search=False))
    assert runtime.detail == f"{plain} is not a node executable or a directory with bin/node"


def test_the_answer_is_kept_until_the_executable_changes(tmp_path: Path, pki: LabPKI) -> None:
    counter = tmp_path / "runs"
    node = answering(tmp_path / "bin" / "node", pki, counter)
    env = {"PATH": str(node.parent)}
    first = discover(env, runtimes=FOUND)
    second = discover(env, runtimes=FOUND)
    assert counter.read_text().count("run") == 1, "asked once for the runtime and its store, and once in all"
    before, after = (next(s for s in d.stores if s.info.name == "node") for d in (first, second))
    assert after.info.root_count == 1 and after.info.fingerprint == before.info.fingerprint
    assert ("file", str(node)) in first.watches

    node.write_text(node.read_text() + "# upgraded\n")  # another file size: another executable
    discover(env, runtimes=FOUND)
    assert counter.read_text().count("run") == 2
    forget_answers()
    discover(env, runtimes=FOUND)
    assert counter.read_text().count("run") == 3, "a forced re-read asks again"


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
def test_the_cli_keeps_the_answer_on_disk_for_its_next_run(
    tmp_path: Path, pki: LabPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    store_cache.forget()
    store_cache.enable()
    try:
        counter = tmp_path / "runs"
        node = answering(tmp_path / "node", pki, counter)
        hangs = script(tmp_path / "hangs" / "node", "exec /bin/sleep 30\n")
        first = ask_node(str(node))
        assert ask_node(str(hangs), timeout=0.3).failed
        store_cache.save()
        forget_answers()
        store_cache.forget()  # what the next process starts with: the disk alone

        assert ask_node(str(node)) == first and counter.read_text().count("run") == 1
        assert ask_node(str(hangs), timeout=0.3).failed, "a failed answer is not kept"
        node.write_text(node.read_text() + "# upgraded\n")
        assert ask_node(str(node)).version == first.version and counter.read_text().count("run") == 2
    finally:
        monkeypatch.setattr(store_cache, "_enabled", False)
        store_cache.forget()


def test_the_environment_is_not_passed_to_node(tmp_path: Path, pki: LabPKI) -> None:
    seen = tmp_path / "env"
    node = script(tmp_path / "node", f"/usr/bin/env > {seen}\n/bin/echo '{{}}'\n")
    ask_node(str(node))
    assert set(seen.read_text().split()) <= {"PWD=/"}, "only what the shell itself sets"


def test_the_store_is_named_like_the_other_runtime_stores(tmp_path: Path, pki: LabPKI) -> None:
    first = answering(tmp_path / "a" / "node", pki)
    second = answering(tmp_path / "b" / "bin" / "node", LabPKI("Second"))
    options = RuntimeOptions(named=(("node", str(tmp_path / "b")),), search=True, python_dirs=())
    found = discover({"PATH": str(first.parent)}, runtimes=options)
    nodes = {s.info.name: s.info for s in found.stores if s.info.runtime == "node"}
    assert set(nodes) == {"node", f"node:{first}"}
    assert nodes["node"].found_by == f"node v20.0.0 at {second} (--runtime node={tmp_path / 'b'}): bundled roots (1)"
    assert nodes["node"].declared and not nodes[f"node:{first}"].declared
    assert nodes["node"].fingerprint != nodes[f"node:{first}"].fingerprint


# --- Node's rule for its store --------------------------------------------------------------------

V20 = NodeAnswer(
    version="v20.0.0",
    roots=("bundled",),
    flags=frozenset({"--use-openssl-ca", "--use-bundled-ca"}),
    shared_openssl=True,  # OpenSSL's defaults are the agent's own
)
OPENSSL = ssl.get_default_verify_paths()
DEFAULT_FILE = f"OpenSSL's default file {OPENSSL.openssl_cafile}"
DEFAULT_DIR = f"OpenSSL's default directory {OPENSSL.openssl_capath}"
V23 = NodeAnswer(**{**V20.__dict__, "version": "v23.8.0", "flags": V20.flags | {"--use-system-ca"}})


def labels(answer: NodeAnswer, env: dict[str, str]) -> list[str]:
    return [s.label for s in sources(answer, node_trust(answer, env), env)]


def test_by_default_the_bundled_roots_and_node_extra_ca_certs() -> None:
    assert labels(V20, {}) == ["bundled roots"]
    assert labels(V20, {"NODE_EXTRA_CA_CERTS": "/x.pem"}) == ["bundled roots", "NODE_EXTRA_CA_CERTS=/x.pem"]


def test_use_openssl_ca_takes_openssl_s_default_store_instead() -> None:
    env = {"NODE_OPTIONS": "--max-old-space-size=100 --use-openssl-ca", "NODE_EXTRA_CA_CERTS": "/x.pem"}
    assert labels(V20, env) == [
        DEFAULT_FILE,
        DEFAULT_DIR,
        "NODE_EXTRA_CA_CERTS=/x.pem",
    ]
    env |= {"SSL_CERT_FILE": "/f.pem", "SSL_CERT_DIR": "/d"}
    assert labels(V20, env)[:2] == ["SSL_CERT_FILE=/f.pem", "SSL_CERT_DIR=/d"]
    assert node_trust(V20, env).why == "--use-openssl-ca from NODE_OPTIONS in the agent's environment"


def test_a_build_that_uses_openssl_s_store_unless_told_otherwise() -> None:
    debian = NodeAnswer(**{**V20.__dict__, "openssl_store_default": True})
    assert labels(debian, {})[0] == DEFAULT_FILE
    assert labels(debian, {"NODE_OPTIONS": "--use-bundled-ca"}) == ["bundled roots"]


def test_use_system_ca_adds_the_system_store_where_node_knows_it() -> None:
    assert labels(V23, {"NODE_OPTIONS": "--use-system-ca"})[:2] == [
        "bundled roots",
        DEFAULT_FILE,
    ]
    assert labels(V23, {"NODE_USE_SYSTEM_CA": "1"})[0:2] == [
        "bundled roots",
        DEFAULT_FILE,
    ]
    assert labels(V20, {"NODE_USE_SYSTEM_CA": "1"}) == ["bundled roots"], "Node 20 does not read the variable"
    assert node_trust(V20, {"NODE_OPTIONS": "--use-system-ca"}).error == (
        "NODE_OPTIONS has --use-system-ca, which node v20.0.0 refuses"
    )


def test_both_ca_options_make_node_refuse_to_start() -> None:
    trust = node_trust(V20, {"NODE_OPTIONS": "--use-openssl-ca --use-bundled-ca"})
    assert trust.error == "NODE_OPTIONS has both --use-openssl-ca and --use-bundled-ca, which node refuses"


def test_a_node_that_carries_openssl_has_the_openssldir_compiled_into_it(tmp_path: Path, pki: LabPKI) -> None:
    node = answering(tmp_path / "node", pki, shared_openssl=False)
    node.write_text(node.read_text() + '# OpenSSL_version(OPENSSL_DIR): OPENSSLDIR: "/opt/vendor-ssl"\n')
    answer = ask_node(str(node))
    assert openssl_defaults(answer) == ("/opt/vendor-ssl/cert.pem", "/opt/vendor-ssl/certs")
    env = {"NODE_OPTIONS": "--use-openssl-ca"}
    assert labels(answer, env) == [
        "OpenSSL's default file /opt/vendor-ssl/cert.pem",
        "OpenSSL's default directory /opt/vendor-ssl/certs",
    ]
    shared = answering(tmp_path / "shared" / "node", pki, shared_openssl=True)
    assert openssl_defaults(ask_node(str(shared))) == (OPENSSL.openssl_cafile, OPENSSL.openssl_capath)


def test_the_cli_reads_a_node_binary_for_its_openssldir_once(
    tmp_path: Path, pki: LabPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    store_cache.forget()
    store_cache.enable()
    scans: list[str] = []
    real_scan = node_roots._openssl_dir_in
    monkeypatch.setattr(node_roots, "_openssl_dir_in", lambda path: scans.append(path) or real_scan(path))
    try:
        node = answering(tmp_path / "node", pki, shared_openssl=False)
        node.write_text(node.read_text() + '# OpenSSL_version(OPENSSL_DIR): OPENSSLDIR: "/opt/vendor-ssl"\n')
        answer = ask_node(str(node))
        assert openssl_defaults(answer)[0] == "/opt/vendor-ssl/cert.pem"
        store_cache.save()
        node_roots._openssl_home.cache_clear()
        store_cache.forget()  # the next process: the disk alone
        assert openssl_defaults(answer)[0] == "/opt/vendor-ssl/cert.pem"
        assert len(scans) == 1, "the next process takes the directory found, without reading the binary"
        node.write_text(node.read_text().replace("/opt/vendor-ssl", "/opt/other-ssl"))  # an upgraded binary
        node_roots._openssl_home.cache_clear()
        assert openssl_defaults(answer)[0] == "/opt/other-ssl/cert.pem"
        assert len(scans) == 2
    finally:
        monkeypatch.setattr(store_cache, "_enabled", False)
        store_cache.forget()
        node_roots._openssl_home.cache_clear()


def make_level_probes() -> tuple[str, ...]:
    """node_roots._PROBE_CERTIFICATES made again (with new keys): print these to replace them."""
    curves = [ec.SECP192R1(), ec.SECP224R1(), ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()]
    keys: list[rsa.RSAPublicKey | ec.EllipticCurvePublicKey] = [
        rsa.RSAPublicNumbers(65537, (1 << 511) | 0x10001).public_key()
    ]
    keys += [ec.generate_private_key(curve).public_key() for curve in curves]
    signer = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsfleet security level probe")])
    made = []
    for key in keys:
        builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key).serial_number(1)
        builder = builder.not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
        cert = builder.not_valid_after(datetime(2099, 12, 31, tzinfo=UTC)).sign(signer, hashes.SHA512())
        made.append(base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii"))
    return tuple(made)


def _key_of(encoded: str) -> tuple[str, int]:
    key = x509.load_der_x509_certificate(base64.b64decode(encoded)).public_key()
    return (type(key).__name__.removeprefix("_"), key.key_size)


def test_the_level_probes_are_the_weakest_key_of_each_level_weakest_first() -> None:
    kept = node_roots._probe_certificates()
    assert len(kept) == node_roots._PROBE_COUNT == 6
    sizes = [size for _kind, size in map(_key_of, kept)]
    assert sizes == [512, 192, 224, 256, 384, 521]
    assert [size for _kind, size in map(_key_of, make_level_probes())] == sizes
    for encoded in kept:
        cert = x509.load_der_x509_certificate(base64.b64decode(encoded))
        assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha512"
        assert cert.not_valid_after_utc.year == 2099


def test_asking_node_loads_no_key_generation_into_the_agent(tmp_path: Path) -> None:
    """The level probe's certificates are data: a fresh agent that asks node does not start cryptography's
    OpenSSL backend for them (some 3 MiB resident)."""
    script = (
        "import sys; from tlsfleet.agent.trust import node_roots as n; n._ASK and n._probe_certificates(); "
        "print('cryptography.hazmat.bindings.openssl.binding' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("offset", range(0, 40, 3))
def test_the_openssldir_is_found_across_the_scan_s_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int
) -> None:
    monkeypatch.setattr(node_roots, "_SCAN_CHUNK", 16)  # the mark and its value straddle chunk edges
    binary = tmp_path / "node"
    binary.write_bytes(b"\x7fELF" + b"x" * offset + b'OpenSSL 3.0 OPENSSLDIR: "/opt/vendor-ssl"\x00' + b"y" * 5)
    assert node_roots._openssl_dir_in(str(binary)) == "/opt/vendor-ssl"
    binary.write_bytes(b"\x7fELF" + b"x" * offset + b"no such mark here" * 3)
    assert node_roots._openssl_dir_in(str(binary)) == ""
