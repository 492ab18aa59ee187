"""Filters and re-ranking: which items may be recommended at all, which not to this user, and how the
final list is put together (the personal ranking, blended with trending items for cold-start users).

Filters are declared in the settings and applied here only:
* catalog-wide (``Filters.admits``): unavailable or deleted items and category allow/deny lists. They
  decide index membership, so a search never spends candidates on them.
* per user (``Filters.excluded_for``): purchased items, always; optionally the last N viewed items.
"""

from __future__ import annotations

from collections.abc import Collection, Container
from dataclasses import dataclass

import numpy as np

from stream.core.catalog import CatalogItem
from stream.core.schemas import RecommendedItem
from stream.core.state import UserState


@dataclass(frozen=True)
class Filters:
    """The filter settings, applied in one place."""

    exclude_viewed_last_n: int = 0
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def admits(self, item: CatalogItem | None, deleted: bool = False) -> bool:
        """Whether an item may appear in any list (``item`` None: the catalog has not described it)."""
        if deleted:
            return False
        if item is None:
            return not self.allow  # with an allow list, an item of unknown category is not allowed
        if not item.available or item.category in self.deny:
            return False
        return not self.allow or item.category in self.allow

    def excluded_for(self, state: UserState) -> set[str]:
        """Items this user must not get: everything purchased, and the last N viewed when configured."""
        out = set(state.purchased)
        if self.exclude_viewed_last_n:
            out.update(item for _, item in state.recent[-self.exclude_viewed_last_n:])
        return out


def rerank(candidates: list[tuple[str, float]], excluded: Collection[str], k: int,
           searchable: Container[str] | None = None) -> list[RecommendedItem]:
    """The best k by score, without excluded or repeated items (and, given ``searchable``, only those)."""
    seen: set[str] = set()
    out: list[RecommendedItem] = []
    for item, score in sorted(candidates, key=lambda c: -c[1]):
        if item in excluded or item in seen or (searchable is not None and item not in searchable):
            continue
        seen.add(item)
        out.append(RecommendedItem(item, score))
        if len(out) == k:
            break
    return out


def blend(personal: list[RecommendedItem], trending: list[tuple[str, float]], k: int, personal_share: float,
          excluded: Collection[str], searchable: Container[str]) -> list[RecommendedItem]:
    """A cold-start list: the first ``personal_share`` of k slots from the personal ranking, the rest
    trending items (marked ``because: ["trending"]``); either side fills in when the other runs short."""
    slots = min(len(personal), round(k * personal_share))
    out = list(personal[:slots])
    taken = {it.item_id for it in out}
    for item, count in trending:
        if len(out) == k:
            break
        if item not in taken and item not in excluded and item in searchable:
            out.append(RecommendedItem(item, count, ("trending",)))
            taken.add(item)
    for it in personal[slots:]:
        if len(out) == k:
            break
        if it.item_id not in taken:
            out.append(it)
            taken.add(it.item_id)
    return out


def diversify(items: list[RecommendedItem], vectors: np.ndarray, k: int, strength: float) -> list[RecommendedItem]:
    """Maximal marginal relevance over item vectors (rows of ``vectors`` match ``items``, best first).

    Greedily picks the item maximising ``(1 - strength) * relevance - strength * max cosine similarity to the
    items already picked``, relevance being the scores scaled to [0, 1]. ``strength`` 0 keeps the ranking."""
    if strength <= 0 or len(items) <= 1:
        return items[:k]
    scores = np.array([it.score for it in items], dtype=np.float32)
    spread = float(scores.max() - scores.min())
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    similarity = unit @ unit.T  # (n, n)
    picked = [0]
    closest = similarity[0].copy()  # each item's highest similarity to the picked ones
    available = np.ones(len(items), dtype=bool)
    available[0] = False
    while len(picked) < min(k, len(items)):
        gain = np.where(available, (1 - strength) * relevance - strength * closest, -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        closest = np.maximum(closest, similarity[best])
    return [items[n] for n in picked]


class Within:
    """The searchable items of a request's category: in the category and in the index."""

    def __init__(self, members: set[str], index: Container[str]) -> None:
        self.members = members
        self.index = index

    def __contains__(self, item: object) -> bool:
        return item in self.members and item in self.index
