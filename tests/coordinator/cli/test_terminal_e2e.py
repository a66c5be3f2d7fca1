"""`tlsfleet probe` in a real terminal: tmux runs the CLI against a real three-agent lab (two agents trust
the lab's root, one does not) at 80, 120 and 200 columns, and we read the screen it leaves: the matrix
fits, reproduce commands are whole, the healthy verdict is not red, progress shows while waiting and is
gone after, and Ctrl-C prints what arrived."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.agent import exit_codes
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]

SGR = re.compile(r"\x1b\[([0-9;]*)m")
EXIT = re.compile(r"\[exit (\d+)\]")
PROGRESS = re.compile(r"(vantages answered|targets done) \d+/\d+")
SCREEN_TIMEOUT_S = 60.0
# Variables that would tell rich a width or no colour: the terminal's own size must decide.
_NOT_INHERITED = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TMUX", "TERM")


@dataclass
class Lab:
    workdir: Path
    server: TlsServer
    silent: TlsServer
    agents: dict[str, AgentProcess]
    inventory: Path

    @property
    def target(self) -> str:
        return f"localhost:{self.server.port}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("terminal")
    pki = LabPKI("Acme")
    server = TlsServer(ServedIdentity.of(pki.issue_leaf("localhost", "127.0.0.1"), pki.intermediate)).start()
    silent = TlsServer(None, mode="stall").start()
    root = write_pem(workdir / "acme-root.pem", pki.root_pem())
    other = write_pem(workdir / "other-root.pem", LabPKI("Other").root_pem())
    agents: dict[str, AgentProcess] = {}
    try:
        for name, cafile in (("web-1", root), ("web-2", root), ("batch-1", other)):
            agents[name] = start_agent(name, workdir, env=trust_env(workdir, cafile), labels=[("env", name[:-2])])
        inventory = workdir / "inventory.toml"
        inventory.write_text("".join(a.inventory_entry() for a in agents.values()))
        yield Lab(workdir, server, silent, agents, inventory)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()
        silent.stop()


class Terminal:
    """A private tmux server (its own socket) whose panes run one command each and stay after it ends."""

    def __init__(self, workdir: Path) -> None:
        self._socket = str(workdir / "tmux.sock")
        # Its own configuration: none of the machine's, and scrollback enough to read a whole run back.
        self._config = workdir / "tmux.conf"
        self._config.write_text("set-option -g history-limit 100000\n")
        self._env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED} | {"TERM": "xterm-256color"}
        self._count = 0

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self._socket, "-f", str(self._config), *args],
            capture_output=True,
            text=True,
            env=self._env,
            timeout=30,
            check=True,
        )
        return done.stdout

    def start(self, argv: Sequence[str], width: int, height: int = 50) -> str:
        self._count += 1
        name = f"t{self._count}"
        # The exit code is printed after the command, and the pane is kept for reading.
        shell = f'{shlex.join(argv)}; echo "[exit $?]"; sleep 600'
        self._tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), shell)
        return name

    def screen(self, pane: str, *, escapes: bool = False) -> str:
        """Everything the pane showed, scrollback included; lines the terminal wrapped are joined back."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", pane, *(["-e"] if escapes else []))

    def wait_for(self, pane: str, pattern: re.Pattern[str], timeout: float = SCREEN_TIMEOUT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.screen(pane))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern.pattern!r} not on the screen:\n{self.screen(pane)}")
            time.sleep(0.1)

    def send_keys(self, pane: str, *keys: str) -> None:
        self._tmux("send-keys", "-t", pane, *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self._socket, "kill-server"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        term.close()


def _probe_argv(lab: Lab, target: str, *extra: str, inventory: Path | None = None) -> list[str]:
    return [*tlsfleet_command(), "probe", target, "--inventory", str(inventory or lab.inventory), "--no-local", *extra]


def _attributes_at(line: str, word: str) -> set[str]:
    """The SGR parameters in force where `word` starts on a line captured with escapes."""
    active: set[str] = set()
    for found in SGR.finditer(line[: line.index(word)]):
        params = found.group(1).split(";") if found.group(1) else ["0"]
        if "0" in params:
            active.clear()
        active.update(p for p in params if p != "0")
    return active


def _normalized(command: str) -> str:
    return re.sub(r"-attime \d+", "-attime N", command)  # the reference time is each run's own


@pytest.fixture(scope="module")
def reproduce_commands(lab: Lab) -> list[str]:
    done = subprocess.run(_probe_argv(lab, lab.target, "--json"), capture_output=True, text=True, timeout=60)
    commands = [c for f in json.loads(done.stdout)["findings"] for c in f["reproduce"]]
    assert commands, done.stdout
    return commands


@pytest.mark.parametrize(("width", "matrix_lines"), [(80, 16), (120, 12), (200, 10)])
def test_the_matrix_fits_the_terminal(
    lab: Lab, terminal: Terminal, reproduce_commands: list[str], width: int, matrix_lines: int
) -> None:
    pane = terminal.start(_probe_argv(lab, lab.target), width, height=50)
    assert terminal.wait_for(pane, EXIT).group(1) == str(exit_codes.PROBLEM)
    text = terminal.screen(pane)
    lines = [line.rstrip() for line in text.splitlines()]
    commands = [line.strip()[2:] for line in lines if line.lstrip().startswith("$ ")]
    # Everything but the reproduce commands (whole lines the terminal wraps only on screen) fits the width.
    assert [line for line in lines if len(line) > width and not line.lstrip().startswith("$ ")] == [], text
    assert sorted(map(_normalized, commands)) == sorted(map(_normalized, reproduce_commands)), text
    shared = next(line for line in lines if line.startswith("all 3 vantages:"))
    assert "TLSv1.3" in shared and "address 127.0.0.1" in shared
    assert any("issuer Acme Intermediate CA" in line for line in lines)
    # Column titles are whole words wherever they are shown (a table header, or "title:" in a block).
    for title in ("native verdict", "trust stores"):
        assert any(title in line for line in lines), text
    assert not any(re.search(r"\b(nati|verd|stor|ve)\b", line) for line in lines), text
    matrix = lines[: next(i for i, line in enumerate(lines) if "vantages answered" in line) + 1]
    assert len(matrix) <= matrix_lines, "\n".join(matrix)
    assert len(lines) < 100, text
    # The healthy verdict is green and never red; the one host that fails is red.
    coloured = terminal.screen(pane, escapes=True).splitlines()
    named = {name: next(i for i, line in enumerate(coloured) if name in SGR.sub("", line)) for name in lab.agents}
    for name, word in (("web-1", "ok"), ("web-2", "ok"), ("batch-1", "unknown_issuer (20)")):
        line = coloured[named[name] + 1] if width < 100 else coloured[named[name]]
        line = line if word in SGR.sub("", line) else next(c for c in coloured[named[name] :] if word in c)
        active = _attributes_at(line, word)
        colour = "31" if name == "batch-1" else "32"
        assert colour in active and ({"31", "32"} - {colour}).isdisjoint(active), (name, repr(line))


@pytest.mark.slow
def test_progress_shows_while_waiting_and_is_gone_after(lab: Lab, terminal: Terminal) -> None:
    pane = terminal.start(_probe_argv(lab, f"localhost:{lab.silent.port}", "--timeout", "9"), 80)
    seen = terminal.wait_for(pane, re.compile(r"vantages answered (\d)/3 · \d+\.\d s"), timeout=20)
    assert seen.group(1) == "0"  # the server never answers the handshake: nobody is done yet
    terminal.wait_for(pane, EXIT)
    assert not PROGRESS.search(terminal.screen(pane))
    assert "3 of 3 vantages answered" in terminal.screen(pane)


@pytest.mark.slow
def test_no_progress_bytes_into_a_pipe_or_with_json(lab: Lab, terminal: Terminal) -> None:
    argv = _probe_argv(lab, f"localhost:{lab.silent.port}", "--timeout", "6")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == exit_codes.PROBLEM, done.stderr
    assert "vantages answered 0/3" not in done.stderr and "\x1b[" not in done.stderr, done.stderr
    pane = terminal.start([*argv, "--json"], 80)
    deadline = time.monotonic() + 20
    while not EXIT.search(screen := terminal.screen(pane)):
        assert "vantages answered 0/3" not in screen
        assert time.monotonic() < deadline, screen
        time.sleep(0.1)


def test_ctrl_c_prints_the_vantages_that_answered_and_exits_130(lab: Lab, terminal: Terminal) -> None:
    stalled = start_agent("stalled", lab.workdir / "stalled", env=trust_env(lab.workdir, lab.workdir / "acme-root.pem"))
    inventory = lab.workdir / "with-stalled.toml"
    answering = [lab.agents["web-1"], lab.agents["batch-1"]]
    inventory.write_text("".join(a.inventory_entry() for a in answering) + stalled.inventory_entry())
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        pane = terminal.start(_probe_argv(lab, lab.target, "--timeout", "30", inventory=inventory), 80)
        terminal.wait_for(pane, re.compile(r"vantages answered 2/3"), timeout=30)
        terminal.send_keys(pane, "C-c")
        assert terminal.wait_for(pane, EXIT, timeout=20).group(1) == str(exit_codes.INTERRUPTED)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
        stalled.stop()
    text = terminal.screen(pane)
    assert "interrupted: 2 of 3 answered" in text
    assert "2 of 2 vantages answered" in text  # the matrix of those that did
    assert "web-1" in text and "batch-1" in text and "stalled" not in text
    assert "unknown_issuer (20)" in text
    assert not PROGRESS.search(text)
    assert "Traceback" not in text


@pytest.mark.slow
def test_report_run_counts_targets_and_ctrl_c_says_how_many_were_done(lab: Lab, terminal: Terminal) -> None:
    config = lab.workdir / "coordinator.toml"
    config.write_text(
        "[coordinator]\n"
        f'inventory = "{lab.inventory}"\n'
        f'reports_dir = "{lab.workdir / "reports"}"\n'
        "[storage]\n"
        'backend = "sqlite"\n'
        f'path = "{lab.workdir / "history.sqlite"}"\n'
        "[[report]]\n"
        'name = "lab"\n'
        f'targets = ["{lab.target}", "localhost:{lab.silent.port}"]\n'
        'interval = "24h"\n'
        'probe_timeout = "30s"\n'
        'formats = ["json"]\n'
    )
    pane = terminal.start([*tlsfleet_command(), "report", "run", "lab", "--config", str(config)], 80)
    # The healthy target is done at once; the silent one holds the run until its handshakes time out.
    terminal.wait_for(pane, re.compile(r"targets done 1/2 · \d+\.\d s"), timeout=30)
    terminal.send_keys(pane, "C-c")
    assert terminal.wait_for(pane, EXIT, timeout=20).group(1) == str(exit_codes.INTERRUPTED)
    text = terminal.screen(pane)
    assert "interrupted: 1 of 2 targets done" in text
    assert not PROGRESS.search(text)
    assert "Traceback" not in text and "never retrieved" not in text
