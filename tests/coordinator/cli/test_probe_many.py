"""Several targets at once: the targets file's syntax, the worst exit code, the summary's order, and a real
run of two targets (one healthy, one refusing connections) through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.coordinator.test_json_schemas import validate
from tests.outcomes import address, observe, outcome, silent
from tlsfleet.agent import exit_codes
from tlsfleet.agent.model import Failure
from tlsfleet.coordinator.cli.probe_many import TargetsFileError, read_targets_file, summary_table, worst_exit
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer


def test_targets_file_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("# the edge\napi.example.test:443   # public\n\n  https://login.example.test/  \r\n")
    assert read_targets_file(path) == ("api.example.test:443", "https://login.example.test/")
    path.write_text("api.example.test other.example.test\n")
    with pytest.raises(TargetsFileError, match=r"line 1: 'api\.example\.test other\.example\.test' is not one target"):
        read_targets_file(path)
    with pytest.raises(TargetsFileError, match="does not exist"):
        read_targets_file(tmp_path / "missing.txt")


def test_the_exit_code_is_the_worst() -> None:
    ok, problem, unanswered = exit_codes.OK, exit_codes.PROBLEM, exit_codes.UNANSWERED
    assert worst_exit([ok, unanswered, ok]) == unanswered
    assert worst_exit([unanswered, problem]) == problem
    assert worst_exit([]) == ok


def test_the_summary_puts_the_worst_target_first() -> None:
    healthy = observe(outcome("edge-1", [address("10.0.0.1", (b"leaf",))]))
    broken = observe(outcome("edge-1", [address("10.0.0.2", connect_failure=Failure.REFUSED)]), silent("edge-2"))
    finding = Finding(cause=Cause.UNREACHABLE, severity=Severity.CRITICAL, summary="refused", agents=("edge-1",))
    table = summary_table([(healthy, [], 0), (broken, [finding], 1)])
    first_column = list(table.columns[0].cells)
    assert first_column == ["api.example.test:443", "api.example.test:443"]
    assert [str(c) for c in table.columns[1].cells] == ["CRITICAL", "none"]
    assert list(table.columns[4].cells) == ["1/2", "1/1"]


@pytest.mark.e2e
def test_two_targets_from_the_cli(tmp_path: Path) -> None:
    pki = LabPKI("Many")
    write_pem(tmp_path / "root.pem", pki.root.cert_pem)
    env = trust_env(tmp_path, tmp_path / "root.pem")
    with TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate)) as server:
        (tmp_path / "targets.txt").write_text(f"localhost:{server.port}  # the lab server\n")
        with TlsServer(None, by_sni={"x": ServedIdentity.of(pki.issue_leaf("x"))}) as other:
            closed = other.port
        base = [*tlsfleet_command(), "probe", f"localhost:{closed}", "--targets-file", "targets.txt"]
        text = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        as_json = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        saved = subprocess.run(
            [*base, "--save", "x.json"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
        )
    assert text.returncode == exit_codes.PROBLEM, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].strip() == "2 targets"
    rows = [line for line in lines[:8] if line.startswith("│")]
    assert f"localhost:{closed}" in rows[0] and "CRITICAL" in rows[0] and "unreachable" in rows[0]
    assert f"localhost:{server.port}" in rows[1]
    document = json.loads(as_json.stdout)
    assert validate(document) == "probes" and document["exit_code"] == exit_codes.PROBLEM
    assert [t["target"] for t in document["targets"]] == [f"localhost:{closed}", f"localhost:{server.port}"]
    assert saved.returncode == 2 and "--save applies to one target" in saved.stderr
