"""Recordings: the raw outcomes of one probe (and its variants), saved to a file and read back.

`tlsfleet probe --save FILE` writes one; `tlsfleet diagnose FILE` runs the diagnosis on it offline, to
attach evidence to a ticket or to pin a regression test. Results are stored as the wire messages'
canonical JSON, so a recording reads back exactly what the agents sent.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from .. import __version__
from ..agent import wire
from ..agent.bounded_read import FileTooLarge, read_capped_text
from ..agent.documents import SCHEMA_VERSION, document
from ..agent.errors import UsageError
from ..agent.model import ProbeOptions, ProbeRequest
from ..agent.naming import LABEL_KEY_PATTERN, MAX_LABEL_VALUE, MAX_LABELS, NAME_PATTERN, NAME_RULE, RESERVED_NAMES
from ..agent.probe.request_limits import RequestError, validate_request
from ..v1 import probe_pb2
from .message_json import message_to_dict
from .observation import Observation, Variant
from .outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageKind, VantageState

MAX_RECORDING_BYTES = 256 * 1024 * 1024
# A live vantage's address is an inventory HOST:PORT or the peer of a dial-in stream.
MAX_VANTAGE_ADDRESS_CHARS = 300


class RecordingError(UsageError):
    """A file that is not a readable tlsfleet recording; the message says why."""


def observation_to_dict(observation: Observation) -> dict[str, Any]:
    """An observation as plain JSON-ready data: requests and results as the wire messages' canonical JSON."""
    return {
        "request": _request_json(observation.request),
        "outcomes": [_outcome_json(o) for o in observation.outcomes],
        "variants": [
            {
                "label": v.label,
                "request": _request_json(v.request),
                "outcomes": [_outcome_json(o) for o in v.outcomes],
            }
            for v in observation.variants
        ],
    }


def observation_from_dict(data: dict[str, Any]) -> Observation:
    """The inverse of `observation_to_dict`; RecordingError names what is damaged."""
    try:
        return _observation_from(data)
    except (KeyError, TypeError, ValueError, AttributeError, json_format.ParseError) as error:
        raise RecordingError(f"observation is damaged: {type(error).__name__}: {error}") from None


