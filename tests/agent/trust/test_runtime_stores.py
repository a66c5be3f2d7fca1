"""Runtime stores only where the runtime is: fake JRE, node and Python layouts in temporary directories,
real files, real processes (the interpreters asked are run), and an environment the test controls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from tlsfleet.agent.hostfacts import HostFactsCache
from tlsfleet.agent.model import ProbeResult, Resolution, Target
from tlsfleet.agent.trust import runtimes as runtimes_module
from tlsfleet.agent.trust.runtimes import RuntimeOptions, find_runtimes, forget_answers
from tlsfleet.agent.trust.stores import LoadedStore, discover, discover_stores, watch_signature
from tlsfleet.agent.wire import result_from_wire, result_to_wire
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.v1 import probe_pb2

NOTHING = RuntimeOptions(search=False)


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Runtime")


@pytest.fixture(autouse=True)
def fresh_answers() -> None:
    forget_answers()  # a fake interpreter at a reused path must be asked again


def by_name(stores: tuple[LoadedStore, ...]) -> dict[str, LoadedStore]:
    names = [s.info.name for s in stores]
    assert len(names) == len(set(names)), names
    return {s.info.name: s for s in stores}


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_jre(home: Path, pki: LabPKI) -> Path:
    """A JRE home: bin/java (a script; nothing runs it) and lib/security/cacerts (PKCS#12, 'changeit')."""
    executable(home / "bin" / "java", "#!/bin/sh\nexit 0\n")
    entries = [pkcs12.PKCS12Certificate(pki.root.cert, b"root")]
    (home / "lib" / "security").mkdir(parents=True)
    (home / "lib" / "security" / "cacerts").write_bytes(
        pkcs12.serialize_java_truststore(entries, BestAvailableEncryption(b"changeit"))
    )
    return home


def linked(bin_dir: Path, name: str, target: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).symlink_to(target)
    return bin_dir / name


def fake_python(path: Path, answer: dict[str, object]) -> Path:
    """An 'interpreter' that answers the agent's question as a Python with that layout would."""
    return executable(path, f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(answer)}\nEOF\n")


def venv_with_certifi(root: Path, bundle: Path) -> Path:
    """A real virtual environment (no pip) whose certifi returns `bundle`; its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    package = root / "lib" / version / "site-packages" / "certifi"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"def where():\n    return {str(bundle)!r}\n")
    return root / "bin" / "python3"


# --- Java -----------------------------------------------------------------------------------------


def test_java_on_path_is_resolved_to_its_home_and_cacerts(tmp_path: Path, pki: LabPKI) -> None:
    home = fake_jre(tmp_path / "jvm" / "jdk-21", pki)
    bin_dir = tmp_path / "usr-bin"
    linked(bin_dir, "java", home / "bin" / "java")  # /usr/bin/java -> /usr/lib/jvm/X/bin/java
    found = discover({"PATH": str(bin_dir)}, runtimes=RuntimeOptions(python_dirs=()))
    java = by_name(found.stores)["java"].info
    assert java.path == str(home / "lib" / "security" / "cacerts")
    assert (java.kind, java.root_count, java.error, java.runtime) == ("java-keystore", 1, "", "java")
    assert "`java` on PATH" in java.found_by and str(bin_dir / "java") in java.found_by
    [runtime] = [r.fact() for r in found.runtimes if r.kind == "java"]
    assert runtime[1].startswith(f"{bin_dir / 'java'} -> {home / 'bin' / 'java'} (`java` on PATH)")


def test_no_java_store_without_a_jre(tmp_path: Path) -> None:
    """Debian's /etc/ssl/certs/java/cacerts may exist with no Java installed: nothing uses it then."""
    (tmp_path / "bin").mkdir()
    stores = by_name(discover_stores({"PATH": str(tmp_path / "bin")}, runtimes=RuntimeOptions(python_dirs=())))
    assert not {n for n in stores if n.startswith("java")}
    assert not [r for r in find_runtimes({"PATH": str(tmp_path / "bin")}, RuntimeOptions(python_dirs=()))]


def test_named_jres_and_keystores(tmp_path: Path, pki: LabPKI) -> None:
    first = fake_jre(tmp_path / "jdk-17", pki)
    second = fake_jre(tmp_path / "jdk-21", LabPKI("Other"))
    keystore = tmp_path / "truststore.p12"
    keystore.write_bytes((second / "lib" / "security" / "cacerts").read_bytes())
    named = (("java", str(first)), ("java", str(second / "bin" / "java")), ("java", str(keystore)))
    stores = by_name(discover_stores({}, runtimes=RuntimeOptions(named=named, search=False)))
    assert stores["java"].info.path == str(first / "lib" / "security" / "cacerts")
    assert stores["java"].info.found_by == f"{first} (--runtime java={first})"
    assert stores[f"java:{second}"].info.root_count == 1
    assert stores[f"java:{keystore}"].info.fingerprint == stores[f"java:{second}"].info.fingerprint


def test_java_home_keeps_its_name_and_absorbs_the_same_jre_on_path(tmp_path: Path, pki: LabPKI) -> None:
    home = fake_jre(tmp_path / "jdk", pki)
    bin_dir = tmp_path / "bin"
    linked(bin_dir, "java", home / "bin" / "java")
    env = {"JAVA_HOME": str(home), "PATH": str(bin_dir)}
    stores = by_name(discover_stores(env, runtimes=RuntimeOptions(python_dirs=())))
    assert "java" not in stores  # one JRE, one store
    assert stores["java_home"].info.runtime == "java"
    assert "JAVA_HOME" in stores["java_home"].info.found_by and "`java` on PATH" in stores["java_home"].info.found_by


def test_jre_without_cacerts_is_a_store_with_an_error(tmp_path: Path) -> None:
    home = tmp_path / "jre"
    executable(home / "bin" / "java", "#!/bin/sh\n")
    stores = by_name(discover_stores({}, runtimes=RuntimeOptions(named=(("java", str(home)),), search=False)))
    assert stores["java"].info.error == f"{home} has no lib/security/cacerts"


# --- Node -----------------------------------------------------------------------------------------


def test_node_on_path_is_a_runtime_and_marks_node_extra_ca_certs(tmp_path: Path, pki: LabPKI) -> None:
    node = executable(tmp_path / "node-bin" / "node", "#!/bin/sh\n")
    options = RuntimeOptions(python_dirs=())
    alone = discover({"PATH": str(node.parent)}, runtimes=options)
    why = "printed no answer (expected its version and bundled roots as JSON); its roots are not judged"
    assert [r.fact() for r in alone.runtimes] == [("node", f"{node} (`node` on PATH): {why}")]
    assert "node_extra_ca_certs" not in by_name(alone.stores)

    extra = write_pem(tmp_path / "extra.pem", pki.root_pem())
    env = {"PATH": str(node.parent), "NODE_EXTRA_CA_CERTS": str(extra)}
    store = by_name(discover_stores(env, runtimes=options))["node_extra_ca_certs"]
    assert (store.info.runtime, store.info.root_count) == ("node", 1)
    assert f"node {node} (`node` on PATH)" in store.info.found_by
    assert "built-in roots" in store.detail


def test_node_extra_ca_certs_without_node_is_still_judged(tmp_path: Path, pki: LabPKI) -> None:
    extra = write_pem(tmp_path / "extra.pem", pki.root_pem())
    store = by_name(discover_stores({"NODE_EXTRA_CA_CERTS": str(extra)}, runtimes=NOTHING))["node_extra_ca_certs"]
    assert store.info.runtime == "node" and "no node executable found" in store.info.found_by


def test_named_node(tmp_path: Path) -> None:
    node = executable(tmp_path / "opt" / "node" / "bin" / "node", "#!/bin/sh\n")
    found = find_runtimes({}, RuntimeOptions(named=(("node", str(tmp_path / "opt" / "node")),), search=False))
    assert [(r.kind, r.location) for r in found] == [("node", str(node))]


# --- Python ---------------------------------------------------------------------------------------


def test_certifi_of_the_agents_own_environment_is_not_judged_unless_named() -> None:
    pytest.importorskip("certifi", reason="the agent's environment has no certifi")
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment")
    # Even where searching meets it (its own bin directory searched as a system one), it is skipped.
    searched = discover({}, runtimes=RuntimeOptions(python_dirs=(os.path.dirname(sys.executable),)))
    assert not [s for s in searched.stores if s.info.name.startswith("certifi")]
    assert not [r for r in searched.runtimes if r.kind == "python"]

    named = RuntimeOptions(named=(("python", sys.executable),), search=False)
    certifi = by_name(discover_stores({}, runtimes=named))["certifi"].info
    assert certifi.runtime == "python" and certifi.root_count > 50
    assert certifi.found_by == f"certifi of {sys.executable} (--runtime python={sys.executable})"


def test_interpreter_given_with_runtime_is_asked_for_its_certifi(tmp_path: Path, pki: LabPKI) -> None:
    bundle = write_pem(tmp_path / "app-bundle.pem", pki.root_pem())
    python = venv_with_certifi(tmp_path / "app-venv", bundle)
    for given in (python, tmp_path / "app-venv"):  # the interpreter, or the environment it belongs to
        found = discover({}, runtimes=RuntimeOptions(named=(("python", str(given)),), search=False))
        store = by_name(found.stores)["certifi"].info
        assert (store.path, store.root_count, store.error) == (str(bundle), 1, "")
        [(kind, where)] = [r.fact() for r in found.runtimes]
        assert kind == "python" and f"--runtime python={given}" in where and str(bundle) in where


def test_site_packages_directory_given_with_runtime(tmp_path: Path, pki: LabPKI) -> None:
    bundle = write_pem(tmp_path / "host.pem", pki.root_pem())
    site = tmp_path / "dist-packages"
    (site / "certifi").mkdir(parents=True)
    (site / "certifi" / "__init__.py").write_text(f"def where():\n    return {str(bundle)!r}\n")
    store = by_name(discover_stores({}, runtimes=RuntimeOptions(named=(("python", str(site)),), search=False)))
    assert store["certifi"].info.path == str(bundle)
    # A directory without certifi does not fall back to the agent's own certifi.
    empty = tmp_path / "empty-site"
    empty.mkdir()
    found = discover({}, runtimes=RuntimeOptions(named=(("python", str(empty)),), search=False))
    assert not [s for s in found.stores if s.info.name.startswith("certifi")]
    assert [r.fact()[1] for r in found.runtimes] == [
        f"{empty} (--runtime python={empty}): site-packages directory; no certifi"
    ]


def test_system_interpreters_are_searched_once_each_and_named_ones_come_first(tmp_path: Path, pki: LabPKI) -> None:
    system_bundle = write_pem(tmp_path / "ca-certificates.crt", pki.root_pem())
    bin_dir = tmp_path / "usr" / "bin"
    real = fake_python(
        bin_dir / "python3.11",
        {
            "prefix": "/usr",
            "version": "3.11.2",
            "site": [],
            "where": str(system_bundle),
            "package": "/usr/lib/python3/dist-packages",
        },
    )
    (bin_dir / "python3").symlink_to(real.name)
    executable(bin_dir / "python3-config", "#!/bin/sh\nexit 1\n")  # not an interpreter
    app_bundle = write_pem(tmp_path / "app.pem", LabPKI("App").root_pem())
    app = venv_with_certifi(tmp_path / "app", app_bundle)
    options = RuntimeOptions(named=(("python", str(app)),), python_dirs=(str(bin_dir),))
    found = discover({}, runtimes=options)
    stores = by_name(found.stores)
    assert stores["certifi"].info.path == str(app_bundle)  # the named one keeps the plain name
    system = stores["certifi:/usr/lib/python3/dist-packages"].info
    assert system.path == str(system_bundle)
    assert system.found_by == f"certifi of {bin_dir / 'python3'} (system interpreter in {bin_dir})"
    pythons = [where for kind, where in (r.fact() for r in found.runtimes) if kind == "python"]
    assert len(pythons) == 2 and pythons[1].startswith(f"{bin_dir / 'python3'} -> {real}")


def test_python_without_certifi_is_listed_without_a_store(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3", {"prefix": "/opt/py", "version": "3.12.1", "site": []})
    found = discover({}, runtimes=RuntimeOptions(python_dirs=(str(tmp_path / "bin"),)))
    assert not [s for s in found.stores if s.info.name.startswith("certifi")]
    python = tmp_path / "bin" / "python3"
    where = f"{python} (system interpreter in {python.parent}): Python 3.12.1, prefix /opt/py; no certifi"
    assert [r.fact() for r in found.runtimes] == [("python", where)]


def test_an_interpreter_that_hangs_is_given_up_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes_module, "INTERPRETER_TIMEOUT_S", 0.3)
    executable(tmp_path / "bin" / "python3", "#!/bin/sh\nexec sleep 30\n")
    [runtime] = find_runtimes({}, RuntimeOptions(python_dirs=(str(tmp_path / "bin"),)))
    assert runtime.detail == "did not answer within 0.3 s; its certifi is not judged"


def test_broken_certifi_is_a_store_with_an_error(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "certifi").mkdir(parents=True)
    (site / "certifi" / "__init__.py").write_text("raise RuntimeError('half-upgraded')\n")
    store = by_name(discover_stores({}, runtimes=RuntimeOptions(named=(("python", str(site)),), search=False)))
    assert store["certifi"].info.error == "certifi is installed but unusable: RuntimeError: half-upgraded"


def test_answers_are_cached_until_the_interpreter_changes(tmp_path: Path) -> None:
    counter = tmp_path / "asked"
    script = '#!/bin/sh\necho x >> {counter}\necho \'{{"prefix": "/p", "version": "3.{minor}.0", "site": []}}\'\n'
    python = executable(tmp_path / "bin" / "python3", script.format(counter=counter, minor=10))
    options = RuntimeOptions(python_dirs=(str(tmp_path / "bin"),))
    find_runtimes({}, options)
    find_runtimes({}, options)
    assert counter.read_text().count("x") == 1
    python.write_text(script.format(counter=counter, minor=12) + "# upgraded\n")
    [runtime] = find_runtimes({}, options)
    assert counter.read_text().count("x") == 2 and "Python 3.12.0" in runtime.detail


# --- what the agent reports and watches -----------------------------------------------------------


def test_host_facts_list_the_runtimes(tmp_path: Path) -> None:
    node = executable(tmp_path / "bin" / "node", "#!/bin/sh\n")
    facts = HostFactsCache("1", {"PATH": str(node.parent)}, runtimes=lambda: (("node", f"{node} (`node` on PATH)"),))
    assert facts.get().runtimes == (("node", f"{node} (`node` on PATH)"),)


def test_every_store_and_runtime_is_watched(tmp_path: Path, pki: LabPKI) -> None:
    home = fake_jre(tmp_path / "jdk", pki)
    bundle = write_pem(tmp_path / "bundle.pem", pki.root_pem())
    options = RuntimeOptions(named=(("java", str(home)),), search=False)
    found = discover({"SSL_CERT_FILE": str(bundle)}, runtimes=options)
    assert ("file", str(bundle)) in found.watches
    assert ("file", str(home / "lib" / "security" / "cacerts")) in found.watches
    before = watch_signature(found.watches)
    assert watch_signature(found.watches) == before
    os.utime(home / "lib" / "security" / "cacerts", ns=(1, 1))
    assert watch_signature(found.watches) != before


# --- declared in use ------------------------------------------------------------------------------


def test_stores_the_operator_or_the_environment_names_are_declared_and_found_ones_are_not(
    tmp_path: Path, pki: LabPKI
) -> None:
    bundle = write_pem(tmp_path / "bundle.pem", pki.root_pem())
    system = write_pem(tmp_path / "ca-certificates.crt", pki.root_pem())
    on_path = fake_jre(tmp_path / "jvm" / "found", pki)
    bin_dir = tmp_path / "usr-bin"
    linked(bin_dir, "java", on_path / "bin" / "java")
    fake_python(
        bin_dir / "python3.11",
        {"prefix": "/usr", "version": "3.11.2", "site": [], "where": str(system), "package": "/usr/lib/dist"},
    )
    home = fake_jre(tmp_path / "jvm" / "home", LabPKI("Home"))
    site = tmp_path / "app-site"
    (site / "certifi").mkdir(parents=True)
    (site / "certifi" / "__init__.py").write_text(f"def where():\n    return {str(bundle)!r}\n")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",  # the fake interpreter runs `cat`
        "JAVA_HOME": str(home),
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "NODE_EXTRA_CA_CERTS": str(bundle),
    }
    options = RuntimeOptions(named=(("python", str(site)),), python_dirs=(str(bin_dir),))
    stores = by_name(discover_stores(env, {"corp": bundle}, runtimes=options))
    declared = {name for name, s in stores.items() if s.info.declared}
    assert declared == {
        "ssl_cert_file",
        "requests_ca_bundle",
        "node_extra_ca_certs",
        "java_home",
        "certifi",  # --runtime python=<site>
        "extra:corp",
    } | ({"node"} if "node" in stores else set()), "this machine's node, as NODE_EXTRA_CA_CERTS declares it"
    found = {name for name, s in stores.items() if not s.info.declared}
    assert {"java", "certifi:/usr/lib/dist"} <= found, "a JRE on PATH and a system interpreter are only found"
    assert all(not stores[n].info.declared for n in stores if n.startswith("system"))


