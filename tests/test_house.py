"""The floor plan holds: the wheel carries every package folder and each of its modules imports from it,
`agent/` never imports `coordinator/`, only the demo command imports the lab, an agent process loads no
coordinator module, and no two modules import each other, even through others or inside functions."""

from __future__ import annotations

import ast
import functools
import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each importable package lives in the source tree (pyproject's package-dir mapping).
SOURCE_DIRS = {
    "tlsfleet": ROOT / "proto" / "tlsfleet",
    "tlsfleet.agent": ROOT / "agent",
    "tlsfleet.coordinator": ROOT / "coordinator",
}
LAB = "tlsfleet.coordinator.lab"
LAB_IMPORTERS = {"tlsfleet.coordinator.cli.demo"}  # the one package module allowed to start the lab


def source_modules() -> dict[str, Path]:
    """Every hand-written module of the package, by its import name."""
    modules: dict[str, Path] = {}
    for package, folder in SOURCE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts]
            if package == "tlsfleet" and parts and parts[0] == "v1":
                continue  # generated code, and tlsfleet.v1 is not hand-written
            if parts and parts[0] in ("agent", "coordinator") and package == "tlsfleet":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = source_modules()


def imports_of(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every tlsfleet module `name` imports (at any depth of the file), with the line."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tlsfleet"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tlsfleet"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def known(target: str) -> str | None:
    """The module a dotted import name lands in (a package's __init__ for a package)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Each module's imports of tlsfleet modules; made when a test first asks (collection stays quick)."""
    return {name: {t for t, _ in imports_of(name, path) if known(t)} for name, path in MODULES.items()}


def test_the_walk_sees_the_whole_package() -> None:
    """Guards against a guard that checks nothing: the modules and arrows it works from are really there."""
    assert {"tlsfleet.agent.probe.engine", "tlsfleet.coordinator.fleet.fanout", LAB + ".fleet"} <= set(MODULES)
    assert "tlsfleet.agent.model" in import_graph()["tlsfleet.coordinator.outcomes"]
    assert sum(len(edges) for edges in import_graph().values()) > 300


def test_every_import_is_relative_inside_the_package() -> None:
    absolute = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("tlsfleet"):
                absolute.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name.startswith("tlsfleet") for a in node.names):
                absolute.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not absolute, absolute


def test_agent_never_imports_coordinator() -> None:
    wrong = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
        for name in MODULES
        if name.startswith("tlsfleet.agent")
        for target, line in imports_of(name, MODULES[name])
        if target.startswith("tlsfleet.coordinator")
    ]
    assert not wrong, wrong


def test_only_the_demo_command_imports_the_lab() -> None:
    wrong = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
        for name in MODULES
        if not name.startswith(LAB) and name not in LAB_IMPORTERS
        for target, line in imports_of(name, MODULES[name])
        if target == LAB or target.startswith(LAB + ".")
    ]
    assert not wrong, wrong


def test_the_diagnosis_reads_only_the_data_model() -> None:
    """Pure: observations in, findings out. No fleet, service, command line or lab."""
    outside = ("tlsfleet.coordinator.fleet", "tlsfleet.coordinator.service", "tlsfleet.coordinator.cli", LAB)
    wrong = [
        f"{name} imports {target}"
        for name in MODULES
        if name.startswith("tlsfleet.coordinator.diagnosis")
        for target, _ in imports_of(name, MODULES[name])
        if target.startswith(outside) or target == "tlsfleet.coordinator.probing"
    ]
    assert not wrong, wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_anywhere() -> None:
    # A package's __init__ re-exporting its modules is an arrow from the package to them, not a cycle.
    graph = {
        name: {t for t in edges if not (MODULES[name].name == "__init__.py" and t.startswith(name + "."))}
        for name, edges in import_graph().items()
    }
    graph = {name: {known(t) or t for t in edges} - {name} for name, edges in graph.items()}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            # Importing `a.b.c` runs `a.b`'s __init__ first: a module's package is one of its imports.
            graph[name].discard(name.rpartition(".")[0])
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.fixture(scope="module")
def wheel_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a user installs it: the built wheel, unpacked."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("tlsfleet-*.whl")
    tree = out / "tree"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    return tree


@pytest.mark.e2e
def test_the_wheel_carries_every_package_folder(wheel_tree: Path) -> None:
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"} | {"tlsfleet.v1"}
    missing = sorted(f for f in folders if not (wheel_tree / f.replace(".", "/") / "__init__.py").is_file())
    assert not missing, f"left out of the wheel (add them to pyproject's packages): {missing}"
    shipped = {
        ".".join(p.relative_to(wheel_tree).with_suffix("").parts)
        for p in (wheel_tree / "tlsfleet").rglob("*.py")
        if "v1" not in p.relative_to(wheel_tree).parts
    }
    expected = {n if MODULES[n].name != "__init__.py" else n + ".__init__" for n in MODULES}
    assert expected - shipped == set()


