"""The history of scheduled report runs: the store's interface and its SQLite implementation."""

from .store import FirstSeen, HistoryError, HistoryStore, RunSummary, SeenQuery, finding_key, first_seen_lookup, key_of

__all__ = [
    "FirstSeen",
    "HistoryError",
    "HistoryStore",
    "RunSummary",
    "SeenQuery",
    "finding_key",
    "first_seen_lookup",
    "key_of",
]
