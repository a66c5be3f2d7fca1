"""The systemd units: hardened (systemd-analyze's exposure score), and consistent with the example
configs and the env file, down to a coordinator that starts and writes its history under the unit's
sandbox, as the README's systemd section sets it up."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tlsfleet.agent.cli import app as agent_app
from tlsfleet.agent.naming import NAME_PATTERN
from tlsfleet.coordinator.cli.app import app as tlsfleet_app
from tlsfleet.coordinator.fleet.inventory import parse_inventory
from tlsfleet.coordinator.service.config import parse_config

from . import sandbox
from .cli_parse import parse_command_line
from .units import environment, expand, last, read_env_file, service, variables

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
EXAMPLES = ROOT / "deploy" / "examples"
AGENT_UNIT = SYSTEMD / "tlsfleet-agent.service"
COORDINATOR_UNIT = SYSTEMD / "tlsfleet-coordinator.service"
MAX_EXPOSURE = 3.0
# Where the README installs the examples and the env file.
ETC = Path("/etc/tlsfleet")


def _exposure(unit: Path) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (systemd 252+ scores a unit file offline)")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
    )
    if "--offline" in done.stderr and done.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot score a unit file offline: {done.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", [AGENT_UNIT, COORDINATOR_UNIT], ids=lambda p: p.name)
def test_each_unit_is_hardened_to_an_exposure_of_at_most_3(unit: Path) -> None:
    assert _exposure(unit) <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", [AGENT_UNIT, COORDINATOR_UNIT], ids=lambda p: p.name)
def test_each_unit_keeps_the_sandbox_the_readme_describes(unit: Path) -> None:
    s = service(unit)
    assert last(s, "User") == "tlsfleet" and last(s, "Group") == "tlsfleet"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
    }.items():
        assert last(s, key) == value, key
    assert s["SystemCallFilter"][0] == "@system-service"


def _coordinator_config():
    """The example config where the README puts it, read by the coordinator's own loader."""
    data = tomllib.loads((EXAMPLES / "coordinator.toml").read_text())
    return parse_config(data, ETC / "coordinator.toml")


def test_everything_the_coordinator_writes_is_in_its_state_directory() -> None:
    s = service(COORDINATOR_UNIT)
    state = Path("/var/lib") / last(s, "StateDirectory")
    assert state == Path("/var/lib/tlsfleet")
    assert Path(last(s, "WorkingDirectory")) == state
    # Under ProtectSystem=strict only the state directory, a private /tmp and ReadWritePaths= are writable.
    writable = [state, *(Path(p) for p in s.get("ReadWritePaths", []))]
    config = _coordinator_config()
    for written in (config.storage.path, config.reports_dir):
        assert any(written.is_relative_to(w) for w in writable), written
    pki = Path(environment(s)["TLSFLEET_PKI_DIR"])
    assert pki.is_relative_to(state)
    # The inventory is read from /etc, beside the config, where ProtectSystem=strict keeps it read-only.
    assert config.inventory == ETC / "inventory.toml"
    inventory = parse_inventory(
        tomllib.loads((EXAMPLES / "inventory.toml").read_text()), path=config.inventory, pki_dir=pki
    )
    c = inventory.credentials
    assert all(p.is_relative_to(pki) for p in (c.ca, c.cert, c.key))


def test_the_coordinator_command_line_parses_and_names_the_config_the_readme_installs() -> None:
    program, *argv = expand(last(service(COORDINATOR_UNIT), "ExecStart"), {})
    assert program == "/usr/local/bin/tlsfleet"
    verbs, options = parse_command_line(tlsfleet_app, argv)
    assert verbs == ["coordinator", "serve"]
    assert Path(options["config"]) == ETC / "coordinator.toml"


