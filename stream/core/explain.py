"""Explanations: each recommended item names the user's own recent events that pulled it in.

For every personal item, the one or two recent items whose vectors are most like it (cosine), and, when the
list answers a search, the search itself first. Computed from vectors already in memory: one (k x r)
product per list, r <= ``WINDOW``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from stream.core.schemas import RecommendedItem

WINDOW = 10  # recent distinct items considered
SECOND_WITHIN = 0.9  # a second recent item is named when it is at least this close to the best one


def explain(items: list[RecommendedItem], recent: Sequence[tuple[str, str]], query: str | None,
            unit_vectors: Callable[[list[str]], np.ndarray], names: int = 2) -> list[RecommendedItem]:
    """The items with ``because`` filled in (trending fills keep theirs; ``names`` 0 turns this off).

    ``unit_vectors`` maps item ids to unit-length vectors (IndexedModel.unit_vectors_of)."""
    if names <= 0 or not items:
        return items
    picked: list[tuple[str, str]] = []
    named: set[str] = set()
    for kind, item in reversed(recent):  # most recent first, each item once
        if item not in named:
            named.add(item)
            picked.append((kind, item))
            if len(picked) == WINDOW:
                break
    lead = (f"search:{query[:64]}",) if query is not None else ()
    personal = [n for n, it in enumerate(items) if not it.because]
    slots = names - len(lead)
    if not personal or not (picked or lead):
        return items
    out = list(items)
    if not picked or slots <= 0:
        for n in personal:
            out[n] = RecommendedItem(items[n].item_id, items[n].score, lead)
        return out
    labels = [f"{kind}:{item}" for kind, item in picked]
    k = len(personal)
    vectors = unit_vectors([items[n].item_id for n in personal] + [item for _, item in picked])  # (k + r, dim)
    similarity = vectors[:k] @ vectors[k:].T  # (k, r): cosine similarities
    first = similarity.argmax(axis=1).tolist()
    if slots > 1 and len(picked) > 1:
        best = similarity.max(axis=1)
        similarity[np.arange(k), first] = -np.inf  # the runner-up of each row
        runner = similarity.argmax(axis=1).tolist()
        both = ((similarity.max(axis=1) >= SECOND_WITHIN * best) & (best > 0)).tolist()
    else:
        runner, both = first, [False] * k
    for n, a, b, two in zip(personal, first, runner, both, strict=True):  # plain lists: cheap to index
        because = (*lead, labels[a], labels[b]) if two else (*lead, labels[a])
        out[n] = RecommendedItem(items[n].item_id, items[n].score, because)
    return out
