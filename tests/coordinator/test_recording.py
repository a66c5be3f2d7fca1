"""Recordings: what `probe --save` writes reads back exactly, and damaged files are named as such."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import AiaFetch, Failure, Verdict
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import Variant
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.recording import RecordingError, load, save


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    pki = LabPKI()
    leaf = pki.issue_leaf("api.example.test")
    chain = (leaf.der, pki.intermediate.der)
    aia = AiaFetch(
        url="http://ca.test/i.der",
        fetched=True,
        certificate=pki.intermediate.der,
        completes_chain=True,
        verdict=Verdict.OK,
    )
    main = observe(
        outcome(
            "web-1",
            [address("127.0.0.2", chain, stores={"system": Verdict.OK, "certifi": Verdict.UNKNOWN_ISSUER})],
            labels=[("env", "prod")],
            offset_ms=172_800_000.0,
            error_ms=3.5,
        ),
        outcome("web-2", [replace(address("127.0.0.3", (leaf.der,), native=Verdict.UNKNOWN_ISSUER), aia=aia)]),
        outcome("web-3", [address("127.0.0.4", connect_failure=Failure.REFUSED)]),
        silent("web-4", VantageState.OFFLINE),
        variants=[
            Variant(
                "no SNI",
                request(send_sni=False),
                (outcome("web-1", [address("127.0.0.2", chain)], req=request(send_sni=False)),),
            )
        ],
    )
    path = tmp_path / "case.json"
    save(path, main)
    loaded = load(path)
    assert loaded == main


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "is not JSON"),
        ('{"kind": "something-else"}', "is not a tlsfleet recording"),
        ('{"kind": "tlsfleet-recording", "schema": 99}', "schema 99"),
        ('{"kind": "tlsfleet-recording", "schema": 1, "request": {}, "outcomes": [{"state": "ok"}]}', "damaged"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(RecordingError, match=fragment):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="does not exist"):
        load(tmp_path / "absent.json")


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "case.json"
    save(path, observe(outcome("web-1", [address("127.0.0.2")])))
    assert json.loads(path.read_text())["kind"] == "tlsfleet-recording"
    assert [p.name for p in tmp_path.iterdir()] == ["case.json"]