def test_the_agent_command_line_takes_every_variable_from_the_env_file_and_parses() -> None:
    s = service(AGENT_UNIT)
    assert last(s, "EnvironmentFile") == str(ETC / "agent.env")
    env = read_env_file(SYSTEMD / "agent.env.example")
    command = last(s, "ExecStart")
    assert variables(command) <= set(env), f"not in agent.env.example: {variables(command) - set(env)}"
    program, *argv = expand(command, env)
    assert program == "/usr/local/bin/tlsfleet-agent"
    verbs, options = parse_command_line(agent_app, argv)
    assert verbs == ["serve"]
    assert Path(options["pki_dir"]) == ETC / "pki"
    assert NAME_PATTERN.match(options["name"])
    # The env file's agent is the example inventory's, reached on the port it listens on.
    inventory = parse_inventory(
        tomllib.loads((EXAMPLES / "inventory.toml").read_text()), path=ETC / "inventory.toml", pki_dir=ETC / "pki"
    )
    (entry,) = [a for a in inventory.agents if a.name == options["name"]]
    assert entry.address.rsplit(":", 1)[1] == options["listen"].rsplit(":", 1)[1]
    assert ("env", env["TLSFLEET_AGENT_ENV"]) in entry.labels


def test_the_agent_writes_nothing_so_its_unit_grants_no_writable_path() -> None:
    s = service(AGENT_UNIT)
    assert "StateDirectory" not in s and "ReadWritePaths" not in s


# The README's systemd steps for the coordinator, run in a stand-in for the unit's sandbox (sandbox.py):
# the examples installed in /etc/tlsfleet, the PKI made and a report run as the service user, then the
# unit's own ExecStart=.
_STEPS = r"""
export TLSFLEET_PKI_DIR
as_service "$TLSFLEET" pki init
as_service "$TLSFLEET" pki issue coordinator coordinator
set +e
as_service "$TLSFLEET" report run internal-daily --config /etc/tlsfleet/coordinator.toml
echo "report_run_exit=$?" >&2
set -e
exec setpriv --reuid=65534 --regid=65534 --clear-groups -- $EXEC_START
"""


@pytest.mark.e2e
@pytest.mark.root
def test_the_coordinator_starts_from_the_example_config_in_its_sandbox_and_writes_its_history(
    tmp_path: Path,
) -> None:
    sandbox.require_sandbox()
    s = service(COORDINATOR_UNIT)
    tlsfleet = shutil.which("tlsfleet", path=str(Path(sys.executable).parent))
    assert tlsfleet is not None
    state, etc = sandbox.prepare(tmp_path)
    (etc / "tlsfleet").mkdir()
    for name in ("coordinator.toml", "inventory.toml"):
        shutil.copy(EXAMPLES / name, etc / "tlsfleet" / name)
    # The unit's own command line, run by the interpreter under test instead of /usr/local/bin.
    exec_start = last(s, "ExecStart").replace("/usr/local/bin/tlsfleet", tlsfleet)
    coordinator = sandbox.start(tmp_path, _STEPS, {"TLSFLEET": tlsfleet, "EXEC_START": exec_start, **environment(s)})
    lines: list[str] = []
    try:
        assert coordinator.stderr is not None
        for line in coordinator.stderr:
            lines.append(line)
            if '"coordinator_started"' in line:
                break
        started = [json.loads(line) for line in lines if '"coordinator_started"' in line]
        if not started:
            coordinator.wait(10)
            sandbox.skip_if_unbuildable(coordinator, lines)
        assert started, "".join(lines[-20:])
    finally:
        coordinator.send_signal(signal.SIGTERM)
        try:
            coordinator.wait(30)
        except subprocess.TimeoutExpired:
            coordinator.kill()
            coordinator.wait()
    assert coordinator.returncode == 0, "".join(lines[-20:])
    (event,) = started
    assert event["history"] == "/var/lib/tlsfleet/history.sqlite"
    assert sorted(event["reports"]) == ["internal-daily", "prod-edge"]
    # The one-shot run before it (exit 0, or 1 for a critical finding: every agent is unreachable here).
    assert any(line.strip() in ("report_run_exit=0", "report_run_exit=1") for line in lines), lines
    with sqlite3.connect(state / "history.sqlite") as db:
        assert db.execute("SELECT report FROM runs").fetchall() == [("internal-daily",)]
    assert (state / "reports" / "internal-daily" / "latest.html").is_file()
    assert (state / "pki" / "coordinators" / "coordinator.pem").is_file()
    owners = {p.stat().st_uid for p in state.rglob("*")}
    assert owners == {sandbox.SERVICE_UID}, "everything in the state directory belongs to the service user"
    assert not (tmp_path / "upper" / "tlsfleet" / "reports").exists(), "nothing was written to /etc"
