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
        ("[" * 100_000 + "]" * 100_000, "nests arrays or objects too deeply"),
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


def test_fields_of_the_wrong_shape_are_a_damaged_recording(tmp_path: Path) -> None:
    """A clock of one number, an enum given as infinity: one line naming the recording, not exit 70."""
    path = tmp_path / "case.json"
    leaf = LabPKI().issue_leaf("a.test").der
    save(path, observe(outcome("web-1", [address("127.0.0.2", (leaf,), failure=Failure.CERT_VERIFY)])))
    saved = json.loads(path.read_text())
    for damage in (
        lambda doc: doc["outcomes"][0].update(clock=[1.0]),
        lambda doc: doc["outcomes"][0]["result"]["addresses"][0]["handshake"].update(failure=float("inf")),
    ):
        doc = json.loads(json.dumps(saved))
        damage(doc)
        path.write_text(json.dumps(doc))
        with pytest.raises(RecordingError, match="is damaged"):
            load(path)


@pytest.mark.parametrize(
    ("vantage", "fragment"),
    [
        ({"name": "a" * 1_000_000}, "is not an agent name"),
        ({"name": "Web 1"}, "is not an agent name"),
        ({"address": "x" * 100_000}, "address is longer than 300 characters"),
        ({"labels": [[f"k{i}", "v"] for i in range(65)]}, "more than 64 labels"),
        ({"labels": [["env", "v" * 254]]}, "label 'env' is not accepted"),
    ],
)
def test_a_vantage_no_live_fleet_could_have_is_refused(tmp_path: Path, vantage: dict, fragment: str) -> None:
    """A vantage's identity is printed on every row; a hostile file with a 1 MB name once took minutes and
    gigabytes to print. Now it is refused in one line."""
    path = tmp_path / "case.json"
    save(path, observe(outcome("web-1", [address("127.0.0.2")])))
    doc = json.loads(path.read_text())
    doc["outcomes"][0]["vantage"].update(vantage)
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordingError, match=fragment) as refused:
        load(path)
    assert str(path) in str(refused.value) and len(str(refused.value)) < 400


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="does not exist"):
        load(tmp_path / "absent.json")


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "case.json"
    save(path, observe(outcome("web-1", [address("127.0.0.2")])))
    assert json.loads(path.read_text())["kind"] == "tlsfleet-recording"
    assert [p.name for p in tmp_path.iterdir()] == ["case.json"]
