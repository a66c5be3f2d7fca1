"""`agent serve --extra-store LABEL=PATH` and `--runtime KIND=PATH`: a path that does not exist or that the
agent cannot read is refused at start in one line naming the option and the path (exit 2, as --client-cert's
checks do), instead of an agent that starts and reports a broken store in every probe."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tlsfleet.agent.cli import AgentServeArguments, build_config
from tlsfleet.agent.errors import UsageError
from tlsfleet.coordinator.lab.agent_process import agent_command


def _args(**options: tuple[str, ...]) -> AgentServeArguments:
    return AgentServeArguments(name="edge-1", listen="127.0.0.1:0", insecure=True, runtime_search=False, **options)


def test_a_missing_extra_store_is_refused_naming_option_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "corp-ca.pem"
    with pytest.raises(UsageError) as caught:
        build_config(_args(extra_stores=(f"corp={missing}",)))
    assert str(caught.value) == f"--extra-store corp={missing}: {missing} does not exist"


def test_a_path_through_a_file_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="does not exist"):
        build_config(_args(runtimes=(f"java={tmp_path / 'file' / 'cacerts'}",)))


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as caught:
        build_config(_args(extra_stores=(f"corp={fifo}",)))
    assert str(caught.value) == f"--extra-store corp={fifo}: {fifo} is neither a regular file nor a directory"


def test_readable_stores_and_runtimes_are_kept_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "certs").mkdir()
    monkeypatch.chdir(tmp_path)
    config = build_config(_args(extra_stores=("corp=ca.pem", "dir=certs"), runtimes=(f"python={tmp_path}",)))
    assert config.extra_stores == {"corp": tmp_path / "ca.pem", "dir": tmp_path / "certs"}  # type: ignore[attr-defined]
    assert config.runtimes == (("python", str(tmp_path)),)  # type: ignore[attr-defined]


def _unprivileged() -> list[str]:
    """A prefix that runs the agent without root's power to read any file (none needed when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no way to make a file unreadable to the agent")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("option", "value", "what"),
    [
        ("--extra-store", "corp={file}", "file"),
        ("--extra-store", "corp={dir}", "dir"),
        ("--runtime", "java={file}", "file"),
        ("--runtime", "python={dir}", "dir"),
        ("--extra-store", "corp={missing}", "missing"),
    ],
)
def test_agent_serve_refuses_an_unreadable_or_missing_path_at_start(
    tmp_path: Path, option: str, value: str, what: str
) -> None:
    paths = {"file": tmp_path / "ca.pem", "dir": tmp_path / "certs", "missing": tmp_path / "nowhere" / "ca.pem"}
    paths["file"].write_text("not read\n")
    paths["dir"].mkdir()
    paths["file"].chmod(0)
    paths["dir"].chmod(0)
    given = value.format(**paths)
    try:
        done = subprocess.run(
            [
                *_unprivileged(),
                *agent_command(),
                "serve",
                "--name",
                "edge-1",
                "--listen",
                "127.0.0.1:0",
                "--insecure",
                "--no-runtime-search",
                option,
                given,
            ],
            capture_output=True,
            text=True,
            timeout=30,  # an agent that started would serve until killed
        )
    finally:
        paths["file"].chmod(0o600)
        paths["dir"].chmod(0o700)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    full = paths[what]
    why = f"{full} does not exist" if what == "missing" else f"cannot read {full}: Permission denied"
    assert line == f"error: {option} {given}: {why}"
