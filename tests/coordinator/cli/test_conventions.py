"""What every verb shares: -h, an example and its exit codes in --help (each example a command the CLI
has), shell completion, and `report show latest` / `report show NAME` beside a run id."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.cli_tree import leaf_commands, parse
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

VERBS = dict(leaf_commands())


def test_the_walk_finds_every_verb() -> None:
    assert {"tlsfleet probe", "tlsfleet report show", "tlsfleet agent serve", "tlsfleet-agent serve"} <= set(VERBS)


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_examples_and_its_exit_codes(verb: str) -> None:
    text = VERBS[verb].epilog or ""
    assert "Examples:\n  $ " in text, f"{verb} --help shows no example"
    assert "Exit codes: 0 " in text and "2 bad input" in text and "130 interrupted" in text, text
    examples = [line.split("$ ", 1)[1] for line in text.splitlines() if line.startswith("  $ ")]
    for example in examples:
        words = shlex.split(example)
        assert " ".join(words[:2]) in verb or words[0] == "tlsfleet-agent", f"{verb}: example of another verb"
        parse(words)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.e2e
def test_dash_h_and_completion() -> None:
    for args in (("-h",), ("report", "show", "-h"), ("agent", "serve", "-h")):
        done = _cli(*args)
        assert done.returncode == 0 and done.stdout.startswith("Usage: "), done.stderr
    env = {**os.environ, "_TLSFLEET_COMPLETE": "complete_bash", "COMP_WORDS": "tlsfleet rep", "COMP_CWORD": "1"}
    done = subprocess.run(["tlsfleet"], capture_output=True, text=True, timeout=60, env=env, executable=_tlsfleet())
    assert done.stdout.split() == ["report"], done.stderr


def _tlsfleet() -> str:
    # Completion is wired to the console script's name, so run the installed script itself.
    import sys

    return str(Path(sys.executable).parent / "tlsfleet")


@pytest.mark.e2e
def test_report_show_by_id_name_and_latest(tmp_path: Path) -> None:
    pki = LabPKI("Conventions")
    write_pem(tmp_path / "root.pem", pki.root.cert_pem)
    with TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate)) as server:
        config = tmp_path / "coordinator.toml"
        config.write_text(
            '[storage]\npath = "history.sqlite"\n'
            f'[[report]]\nname = "edge"\ntargets = ["localhost:{server.port}"]\ninterval = "1h"\n'
            "include_local = true\n"
        )
        env = trust_env(tmp_path, tmp_path / "root.pem")
        for _ in range(2):
            assert _cli("report", "run", "edge", "--config", str(config), env=env).returncode == 0
    listed = _cli("report", "list", "--config", str(config))
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["run", "report", "started", "(UTC)", "critical", "warning", "info"]
    assert [row.split()[:2] for row in rows] == [["2", "edge"], ["1", "edge"]]
    shown = {which: _cli("report", "show", which, "--config", str(config)) for which in ("2", "edge", "latest", "1")}
    assert all(done.returncode == 0 for done in shown.values()), {k: v.stderr for k, v in shown.items()}
    assert shown["2"].stdout == shown["edge"].stdout == shown["latest"].stdout != shown["1"].stdout
    assert "run 2" in shown["latest"].stdout.splitlines()[0]
    typo = _cli("report", "show", "egde", "--config", str(config))
    assert typo.returncode == 2
    assert typo.stderr.strip().endswith("did you mean edge?"), typo.stderr
    missing = _cli("report", "show", "9", "--config", str(config))
    assert missing.returncode == 2 and "run 9 is not in the history" in missing.stderr
