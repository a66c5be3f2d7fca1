"""`report list --report NAME`: a name the configuration does not define is a usage error naming the
configured reports (exit 2), not "no runs yet"; a configured report without runs still says "no runs yet",
and a report taken out of the configuration still lists the runs the history keeps of it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tlsfleet_command(), *args], capture_output=True, text=True, timeout=120, env=env)


def _config(path: Path, names: list[str], port: int = 9) -> Path:
    path.write_text(
        '[storage]\npath = "history.sqlite"\n'
        + "".join(
            f'[[report]]\nname = "{name}"\ntargets = ["localhost:{port}"]\ninterval = "1h"\ninclude_local = true\n'
            for name in names
        )
    )
    return path


def test_an_unknown_report_is_named_with_the_configured_ones(tmp_path: Path) -> None:
    config = _config(tmp_path / "coordinator.toml", ["edge", "payments"])
    for extra in ((), ("--json",)):
        done = _cli("report", "list", "--config", str(config), "--report", "nosuch", *extra)
        assert done.returncode == 2, done.stdout + done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line == (
            f"error: --report 'nosuch' is not a report in {config} and has no runs in the history; "
            "configured reports: edge, payments"
        )
        assert "no runs yet" not in done.stdout
    assert json.loads(done.stdout)["exit_code"] == 2
    typo = _cli("report", "list", "--config", str(config), "--report", "egde")
    assert typo.returncode == 2 and typo.stderr.strip().endswith("did you mean edge?"), typo.stderr
    configured = _cli("report", "list", "--config", str(config), "--report", "edge")
    assert (configured.returncode, configured.stdout.strip()) == (0, "no runs yet"), configured.stderr


def test_a_report_taken_out_of_the_configuration_keeps_its_runs_listed(pki: LabPKI, tmp_path: Path) -> None:
    write_pem(tmp_path / "root.pem", pki.root.cert_pem)
    env = trust_env(tmp_path, tmp_path / "root.pem")
    with TlsServer(ServedIdentity.of(pki.issue_leaf("localhost"), pki.intermediate)) as server:
        config = _config(tmp_path / "coordinator.toml", ["edge"], server.port)
        ran = _cli("report", "run", "edge", "--config", str(config), env=env)
        assert ran.returncode == 0, ran.stderr
    _config(config, ["payments"])
    listed = _cli("report", "list", "--config", str(config), "--report", "edge")
    assert listed.returncode == 0, listed.stderr
    [_, row] = listed.stdout.splitlines()
    assert row.split()[:2] == ["1", "edge"]