def save(path: Path, observation: Observation) -> None:
    """Write atomically: a crash mid-write leaves the old file or none, never half a recording."""
    saved = document("recording", {"tlsfleet_version": __version__, **observation_to_dict(observation)})
    path = path.expanduser()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(saved, out, indent=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(path: Path) -> Observation:
    path = path.expanduser()
    try:
        loaded = json.loads(read_capped_text(path, MAX_RECORDING_BYTES))
    except FileNotFoundError:
        raise RecordingError(f"recording {path} does not exist") from None
    except FileTooLarge:
        raise RecordingError(f"recording {path} is larger than {MAX_RECORDING_BYTES // 2**20} MiB") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecordingError(f"recording {path} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise RecordingError(f"recording {path} is not JSON: {error}") from None
    except RecursionError:  # json recurses once per nested array or object
        raise RecordingError(f"recording {path} nests arrays or objects too deeply to be a recording") from None
    if not isinstance(loaded, dict) or loaded.get("kind") != "tlsfleet-recording":
        raise RecordingError(f"{path} is not a tlsfleet recording (made by `tlsfleet probe --save FILE`)")
    if loaded.get("schema") != SCHEMA_VERSION:
        raise RecordingError(
            f"recording {path} has schema {loaded.get('schema')!r}; this tlsfleet reads schema {SCHEMA_VERSION}"
        )
    try:
        observation = _observation_from(loaded)
    # A field of the wrong shape or size: a short list, an enum given as a huge or infinite number.
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, json_format.ParseError) as error:
        raise RecordingError(f"recording {path} is damaged: {type(error).__name__}: {error}") from None
    for outcome in (*observation.outcomes, *(o for v in observation.variants for o in v.outcomes)):
        _check_vantage(path, outcome.vantage)
    return observation


def _check_vantage(path: Path, vantage: VantageInfo) -> None:
    """A vantage's identity is printed on every row: a file may not make it longer than a live fleet can."""
    name = vantage.name
    if not (NAME_PATTERN.match(name) or name in RESERVED_NAMES):
        raise RecordingError(f"recording {path}: vantage name {name[:64]!r} is not an agent name; {NAME_RULE}")
    if len(vantage.address) > MAX_VANTAGE_ADDRESS_CHARS:
        raise RecordingError(
            f"recording {path}: vantage {name}'s address is longer than {MAX_VANTAGE_ADDRESS_CHARS} characters"
        )
    if len(vantage.labels) > MAX_LABELS:
        raise RecordingError(f"recording {path}: vantage {name} has more than {MAX_LABELS} labels")
    for key, value in vantage.labels:
        if not LABEL_KEY_PATTERN.match(key) or len(value) > MAX_LABEL_VALUE:
            raise RecordingError(
                f"recording {path}: vantage {name}: label {key[:64]!r} is not accepted; a label key of letters, "
                f"digits, '_', '.', '-' and a value of at most {MAX_LABEL_VALUE} characters"
            )


def _observation_from(data: dict[str, Any]) -> Observation:
    return Observation(
        request=_request_from(data["request"]),
        outcomes=tuple(_outcome_from(o) for o in data["outcomes"]),
        variants=tuple(
            Variant(
                label=str(v["label"]),
                request=_request_from(v["request"]),
                outcomes=tuple(_outcome_from(o) for o in v["outcomes"]),
            )
            for v in data.get("variants", [])
        ),
    )


def _request_json(request: ProbeRequest) -> dict[str, Any]:
    return message_to_dict(wire.request_to_wire(request))


def _request_from(data: dict[str, Any]) -> ProbeRequest:
    message = json_format.ParseDict(data, probe_pb2.ProbeRequest())
    # A recorded request keeps exactly what was sent; defaults only fill fields that were never set.
    request = wire.request_from_wire(message, ProbeOptions())
    try:  # what was sent passed these bounds; an edited file is held to them too
        return validate_request(request)
    except RequestError as error:
        raise ValueError(f"its request: {error}") from None


def _outcome_json(outcome: ProbeOutcome) -> dict[str, Any]:
    v = outcome.vantage
    data: dict[str, Any] = {
        "vantage": {"name": v.name, "address": v.address, "labels": [list(p) for p in v.labels], "kind": v.kind.value},
        "state": outcome.state.value,
        "error": outcome.error,
        "agent_version": outcome.agent_version,
        "duration_ms": outcome.duration_ms,
        "clock": None if outcome.clock is None else [outcome.clock.offset_ms, outcome.clock.error_ms],
        "result": None,
    }
    if outcome.result is not None:
        data["result"] = message_to_dict(wire.result_to_wire(outcome.result, v.name, outcome.agent_version))
    return data


def _outcome_from(data: dict[str, Any]) -> ProbeOutcome:
    v = data["vantage"]
    result = None
    if data.get("result") is not None:
        message = json_format.ParseDict(data["result"], probe_pb2.ProbeResult())
        # A file is held to what a live agent's reply is held to: the same tables, reports and history read it.
        problem = wire.result_problem(message)
        if problem:
            raise ValueError(f"the result of vantage {wire.shown(str(v['name']))}: {problem}")
        result, _name, _version = wire.result_from_wire(message)
    clock = data.get("clock")
    if clock is not None:
        clock = ClockEstimate(offset_ms=_finite(clock[0], "clock"), error_ms=_finite(clock[1], "clock"))
    return ProbeOutcome(
        vantage=VantageInfo(
            name=str(v["name"]),
            address=str(v["address"]),
            labels=tuple((str(k), str(value)) for k, value in v.get("labels", [])),
            kind=VantageKind(v.get("kind", VantageInfo.kind)),
        ),
        state=VantageState(data["state"]),
        result=result,
        agent_version=_text(data.get("agent_version", ""), "agent_version"),
        clock=clock,
        error=_text(data.get("error", ""), "error"),
        duration_ms=_finite(data.get("duration_ms", 0.0), "duration_ms"),
    )


def _finite(value: object, field: str) -> float:
    # Python's json reads NaN and Infinity, which no JSON output of ours may carry on.
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"{field} {number!r} is not a finite number")
    return number


def _text(value: object, field: str) -> str:
    text = str(value)
    if len(text) > wire.MAX_WIRE_TEXT:
        raise ValueError(f"{field} is {len(text)} characters long; at most {wire.MAX_WIRE_TEXT} are accepted")
    return text