@pytest.mark.e2e
def test_the_wheel_carries_the_license(wheel_tree: Path) -> None:
    """pyproject says Apache-2.0; the text itself ships with every install."""
    [license_file] = wheel_tree.glob("tlsfleet-*.dist-info/licenses/LICENSE")
    assert license_file.read_text() == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_file.read_text()


@pytest.mark.e2e
def test_the_wheel_carries_the_json_schemas(wheel_tree: Path) -> None:
    shipped = {p.name for p in (wheel_tree / "tlsfleet" / "coordinator" / "schemas").glob("*.schema.json")}
    assert shipped == {p.name for p in (ROOT / "coordinator" / "schemas").glob("*.schema.json")}
    assert "probe.schema.json" in shipped


@pytest.mark.e2e
def test_every_module_imports_from_the_wheel(wheel_tree: Path) -> None:
    names = sorted(n for n in MODULES if not n.endswith("__main__"))
    code = (
        "import importlib, json, sys\n"
        f"names = {names!r}\n"
        "for n in names: importlib.import_module(n)\n"
        "import tlsfleet\n"
        "print(json.dumps({'root': tlsfleet.__file__, 'count': len(names)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(wheel_tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=wheel_tree
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["root"].startswith(str(wheel_tree)), report  # the wheel's copy, not the source tree
    assert report["count"] == len(names) > 80


@pytest.mark.e2e
def test_an_agent_process_loads_no_coordinator_module(tmp_path: Path) -> None:
    """A real `tlsfleet-agent serve`, serving until SIGTERM, with the interpreter listing every import."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tlsfleet.agent", "serve", "--name", "house", "--listen", "127.0.0.1:0", "--insecure"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    imported: list[str] = []
    listening = False
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("import time:"):
                imported.append(line.rsplit("|", 1)[-1].strip())
            elif line.startswith("{") and "listening" in line:
                listening = True
                break
        assert listening, "the agent never said it was listening"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert "tlsfleet.agent.daemon" in imported and "grpc" in imported  # the list is real
    assert [m for m in imported if m.startswith("tlsfleet.coordinator")] == []


@pytest.mark.e2e
def test_a_probe_from_this_machine_alone_loads_no_grpc(tmp_path: Path) -> None:
    """No agent to dial, no coordinator to ask: the wire's library is not worth its start-up time."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tlsfleet.coordinator.cli", "probe", "127.0.0.1:1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("TLSFLEET_INVENTORY", "TLSFLEET_COORDINATOR")}
        | {"HOME": str(tmp_path)},  # no inventory: this machine is the only vantage
    )
    assert '"kind": "tlsfleet-probe"' in done.stdout, done.stderr[-2000:]
    loaded = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "tlsfleet.coordinator.diagnosis" in loaded
    assert [name for name in loaded if name == "grpc" or name.startswith("grpc.")] == []


# Code a probe from this machine alone does not run: a proxy, client certificates, an agent's address policy,
# AIA fetching, host facts, the wire, the fleet CA, SSH and PKCS#12 keys, TOML, and rich's tables (a bare "rich"
# line is structlog's import of it, refused).
NOT_FOR_A_LOCAL_PROBE = (
    "cryptography.hazmat.primitives.serialization.pkcs12",
    "cryptography.hazmat.primitives.serialization.ssh",
    "grpc",
    "rich.console",
    "tomllib",
    "tlsfleet.agent.hostfacts",
    "tlsfleet.agent.pki.fleet_ca",
    "tlsfleet.agent.probe.aia",
    "tlsfleet.agent.probe.client_certs",
    "tlsfleet.agent.probe.policy",
    "tlsfleet.agent.probe.proxy",
)


@pytest.mark.e2e
def test_a_verified_probe_from_this_machine_alone_loads_only_what_it_runs(tmp_path: Path) -> None:
    """A whole probe (handshake, every store judged, diagnosis, JSON) imports none of the modules only other
    probes use: each costs start-up time in every `tlsfleet probe` run."""
    from tlsfleet.coordinator.lab.agent_process import trust_env
    from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
    from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

    pki = LabPKI("House")
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    env = trust_env(tmp_path, root, {k: v for k, v in os.environ.items() if not k.startswith("TLSFLEET_")})
    env |= {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no inventory: local only
    with TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate)) as server:
        target = [f"localhost:{server.port}", "--address", "127.0.0.1", "--agents", "local", "--json"]
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "tlsfleet.coordinator.cli", "probe", *target],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    [vantage] = json.loads(done.stdout)["vantages"]
    assert vantage["state"] == "ok" and vantage["result"]["addresses"][0]["native"]["verdict"] == "ok"
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"tlsfleet.agent.probe.handshake", "tlsfleet.agent.trust.verify", "cryptography.x509"} <= loaded
    assert sorted(m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_A_LOCAL_PROBE)) == []
