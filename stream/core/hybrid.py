"""A search's candidates: the query's best items by text and the user's best by the model, scored together by
the fitted search blend (encoders/models/search_blend.py), as the offline evaluation scores them.

The work is done by model row, in arrays: the query's text pool comes kept per query (stream/core/text_pools.py)
with its rows and cosines, the user's candidates come as the model scored them (rows and scores), and ids are
looked up for the best ``limit`` only. Items without a model row (catalog items known by their text, items
first seen in the stream) take the slower way by id; there are few of them in a pool.
"""

from __future__ import annotations

import numpy as np

from encoders.models.search_blend import NumpyBlend
from encoders.serving import Scored
from stream.core.indexed_model import IndexedModel
from stream.core.state import UserState


def hybrid(served: IndexedModel, blend: NumpyBlend, query: np.ndarray, query_text: np.ndarray, intent: float,
           personal: list[tuple[str, float]] | Scored, state: UserState, limit: int,
           named: str | None = None) -> list[tuple[str, float]]:
    """A search's candidates: the union of the query's best items by text (the text index; ``named`` the query,
    by which its pool is kept) and the user's best by the model (``personal``: the model's scores), scored by
    the fitted blend as offline; the best ``limit`` of them."""
    encoder = served.encoder
    pool = served.text_pool(query_text, blend.pool, named)
    model_rows = len(encoder.item_ids)
    mine = personal if isinstance(personal, Scored) else _scored(encoder.rows_of([i for i, _ in personal]),
                                                                 personal)
    room = blend.user_pool - mine.rows.size  # the user's best: the items without a row score below the rest
    if room < 0:
        best = np.argpartition(-mine.scores, blend.user_pool)[:blend.user_pool]
        mine = Scored(mine.rows[best], mine.scores[best], [], mine.recent)
    elif len(mine.unknown) > room:
        mine = Scored(mine.rows, mine.scores, mine.unknown[:room], mine.recent)
    # The user's items with a model row, and the rest (scoring rows of items first seen in the stream; items
    # without a scoring row), which go by id.
    model = (mine.rows > 0) & (mine.rows <= model_rows)
    p_rows, p_scores = mine.rows[model], mine.scores[model]
    by_id = dict(zip(encoder.ids_of_rows(mine.rows[~model]), mine.scores[~model].tolist(), strict=True))
    by_id.update((item, score) for item, score in mine.unknown if item not in by_id)
    # Text first, each once (as offline): the pool's rows, then the user's rows the pool lacks.
    t_rows = pool.model_rows
    order = np.argsort(p_rows, kind="stable")
    sorted_rows = p_rows[order]
    at = np.minimum(np.searchsorted(sorted_rows, t_rows), max(sorted_rows.size - 1, 0))
    found = sorted_rows[at] == t_rows if sorted_rows.size else np.zeros(t_rows.size, dtype=bool)
    t_personal = np.empty(t_rows.size)
    t_personal[found] = p_scores[order[at[found]]]
    if not found.all():  # the model's score where the user's candidates lack the item
        t_personal[~found] = served.model_vectors(t_rows[~found]) @ query
    only_mine = np.ones(p_rows.size, dtype=bool)
    only_mine[order[at[found]]] = False
    u_rows = p_rows[only_mine]
    item_text = encoder.item_text
    assert item_text is not None, "a model with a text index has item texts"
    rows = np.concatenate([t_rows, u_rows])
    text = np.concatenate([pool.model_text, (item_text[u_rows] @ query_text).astype(np.float64)])
    scores = np.concatenate([t_personal, p_scores[only_mine]])
    # The rest by id: the pool's items without a model row, then the user's.
    others = list(dict.fromkeys([*pool.others, *by_id])) if by_id else pool.others
    if others:
        pooled_text = dict(zip(pool.others, pool.others_text, strict=True))
        lacking = [item for item in others if item not in pooled_text]
        if lacking:
            pooled_text.update(zip(lacking, (served.text_vectors_of(lacking) @ query_text).tolist(), strict=True))
        lacking = [item for item in others if item not in by_id]
        if lacking:
            by_id.update(zip(lacking, (served.vectors_of(lacking) @ query).tolist(), strict=True))
        rows = np.concatenate([rows, np.zeros(len(others), dtype=np.int64)])
        text = np.concatenate([text, np.array([pooled_text[item] for item in others])])
        scores = np.concatenate([scores, np.array([by_id[item] for item in others])])
    recent = mine.recent if mine.recent is not None else encoder.rows_of([item for _, item in state.recent])
    blended = blend.scores(rows, text, scores, recent, intent)
    chosen = np.argpartition(-blended, limit)[:limit] if blended.size > limit else np.arange(blended.size)
    known = chosen < rows.size - len(others)
    ids = np.empty(chosen.size, dtype=object)
    ids[known] = encoder.ids_of_rows(rows[chosen[known]])
    ids[~known] = [others[n - (rows.size - len(others))] for n in chosen[~known].tolist()]
    return list(zip(ids.tolist(), blended[chosen].tolist(), strict=True))


def _scored(rows: np.ndarray, personal: list[tuple[str, float]]) -> Scored:
    """A model's (item, score) pairs as :class:`Scored`: by model row, and by id without one."""
    scores = np.fromiter((score for _, score in personal), dtype=np.float64, count=len(personal))
    known = rows > 0
    unknown = [pair for pair, row in zip(personal, rows.tolist(), strict=True) if row == 0]
    return Scored(rows[known], scores[known], unknown)
