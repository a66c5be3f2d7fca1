"""Hostile files and values through the real CLI: each is one line naming the problem and exit 2, where
each once ended in an internal error (exit 70)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.coordinator.cli.test_errors import assert_one_line_error, cli

pytestmark = pytest.mark.e2e  # every test runs the real CLI

DEEP_TOML = "x = " + "[" * 100_000 + "]" * 100_000


def _config(tmp_path: Path, reports_dir: str = "reports") -> Path:
    (tmp_path / "inventory.toml").write_text("")
    path = tmp_path / "coordinator.toml"
    path.write_text(
        f"""
[coordinator]
inventory = "inventory.toml"
reports_dir = "{reports_dir}"

[storage]
path = "history.sqlite"

[[report]]
name = "edge"
targets = ["127.0.0.1:9"]
interval = "1h"
"""
    )
    return path


def test_a_deeply_nested_inventory(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text(DEEP_TOML)
    done = cli("agents", "--inventory", str(tmp_path / "inventory.toml"), env_home=tmp_path)
    assert_one_line_error(done, 2, "nests arrays or tables too deeply")


def test_a_deeply_nested_recording(tmp_path: Path) -> None:
    (tmp_path / "case.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(cli("diagnose", str(tmp_path / "case.json"), env_home=tmp_path), 2, "too deeply")


def test_a_run_id_too_large_for_the_history(tmp_path: Path) -> None:
    done = cli("report", "show", "9" * 30, "--config", str(_config(tmp_path)), env_home=tmp_path)
    assert_one_line_error(done, 2, "is neither a run id nor 'latest'")


@pytest.mark.parametrize("verb", [("report", "run", "edge"), ("coordinator", "serve")])
def test_a_file_where_the_reports_go(tmp_path: Path, verb: tuple[str, ...]) -> None:
    (tmp_path / "reports").write_text("a file")
    done = cli(*verb, "--config", str(_config(tmp_path)), env_home=tmp_path)
    assert_one_line_error(done, 2, "reports_dir", "is not a directory")
    assert not (tmp_path / "history.sqlite").exists()  # refused before anything was probed or kept


def test_a_coordinator_service_that_is_not_there_is_named_as_a_coordinator(tmp_path: Path) -> None:
    from tests.coordinator.service.test_webhooks import closed_port
    from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue

    pki = tmp_path / ".config" / "tlsfleet" / "pki"
    init_fleet_ca(pki)
    issue(pki, "coordinator", "coordinator")
    port = closed_port()
    done = cli("agents", "--no-local", "--coordinator", f"hub@127.0.0.1:{port}", env_home=tmp_path)
    assert_one_line_error(
        done, 2, f"nothing listens at 127.0.0.1:{port} (connection refused): is coordinator 'hub' running there?"
    )


def test_a_silent_coordinator_service_is_given_up_on_at_the_deadline(tmp_path: Path) -> None:
    import socket
    import time

    from tlsfleet.agent.pki.fleet_ca import init_fleet_ca, issue

    pki = tmp_path / ".config" / "tlsfleet" / "pki"
    init_fleet_ca(pki)
    issue(pki, "coordinator", "coordinator")
    with socket.socket() as silent:  # accepts TCP (the backlog does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        done = cli("agents", "--no-local", "--timeout", "1", "--coordinator", f"127.0.0.1:{port}", env_home=tmp_path)
        took = time.monotonic() - started
    assert_one_line_error(done, 2, f"no answer from 127.0.0.1:{port} within the deadline")
    assert took < 4.5, took  # the 1 s asked for, not the listing's own 5 s, plus the CLI's start
