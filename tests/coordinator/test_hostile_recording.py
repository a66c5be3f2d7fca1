"""Hand-edited and broken recordings through `tlsfleet diagnose FILE`: each bad file is one line naming the
file and what is wrong (exit 2), never a traceback; what a file may say is what a live agent may send."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.coordinator.cli.test_errors import assert_one_line_error, cli
from tests.coordinator.test_hostile_agent import ESCAPES, _reply
from tlsfleet.agent import wire
from tlsfleet.agent.errors import UsageError
from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target
from tlsfleet.coordinator import recording
from tlsfleet.coordinator.cli.diagnose import run_diagnose
from tlsfleet.coordinator.observation import Observation
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageKind, VantageState


def _recording(tmp_path: Path) -> dict[str, Any]:
    """A recording as `probe --save` writes it: an honest agent that answered, one that was offline."""
    request = ProbeRequest(Target("target.test", 443), ProbeOptions(reference_time_ns=time.time_ns()))
    message = _reply("edge-1", wire.request_to_wire(request))
    result, _name, version = wire.result_from_wire(message)
    answered = ProbeOutcome(
        VantageInfo("edge-1", "127.0.0.1:7000", (), VantageKind.GRPC),
        VantageState.OK,
        result=result,
        agent_version=version,
        clock=ClockEstimate(1.0, 2.0),
        duration_ms=3.0,
    )
    offline = ProbeOutcome(VantageInfo("edge-2", "127.0.0.1:7001"), VantageState.OFFLINE, error="refused")
    path = tmp_path / "base.json"
    recording.save(path, Observation(request, (answered, offline)))
    return json.loads(path.read_text())


def _write(tmp_path: Path, data: Any, name: str = "case.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _diagnose_in_process(path: Path, *, json_output: bool) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(UsageError):
        run_diagnose(path, fail_on="warning", clock_tolerance=2.0, json_output=json_output)
    return out.getvalue()


def _address(data: dict[str, Any]) -> dict[str, Any]:
    return data["outcomes"][0]["result"]["addresses"][0]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d["outcomes"][0].update(duration_ms=float("nan")), "duration_ms nan is not a finite number"),
        (lambda d: d["outcomes"][0].update(clock=[float("inf"), 1.0]), "clock inf is not a finite number"),
        (lambda d: d["outcomes"][0].update(error="e" * 100_000), "error is 100000 characters long; at most 16384"),
        (lambda d: d["request"]["target"].update(host=ESCAPES), "its request: target host"),
        (
            lambda d: _address(d)["handshake"].update(durationMs="Infinity"),
            "handshake.duration_ms is inf; accepted: a finite number",
        ),
        (
            lambda d: _address(d).update(views=[{"client": "CLIENT_PYTHON"}] * 2),
            "addresses[0].views names a client more than once",
        ),
        (
            lambda d: _address(d)["stores"][0].update(sameAs=["system"]),
            "addresses[0].stores[0] judges store 'system' a second time",
        ),
        (
            lambda d: _address(d)["stores"][0].update(verifiedPath=["\x1b[31m"]),
            "verified_path holds '\\x1b[31m', not a SHA-256 fingerprint",
        ),
        (
            lambda d: d["outcomes"][0]["result"].update(addresses=[_address(d)] * 65),
            "addresses has 65 entries; at most 64 are accepted",
        ),
    ],
    ids=[
        "nan-duration",
        "inf-clock",
        "long-error",
        "escape-host",
        "inf-handshake",
        "two-views",
        "store-twice",
        "path-garbage",
        "65-addresses",
    ],
)
def test_an_edited_recording_is_refused_naming_the_file_and_the_field(tmp_path: Path, edit, said) -> None:
    data = _recording(tmp_path)
    edit(data)
    path = _write(tmp_path, data)
    done = cli("diagnose", str(path), env_home=tmp_path)
    assert_one_line_error(done, 2, f"recording {path} is damaged", said)
    assert "\x1b" not in done.stderr


@pytest.mark.e2e
def test_a_truncated_recording_is_not_json(tmp_path: Path) -> None:
    text = json.dumps(_recording(tmp_path))
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    assert_one_line_error(cli("diagnose", str(path), env_home=tmp_path), 2, f"recording {path} is not JSON")


@pytest.mark.e2e
def test_a_recording_naming_certificates_and_stores_that_are_not_there_is_diagnosed(tmp_path: Path) -> None:
    """A verified path through certificates that no agent was served, a verdict shared with a store the agent
    does not list, a vantage's error of escape sequences: diagnosed, and shown escaped."""
    data = _recording(tmp_path)
    store = _address(data)["stores"][0]
    store["verifiedPath"] = ["ab" * 32, "cd" * 32]
    store["sameAs"] = ["no-such-store"]
    data["outcomes"][1]["error"] = ESCAPES
    path = _write(tmp_path, data)
    done = cli("diagnose", str(path), env_home=tmp_path)
    assert done.returncode == 3, (done.stdout, done.stderr)  # a vantage did not answer; nothing fails
    assert "Traceback" not in done.stderr
    for c in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert c not in done.stdout
    assert "agent offline: \\x1b[2J" in done.stdout
    report = json.loads(cli("diagnose", str(path), "--json", env_home=tmp_path).stdout)
    assert {v["agent"]: v["state"] for v in report["vantages"]} == {"edge-1": "ok", "edge-2": "offline"}


BAD_VALUES: list[Any] = [None, True, -1, 2**70, -(2**70), 1e308, "", "x", "\x1b[2J", [], {}, [1, 2], {"a": 1}]


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found += _leaves(item, (*path, key))
    return found


@pytest.mark.slow  # over a thousand edited recordings, two seconds: the full suite runs it
def test_wrong_types_and_huge_numbers_at_every_level_are_usage_errors_never_crashes(tmp_path: Path) -> None:
    """Every value of a recording, in turn, replaced by each of BAD_VALUES or removed: diagnosed or refused as a
    usage error, with the table and --json alike."""
    base = _recording(tmp_path)
    path = tmp_path / "case.json"
    cases = 0
    for where in _leaves(base):
        for value in [*BAD_VALUES, KeyError]:
            data = copy.deepcopy(base)
            parent = data
            for key in where[:-1]:
                parent = parent[key]
            if value is KeyError:
                del parent[where[-1]]
            else:
                parent[where[-1]] = value
            path.write_text(json.dumps(data))
            for json_output in (False, True):
                shown = _diagnose_in_process(path, json_output=json_output)
                assert "\x1b" not in shown, (where, value)
                if json_output and shown:
                    json.loads(shown, parse_constant=lambda c, at=where, v=value: pytest.fail(f"{c} at {at}={v!r}"))
                cases += 1
    assert cases > 1000
