"""The carried intent: after a search, the user's next lists still weigh its query, less with each event.

A user's state keeps only a compact hash of the last search's query (stream/core/state.py ``intent``), for
the 1 KB budget per user; the worker keeps the query and its MiniLM vector by that hash for the most recent
searches. A worker that does not have it (a restart, another worker after a rebalance) drops the intent.
"""

from __future__ import annotations

import hashlib

import numpy as np

from encoders.models.inputs import has_words
from encoders.models.search_blend import MIN_INTENT, NumpyBlend
from encoders.serving import UserEncoder
from stream.core.schemas import Event
from stream.core.state import INTENT_KEY_BYTES, UserState

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


Intent = tuple[np.ndarray | None, float, str | None]  # the query vector shaping a list, its weight, the search named


def search_intent(event: Event, text: np.ndarray | None, state: UserState, blend: NumpyBlend,
                  encoder: UserEncoder, queries: RecentQueries) -> Intent:
    """What shapes an event's list: this search's query, or the last search's while it still counts; a query
    of symbols only names the search but matches no text. Records a search in the state (and its query in
    ``queries``) only for a blend that carries it, and forgets an intent that no longer counts."""
    if event.query is not None:
        vector = encoder.query_text(text) if text is not None and has_words(event.query) else None
        if vector is None:
            state.forget_intent()
            return None, 1.0, event.query
        if blend.carry_events > 0:  # remembered only by a blend that lets the query shape the next lists
            key = intent_key(event.query)
            queries.put(key, event.query, vector)
            state.searched(key, event.ts)
        else:
            state.forget_intent()
        return vector, 1.0, event.query
    carried = carried_intent(state, event.ts, blend, queries)
    if carried is None:
        state.forget_intent()
        return None, 1.0, None
    return carried


def carried_intent(state: UserState, ts: float, blend: NumpyBlend,
                   queries: RecentQueries) -> tuple[np.ndarray, float, str] | None:
    """The last search's query vector, weight and query at time ``ts``, while it still counts (the state is
    not changed)."""
    if not state.intent:
        return None
    kept = queries.get(state.intent)
    weight = blend.intent(state.intent_events, ts - state.intent_ts)
    if kept is None or weight < MIN_INTENT:
        return None
    return kept[1], weight, kept[0]