def test_a_found_runtime_named_as_well_is_declared(tmp_path: Path, pki: LabPKI) -> None:
    home = fake_jre(tmp_path / "jdk", pki)
    bin_dir = tmp_path / "bin"
    linked(bin_dir, "java", home / "bin" / "java")
    options = RuntimeOptions(named=(("java", str(home)),), python_dirs=())
    [java] = [r for r in find_runtimes({"PATH": str(bin_dir)}, options) if r.kind == "java"]
    assert java.declared and "`java` on PATH" in java.found_by
    [found] = [r for r in find_runtimes({"PATH": str(bin_dir)}, RuntimeOptions(python_dirs=())) if r.kind == "java"]
    assert not found.declared


def test_the_declared_flag_crosses_the_wire(tmp_path: Path, pki: LabPKI) -> None:
    bundle = write_pem(tmp_path / "bundle.pem", pki.root_pem())
    stores = tuple(s.info for s in discover_stores({"REQUESTS_CA_BUNDLE": str(bundle)}, runtimes=NOTHING))
    result = ProbeResult(Target("h", 1), None, "h", Resolution((), 0.0), (), stores, 1, 2)
    back, _name, _version = result_from_wire(
        probe_pb2.ProbeResult.FromString(result_to_wire(result, "a", "1").SerializeToString())
    )
    flags = {t.name: t.declared for t in back.trust_stores}
    assert flags["requests_ca_bundle"] and not flags["system"]
    assert back.trust_stores == stores
