"""The README tells the truth: every `tlsfleet` command it shows names verbs and options the CLI has,
and its "Try it on your machine" block, run as written, shows what the README says it shows."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer._click.exceptions import UsageError

from tests.cli_tree import PROGRAMS, parse
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TRY_DIR = "/tmp/tlsfleet-try"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, heredoc bodies and comments left out."""
    out: list[list[str]] = []
    lines = iter(block.replace("\\\n", " ").splitlines())
    for line in lines:
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            for body in lines:
                if body.strip() == heredoc.group(1):
                    break
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # VAR=value before the command
        words = [w for w in words if w != "&"]
        if words:
            out.append(words)
    return out


def readme_cli_commands() -> list[list[str]]:
    found = [c for b in sh_blocks(README.read_text()) for c in commands(b) if c[0] in PROGRAMS]
    return found


def test_the_readme_shows_commands() -> None:
    shown = readme_cli_commands()
    assert len(shown) >= 10
    assert {c[1] for c in shown if c[0] == "tlsfleet"} >= {"probe", "agent", "agents", "report", "coordinator"}


@pytest.mark.parametrize("words", readme_cli_commands(), ids=lambda w: " ".join(w)[:70])
def test_every_readme_command_names_what_the_cli_has(words: list[str]) -> None:
    try:
        parse(words)
    except UsageError as error:
        pytest.fail(f"README command `{shlex.join(words)}`: {error.format_message()}")


def test_the_parser_check_can_fail() -> None:
    with pytest.raises(UsageError, match="--no-such-option"):
        parse(["tlsfleet", "probe", "example.test", "--no-such-option"])
    with pytest.raises(UsageError):
        parse(["tlsfleet", "no-such-verb"])


def try_it_block() -> str:
    [block] = [b for b in sh_blocks(README.read_text()) if TRY_DIR in b]
    return block


@pytest.mark.e2e
def test_try_it_on_your_machine_runs_as_written(tmp_path: Path) -> None:
    """The block up to its first `report run`, in a directory of our own, then the service it starts."""
    block = try_it_block()
    setup, _, rest = block.partition("tlsfleet report run try --config coordinator.toml\n")
    assert rest, "the block no longer runs `tlsfleet report run try --config coordinator.toml`"
    workdir = tmp_path / "try"
    script = (setup + "tlsfleet report run try --config coordinator.toml\n").replace(TRY_DIR, str(workdir))
    out, err = _run_from_the_clone(script + "\necho EXIT=$?\nkill %1 %2 %3", timeout=120)
    assert "EXIT=1" in out, f"report run should exit 1 (a finding about edge-2)\n{out}\n{err}"
    assert (workdir / "reports" / "try" / "latest.html").is_file()
    # "The report names the private root missing from edge-2's trust store."
    [markdown] = (workdir / "reports" / "try").glob("1-*.md")
    text = markdown.read_text()
    assert "`private_ca_not_trusted`" in text and "missing from the trust store of edge-2" in text, text
    assert "Traceback" not in out + err


@pytest.mark.e2e
def test_the_try_it_service_serves_its_metrics(tmp_path: Path) -> None:
    block = try_it_block()
    assert "tlsfleet coordinator serve --config coordinator.toml" in block
    assert "curl -s 127.0.0.1:9464/metrics | grep tlsfleet_agent_up" in block
    config = tmp_path / "coordinator.toml"
    (tmp_path / "inventory.toml").write_text("")
    port = _free_port()
    config.write_text(
        '[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\n'
        f'metrics_listen = "127.0.0.1:{port}"\n[storage]\npath = "history.sqlite"\n'
        '[[report]]\nname = "try"\ntargets = ["localhost:8443"]\ninterval = "1m"\ninclude_local = true\n'
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "tlsfleet.coordinator.cli", "coordinator", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/metrics", service)
    finally:
        service.send_signal(signal.SIGINT)
        try:
            service.wait(20)
        finally:
            _stop_group(service)
    assert "tlsfleet_agent_up" in body


def _run_from_the_clone(script: str, *, timeout: float) -> tuple[str, str]:
    """A README block run by bash from the clone, as a reader runs it after `make`: .venv/bin first on PATH,
    its background jobs waited for, and its whole process group killed after, whatever happened."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "COLUMNS": "200"}
    shell = subprocess.Popen(
        ["bash", "-c", "cd " + shlex.quote(str(ROOT)) + "\n" + script + "\nwait\n"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        return shell.communicate(timeout=timeout)
    finally:
        _stop_group(shell)


def _get_when_up(url: str, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.read().decode()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within 30 s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


SHARED_DIR = "/tmp/tlsfleet-shared"
SHARED_URL = "postgresql://tlsfleet:secret@127.0.0.1:5432/tlsfleet"


@pytest.mark.e2e
@pytest.mark.slow
def test_the_shared_deployment_runs_as_written(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """Two coordinators on one PostgreSQL, two dial-out agents: the block as written, on ports of our own."""
    [block] = [b for b in sh_blocks(README.read_text()) if SHARED_DIR in b]
    assert SHARED_URL in block, "the block no longer names the history by the URL this test replaces"
    workdir = tmp_path / "shared"
    script = block.replace(SHARED_DIR, str(workdir)).replace(SHARED_URL, postgres_server.create_database())
    for port in ("8443", "7451", "7452", "9471", "9472"):
        assert port in script
        script = script.replace(port, str(_free_port()))
    out, err = _run_from_the_clone(script, timeout=150)
    assert "Traceback" not in out + err
    runs = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+shared\s", line)]
    assert len(runs) >= 2, f"report list shows the slots' runs\n{out}\n{err}"
    claimed = [
        json.loads(line)["slot"]
        for hub in ("hub-a", "hub-b")
        for line in (workdir / f"{hub}.log").read_text().splitlines()
        if '"run_claimed"' in line
    ]
    assert len(claimed) == len(set(claimed)) >= len(runs), "each slot claimed once, by one coordinator"
    assert re.search(r"^ok$", out, flags=re.MULTILINE), "/healthz"
    # /metrics (with its report label) and /probe (without), from the two coordinators in turn.
    for labels in ('agent="edge-1",report="shared",', 'agent="edge-1",'):
        assert f'tlsfleet_probe_success{{{labels}target="localhost:' in out
    assert re.search(r'tlsfleet_probe_success\{agent="edge-2",report="shared",target="localhost:\d+"\} 0\.0', out)
    assert re.search(r'tlsfleet_probe_success\{agent="edge-1",target="localhost:\d+"\} 1\.0', out)
