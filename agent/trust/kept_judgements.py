"""Judgements of served chains kept across CLI processes, so that probing the same endpoint again within the
validity span of its certificates does not judge it again against every store (some 15 ms of a 180 ms
`tlsfleet probe`).

A judgement is a function of what verify.py keys it by in process (the served chain, the store's content with
its trust settings, the expected name, the time span, the store's verification rules) and of what a process
holds fixed: the code that judges (every module of this package and the model's, by the modification time and
size the interpreter checks before it runs their cached bytecode), the libcrypto it verifies with (its version
and the host's default security level, which OPENSSL_CONF sets), cryptography's version (the strict profile)
and the interpreter. The first part is the entry's key, the second the file's stamp (store_cache): an entry is
only ever found by the same inputs, judged by the same code and libraries. Only judgements of a whole span
are kept: one tied to its exact second would never be asked for again. Each store's validity edges (which the
spans rest on) are kept beside them, by the store's content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import ssl
import sys
from enum import Enum

from . import libcrypto, store_cache

__all__ = ["Kept", "keeping", "key_text", "load", "load_edges", "store", "store_edges"]

# (verdict value, verified path, detail, OpenSSL code, strict note), as verify.ChainJudgement holds them
Kept = tuple[str, tuple[str, ...], str, int, str]

_stamp: str | None = None


def _stamp_now() -> str | None:
    """The stamp of this process's judging code and libraries; None when OpenSSL's verifier is unusable here
    (such a judgement says so, and is not worth keeping)."""
    global _stamp
    if _stamp is None:
        if libcrypto.unavailable_reason():
            return None
        import cryptography

        digest = hashlib.sha256()
        for part in (sys.version, ssl.OPENSSL_VERSION, str(libcrypto.security_level()), cryptography.__version__):
            digest.update(part.encode() + b"\0")
        here = os.path.dirname(__file__)
        try:
            modules = sorted(e.path for e in os.scandir(here) if e.name.endswith(".py"))
            for path in [*modules, os.path.join(os.path.dirname(here), "model.py")]:  # model: the verdicts' values
                st = os.stat(path)
                # What the interpreter itself checks before it runs a module's cached bytecode.
                digest.update(f"{os.path.basename(path)} {st.st_mtime_ns} {st.st_size}\0".encode())
        except OSError:
            return None  # code that cannot be found cannot be vouched for
        _stamp = digest.hexdigest()[:32]
    return _stamp


def _stamp_if_kept() -> str | None:
    """The stamp, when this process keeps judgements at all (store_cache enabled: the CLI)."""
    return _stamp_now() if store_cache.enabled() else None


def keeping() -> bool:
    """Whether this process keeps judgements for the next (the CLI does; an agent keeps them in memory)."""
    return _stamp_if_kept() is not None


def _canonical(value: object) -> object:
    """`value` as plain tuples, strings and numbers, the same in every process (sets sorted, enums by value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value).__name__, *((f.name, _canonical(getattr(value, f.name))) for f in fields))
    if isinstance(value, frozenset | set):
        return ("set", *sorted(repr(_canonical(v)) for v in value))
    if isinstance(value, tuple | list):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, Enum):
        return _canonical(value.value)
    if value is None or isinstance(value, str | int | float | bool | bytes):
        return value
    raise TypeError(f"no canonical form for {type(value).__name__}")


def key_text(key: tuple[object, ...]) -> str:
    """The entry key of an in-process judgement key: its canonical text's sha256 (the text holds the store's
    rules, which can be long)."""
    return hashlib.sha256(repr(_canonical(key)).encode()).hexdigest()


def load(key: str) -> Kept | None:
    """The judgement an earlier process kept under `key`, when it has the shape of one."""
    if (stamp := _stamp_if_kept()) is None:
        return None
    value = store_cache.load_judgement(key, stamp)
    return value if _is_kept(value) else None  # type: ignore[return-value]  # checked by _is_kept


def store(key: str, judgement: Kept) -> None:
    """Keep `judgement` under `key` for the next process."""
    if (stamp := _stamp_if_kept()) is not None:
        store_cache.store_judgement(key, stamp, judgement)


def load_edges(store_key: str) -> tuple[int, ...] | None:
    """The sorted validity edges an earlier process found in the store whose content key is `store_key`
    (the time spans of its judgements rest on them)."""
    if (stamp := _stamp_if_kept()) is None:
        return None
    value = store_cache.load_judgement(f"edges {store_key}", stamp)
    if isinstance(value, tuple) and all(isinstance(edge, int) for edge in value):
        return value
    return None


def store_edges(store_key: str, edges: tuple[int, ...]) -> None:
    """Keep the store's validity edges for the next process."""
    if (stamp := _stamp_if_kept()) is not None:
        store_cache.store_judgement(f"edges {store_key}", stamp, edges)


def _is_kept(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 5
        and isinstance(value[0], str)
        and isinstance(value[1], tuple)
        and all(isinstance(fp, str) for fp in value[1])
        and isinstance(value[2], str)
        and isinstance(value[3], int)
        and isinstance(value[4], str)
    )
