"""message_to_dict gives exactly what json_format.MessageToDict gives, for every message type on the wire."""

from __future__ import annotations

import math

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tlsfleet.coordinator.message_json import message_to_dict
from tlsfleet.v1 import agent_pb2, link_pb2, probe_pb2

MODULES = (probe_pb2, agent_pb2, link_pb2)
WIRE_TYPES = sorted({d.full_name: d for m in MODULES for d in m.DESCRIPTOR.message_types_by_name.values()}.items())

# Values json_format prints in their own way: non-finite and negative-zero doubles, int64 beyond a double's
# precision, bytes that are not text, text that is not ASCII, numbers no enum value has.
DOUBLES = (0.5, -0.0, 1e300, math.inf, -math.inf, math.nan, 123456.789)
INTS64 = (-(2**63), 2**53 + 1, -1, 7)
UINTS64 = (2**64 - 1, 2**53 + 1, 1)
INTS32 = (-(2**31), 2**31 - 1, 3)
TEXTS = ("é ☃ \x1b[2J", "", "plain")
BYTES = (bytes(range(256)), b"", b"\x00\xff")


def _values(field: FieldDescriptor, variant: int) -> list[object]:
    """A few values for a scalar or enum field, different for each variant."""
    cpp = field.cpp_type
    if field.type == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values] + [999]  # 999: a number no value has
        pool: tuple[object, ...] = tuple(numbers)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        pool = BYTES
    elif field.type == FieldDescriptor.TYPE_STRING:
        pool = TEXTS
    elif field.type == FieldDescriptor.TYPE_BOOL:
        pool = (True, False)
    elif cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        pool = DOUBLES
    elif cpp == FieldDescriptor.CPPTYPE_INT64:
        pool = INTS64
    elif cpp == FieldDescriptor.CPPTYPE_UINT64:
        pool = UINTS64
    elif cpp == FieldDescriptor.CPPTYPE_UINT32:
        pool = (2**32 - 1, 0, 5)
    else:
        pool = INTS32
    return [pool[(variant + i) % len(pool)] for i in range(3 if field.is_repeated else 1)]


def _fill(message: Message, variant: int, depth: int = 0) -> None:
    """Every field of `message` set (nested messages to a depth of three), values chosen by `variant`."""
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and field is not oneof.fields[variant % len(oneof.fields)]:
            continue  # one member of a oneof at a time, a different one per variant
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if field.is_repeated:
                for i in range(2):
                    _fill(getattr(message, field.name).add(), variant + i, depth + 1)
            else:
                _fill(getattr(message, field.name), variant, depth + 1)
                getattr(message, field.name).SetInParent()
        elif field.is_repeated:
            getattr(message, field.name).extend(_values(field, variant))
        else:
            setattr(message, field.name, _values(field, variant)[0])


def _same(got: object, want: object) -> bool:
    """Equal, with NaN equal to NaN and -0.0 told from 0.0."""
    if isinstance(want, float) and isinstance(got, float):
        return (math.isnan(got) and math.isnan(want)) or (
            got == want and math.copysign(1, got) == math.copysign(1, want)
        )
    if isinstance(want, dict) and isinstance(got, dict):
        return list(got) == list(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    return type(got) is type(want) and got == want


@pytest.mark.parametrize(("name", "descriptor"), WIRE_TYPES, ids=[name for name, _ in WIRE_TYPES])
def test_every_wire_type_converts_as_json_format_does(name: str, descriptor: Descriptor) -> None:
    cls = next(getattr(m, descriptor.name) for m in MODULES if descriptor.name in m.DESCRIPTOR.message_types_by_name)
    assert _same(message_to_dict(cls()), json_format.MessageToDict(cls()))
    printed: set[str] = set()
    for variant in range(max([8, *(len(o.fields) for o in descriptor.oneofs)])):
        message = cls()
        _fill(message, variant)
        want = json_format.MessageToDict(message)
        got = message_to_dict(message)
        assert _same(got, want), f"{name}, variant {variant}: {got!r} != {want!r}"
        printed.update(want)
    # Every field was printed by some variant: the comparison compared each of them.
    assert printed == {f.json_name for f in descriptor.fields}


def test_the_test_messages_reach_every_kind_of_value() -> None:
    """The fill above sets what json_format prints specially, so the comparison covers it."""
    kinds = {(f.type, f.is_repeated) for _, d in WIRE_TYPES for f in d.fields}
    for needed in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_DOUBLE):
        assert any(kind == needed for kind, _ in kinds), needed
    assert any(kind == FieldDescriptor.TYPE_ENUM for kind, _ in kinds)
    assert any(repeated for _, repeated in kinds)


def test_types_json_format_prints_specially_are_left_to_it() -> None:
    stamp = timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=5)
    assert message_to_dict(stamp) == json_format.MessageToDict(stamp) == "2027-01-15T08:00:00.000000005Z"
    struct = struct_pb2.Struct()
    struct.update({"a": [1, "two", None], "b": {"c": True}})
    assert message_to_dict(struct) == json_format.MessageToDict(struct)


def test_unknown_enum_numbers_stay_numbers() -> None:
    message = probe_pb2.StoreVerdict(at_agent_time=999)  # type: ignore[arg-type]
    assert message_to_dict(message)["atAgentTime"] == 999 == json_format.MessageToDict(message)["atAgentTime"]


def test_variants_differ() -> None:
    """Different variants really are different messages (the parametrized comparison is not one case eight times)."""
    dumps = {json_format.MessageToJson(_filled(probe_pb2.ProbeResult, v), sort_keys=True) for v in range(4)}
    assert len(dumps) == 4


def _filled(cls: type[Message], variant: int) -> Message:
    message = cls()
    _fill(message, variant)
    return message
