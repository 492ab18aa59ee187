"""Baselines scored on the same split and events as the models: popularity and session item-kNN.

Both fit on events before the temporal cutoff only. Item-kNN is repeat-aware: items the user just
interacted with stay candidates (re-clicks are frequent in these data) and get a recency-weighted boost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from encoders.models.inputs import SEARCH_TYPE
from encoders.training.sequences import UserSequence


def _before(seq: UserSequence, cutoff: float) -> np.ndarray:
    """Item rows of the events before the cutoff (searches and unknown items dropped)."""
    n = int(np.searchsorted(seq.ts, cutoff, side="left"))
    items = seq.items[:n]
    kept: np.ndarray = items[(items != 0) & (seq.types[:n] != SEARCH_TYPE)]
    return kept


class Popularity:
    """Scores every item by how often it occurred before the cutoff."""

    def __init__(self, sequences: dict[str, UserSequence], cutoff: float, n_items: int) -> None:
        counts = np.zeros(n_items + 1, dtype=np.float64)
        for seq in sequences.values():
            np.add.at(counts, _before(seq, cutoff), 1.0)
        self.counts = counts

    def scores(self, seq: UserSequence, positions: list[int]) -> np.ndarray:
        """The same scores for every position: (P, n_items + 1)."""
        return np.broadcast_to(self.counts, (len(positions), self.counts.shape[0]))


@dataclass(frozen=True)
class ItemKnnConfig:
    """Session item-kNN hyper-parameters."""

    window: int = 5  # items within this distance in a sequence count as co-occurring
    history: int = 10  # last items of the user that vote
    decay: float = 0.8  # weight of the i-th most recent item is decay ** i
    repeat_boost: float = 0.5  # score added to an item the user interacted with, times its recency weight


class ItemKnn:
    """Cosine similarity of item co-occurrence within a window, summed over the user's recent items."""

    def __init__(self, sequences: dict[str, UserSequence], cutoff: float, n_items: int,
                 config: ItemKnnConfig = ItemKnnConfig()) -> None:
        self.config = config
        self.n = n_items + 1
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        for seq in sequences.values():
            items = _before(seq, cutoff)
            for gap in range(1, config.window + 1):
                if len(items) > gap:
                    a, b = items[:-gap], items[gap:]
                    keep = a != b
                    rows += [a[keep], b[keep]]
                    cols += [b[keep], a[keep]]
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        co = sparse.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=(self.n, self.n)).tocsr()
        co.sum_duplicates()
        norms = np.sqrt(np.asarray(co.sum(axis=1)).ravel()) + 1e-9
        scale = sparse.diags(1.0 / norms)
        self.similarity = (scale @ co @ scale).tocsr().astype(np.float32)

    def scores(self, seq: UserSequence, positions: list[int]) -> np.ndarray:
        """Scores (P, n_items + 1) for predicting the event at each position from the events before it."""
        cfg = self.config
        out = np.zeros((len(positions), self.n), dtype=np.float32)
        for p, t in enumerate(positions):
            items = seq.items[:t]
            items = items[(items != 0) & (seq.types[:t] != SEARCH_TYPE)][-cfg.history:][::-1]  # most recent first
            if len(items) == 0:
                continue
            weights = cfg.decay ** np.arange(len(items), dtype=np.float32)
            votes = sparse.csr_matrix((weights, (np.zeros(len(items), int), items)), shape=(1, self.n))
            out[p] = (votes @ self.similarity).toarray()[0]
            np.add.at(out[p], items, cfg.repeat_boost * weights)
        return out
