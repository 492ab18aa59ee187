"""A search's candidates: the query's best items by text and the user's best by the model, scored together by
the fitted search blend (encoders/models/search_blend.py), as the offline evaluation scores them."""

from __future__ import annotations

import heapq
from operator import itemgetter

import numpy as np

from encoders.models.search_blend import NumpyBlend
from stream.core.indexed_model import IndexedModel
from stream.core.state import UserState


def hybrid(served: IndexedModel, blend: NumpyBlend, query: np.ndarray, query_text: np.ndarray, intent: float,
           personal: list[tuple[str, float]], state: UserState, limit: int) -> list[tuple[str, float]]:
    """A search's candidates: the union of the query's best items by text (the text index) and the user's
    best by the model, scored by the fitted blend (encoders/models/search_blend.py), as offline; the best
    ``limit`` of them."""
    assert served.text_index is not None
    # No exclusions here: the list's filter drops them, and a long purchase history would make the text
    # index over-fetch (as offline, the pool is the query's best items, whoever bought them).
    by_text = served.text_index.search(query_text, blend.pool)
    mine = dict(heapq.nlargest(blend.user_pool, personal, key=itemgetter(1)))
    ids = list(dict.fromkeys([*(item for item, _ in by_text), *mine]))  # text first, each once
    encoder = served.encoder
    rows = encoder.rows_of(ids)  # once: every lookup below is by row
    text = served.text_vectors_of(ids, rows) @ query_text
    # The model's score where the personal list lacks the item (the text pool's items, mostly).
    scores = np.fromiter((mine.get(item, np.nan) for item in ids), dtype=np.float64, count=len(ids))
    missing = np.flatnonzero(np.isnan(scores))
    if missing.size:
        scores[missing] = served.vectors_of([ids[n] for n in missing.tolist()], rows=rows[missing]) @ query
    recent = encoder.rows_of([item for _, item in state.recent])
    blended = blend.scores(rows, text.astype(np.float64), scores, recent, intent)
    if blended.size > limit:  # the list's filter needs no more; tuples for the rest would cost more
        best = np.argpartition(-blended, limit)[:limit]
        return [(ids[n], float(blended[n])) for n in best.tolist()]
    return list(zip(ids, blended.tolist(), strict=True))
