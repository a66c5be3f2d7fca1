"""The history of scheduled report runs: the store's interface, and its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .store import FirstSeen, HistoryError, HistoryStore, RunSummary, SeenQuery, finding_key, first_seen_lookup, key_of

if TYPE_CHECKING:
    from ..config import StorageConfig

__all__ = [
    "FirstSeen",
    "HistoryError",
    "HistoryStore",
    "RunSummary",
    "SeenQuery",
    "finding_key",
    "first_seen_lookup",
    "key_of",
    "open_history",
]


def open_history(storage: StorageConfig) -> HistoryStore:
    """The store `[storage]` names, opened (and migrated). Each backend's module is imported only when
    chosen: SQLite needs nothing beyond Python, and the PostgreSQL driver is an optional extra."""
    if storage.backend == "postgresql" and storage.url:
        try:
            from .postgres_store import PostgresHistory
        except ImportError as error:
            raise HistoryError(
                f"[storage] names PostgreSQL, but its driver cannot be loaded ({error}); "
                "install it with: pip install 'tlsfleet[postgresql]'"
            ) from None
        return PostgresHistory(storage.url)
    from .sqlite_store import SqliteHistory

    return SqliteHistory(storage.path)
