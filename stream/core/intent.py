"""The carried intent: after a search, the user's next lists still weigh its query, less with each event.

A user's state keeps only a compact hash of the last search's query (stream/core/state.py ``intent``), for
the 1 KB budget per user; the worker keeps the query and its MiniLM vector by that hash for the most recent
searches. A worker that does not have it (a restart, another worker after a rebalance) drops the intent.
"""

from __future__ import annotations

import hashlib

import numpy as np

from stream.core.state import INTENT_KEY_BYTES

RECENT_QUERIES = 4096  # queries kept by hash, ~2 KB each (the text and a 384-float vector)


def intent_key(query: str) -> bytes:
    """The hash a user's state keeps for a search's query."""
    return hashlib.blake2b(query.encode(), digest_size=INTENT_KEY_BYTES).digest()


class RecentQueries:
    """The queries of recent searches and their MiniLM vectors, by :func:`intent_key`, least recent out."""

    def __init__(self, capacity: int = RECENT_QUERIES) -> None:
        self.capacity = capacity
        self._entries: dict[bytes, tuple[str, np.ndarray]] = {}  # dict order: least recently used first

    def put(self, key: bytes, query: str, vector: np.ndarray) -> None:
        """Remember a search's query and vector."""
        self._entries.pop(key, None)
        self._entries[key] = (query, vector)
        if len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]

    def get(self, key: bytes) -> tuple[str, np.ndarray] | None:
        """The query and vector of a hash, if still kept."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._entries[key] = entry  # most recently used
        return entry

    def __len__(self) -> int:
        return len(self._entries)
