"""The envelope of every JSON document tlsfleet prints, writes or sends: `schema` (the version of that kind's
layout) and `kind` (which layout), first, so that a reader can tell what it holds before reading on.

Each kind has a JSON Schema in coordinator/schemas/<kind>.schema.json. Compatibility: within one schema
version fields are only added, never renamed, retyped or removed; a change that breaks a reader raises the
version, and `schema` says which one a document follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1
KINDS = ("probe", "probes", "agents", "pki", "runs", "report", "alert", "recording", "error")


def document(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """`body` inside the envelope of `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}; known: {', '.join(KINDS)}")
    return {"schema": SCHEMA_VERSION, "kind": f"tlsfleet-{kind}", **body}
