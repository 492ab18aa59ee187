"""A search query's best items by text, kept per query: what hybrid retrieval takes from the text index.

The text index's answer to a query, and the cosines of its items, depend on the query and the indexed item
texts only. Shops' searches repeat ("shoes", "horror"), so the served model keeps the answers of the recent
queries and drops them all whenever its text index changes (a catalog update); a repeated search then
skips the text index's HNSW query and the lookups of its items' text vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

RECENT_POOLS = 2048  # queries kept; a pool of 200 items is about 5 KB


@dataclass(frozen=True)
class TextPool:
    """A query's best items by text: ids, model rows (0: an item the model does not know) and cosines."""

    ids: list[str]
    rows: np.ndarray  # int64
    text: np.ndarray  # float64, the cosine of the query's and each item's MiniLM vector

    def __post_init__(self) -> None:
        known = self.rows > 0
        # Split once, as kept pools are read many times: the items with a model row, and the rest by id.
        object.__setattr__(self, "model_rows", self.rows[known])
        object.__setattr__(self, "model_text", self.text[known])
        object.__setattr__(self, "others", [item for item, row in zip(self.ids, known.tolist(), strict=True)
                                            if not row])
        object.__setattr__(self, "others_text", self.text[~known].tolist())

    model_rows: np.ndarray = field(init=False)
    model_text: np.ndarray = field(init=False)
    others: list[str] = field(init=False)  # items without a model row (catalog items known by their text)
    others_text: list[float] = field(init=False)


class TextPools:
    """The recent queries' pools by query text, least recently used out; :meth:`clear` on any index change."""

    def __init__(self, capacity: int = RECENT_POOLS) -> None:
        self.capacity = capacity
        self._pools: dict[tuple[str, int], TextPool] = {}  # dict order: least recently used first
        self.hits = 0
        self.misses = 0

    def get(self, query: str | None, size: int, build: Callable[[], TextPool]) -> TextPool:
        """The pool of ``size`` items for this query, built by ``build`` unless kept (None: not kept)."""
        if query is None:
            return build()
        key = (query, size)
        pool = self._pools.pop(key, None)
        if pool is None:
            self.misses += 1
            pool = build()
            if len(self._pools) >= self.capacity:
                del self._pools[next(iter(self._pools))]
        else:
            self.hits += 1
        self._pools[key] = pool  # most recently used
        return pool

    def clear(self) -> None:
        """Forget every pool (the text index changed)."""
        self._pools.clear()

    def __len__(self) -> int:
        return len(self._pools)
