"""`agent serve` options refused at start in one line: labels a coordinator would refuse at every registration,
coordinator identities that no certificate can carry, a listener that cannot bind."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tlsfleet.agent.cli import AgentServeArguments, build_config
from tlsfleet.agent.errors import UsageError
from tlsfleet.coordinator.lab.agent_process import agent_command


def _config(labels: tuple[str, ...]) -> object:
    return build_config(AgentServeArguments(name="edge-1", listen="127.0.0.1:0", insecure=True, labels=labels))


def test_labels_within_the_bounds_are_kept() -> None:
    config = _config(tuple(f"k{i}={'v' * 253}" for i in range(64)))
    assert len(config.labels) == 64  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (("env=" + "v" * 254,), "--label env: the value is 254 characters; at most 253 are accepted"),
        (tuple(f"k{i}=v" for i in range(65)), "65 --label options; at most 64 are accepted"),
    ],
)
def test_labels_a_coordinator_would_refuse_are_refused_at_start(labels: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        _config(labels)


@pytest.mark.parametrize("name", ["", "ops_1", "A B"])
def test_a_coordinator_identity_no_certificate_can_carry_is_refused(name: str) -> None:
    # It once reached the gRPC interceptor as a ValueError: exit 70 with "internal error".
    args = AgentServeArguments(name="edge-1", listen="127.0.0.1:0", insecure=True, allowed_coordinators=(name,))
    with pytest.raises(UsageError, match=f"--allow-coordinator: invalid name {name!r}"):
        build_config(args)


@pytest.mark.e2e
def test_a_port_another_process_holds_is_named_as_such() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [*agent_command(), "serve", "--name", "edge-1", "--listen", f"127.0.0.1:{port}", "--insecure"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another process holds that port)"
    )
