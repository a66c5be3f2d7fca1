"""Protobuf messages as ProtoJSON dicts, exactly as `json_format.MessageToDict` makes them, with the work of
reading each message type's descriptor done once per type instead of once per field per message.

The history and recordings keep every agent reply in this form: a report run of 200 targets x 10 agents
converts 2,000 replies, and json_format's reflection cost about as much as the rest of saving the run. A
type this module cannot convert the way json_format does (maps, extensions, well-known types, 32-bit
floats, enum values with their own JSON names, closed enums) is left to json_format whole, so the output
never differs.
"""

from __future__ import annotations

import binascii
import functools
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["message_to_dict"]

# What a message becomes, as one function per message type.
_ToDict = Callable[[Message], dict[str, Any]]
# What one field's value becomes.
_ToValue = Callable[[Any], Any]


def message_to_dict(message: Message) -> Any:
    """`json_format.MessageToDict(message)` with its default options: a dict, or for a well-known type such
    as Timestamp what json_format makes of it."""
    return _converter(message.DESCRIPTOR)(message)


@functools.cache
def _converter(descriptor: Descriptor) -> _ToDict:
    if not _plain(descriptor, set()):
        return json_format.MessageToDict
    fields: dict[FieldDescriptor, tuple[str, _ToValue | None, bool]] = {}

    def to_dict(message: Message) -> dict[str, Any]:
        if not fields:  # filled at first use: a type may hold itself
            fields.update((f, (f.json_name, _value_converter(f), f.is_repeated)) for f in descriptor.fields)
        js: dict[str, Any] = {}
        for field, value in message.ListFields():
            name, convert, repeated = fields[field]
            if convert is None:
                js[name] = list(value) if repeated else value
            else:
                js[name] = [convert(item) for item in value] if repeated else convert(value)
        return js

    return to_dict


def _plain(descriptor: Descriptor, seen: set[str]) -> bool:
    """Whether this type and every type it holds convert field by field, with nothing json_format treats
    specially."""
    if descriptor.full_name in seen:
        return True
    seen.add(descriptor.full_name)
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.GetOptions().map_entry:
        return False
    if descriptor.extension_ranges:
        return False
    for field in descriptor.fields:
        if field.message_type is not None and not _plain(field.message_type, seen):
            return False
        if field.enum_type is not None and not _plain_enum(field.enum_type):
            return False
        if field.type == FieldDescriptor.TYPE_FLOAT or field.is_extension:  # shortest-float printing: theirs
            return False
    return True


def _plain_enum(enum: EnumDescriptor) -> bool:
    # A closed enum makes json_format raise on an unknown number; an option may rename a value.
    return not enum.is_closed and all(not value.GetOptions().ListFields() for value in enum.values)


def _value_converter(field: FieldDescriptor) -> _ToValue | None:
    """None: the value as it is (strings, 32-bit integers)."""
    kind = field.type
    if field.message_type is not None:
        return _converter(field.message_type)
    if field.enum_type is not None:
        return _EnumNames((value.number, value.name) for value in field.enum_type.values).__getitem__
    if kind == FieldDescriptor.TYPE_BYTES:
        return _base64
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return str
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.TYPE_BOOL:
        return bool
    return None


class _EnumNames(dict[int, str | int]):
    def __missing__(self, number: int) -> int:
        return number  # an open enum's unknown number stays a number


def _base64(value: bytes) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"
