"""Prequential evaluation: a period walked in time order, learning from the stream as a worker does.

Every item event of the period, of every user, is applied in event-time order to a live successor table
(encoders/models/live_neighbours.py), after the targets at that moment are scored; so each target sees only
what came before it. Items first seen in the period ("new items": for the test period, those the model has
no row for) become rankable from their first event on. A new item's vector is the weighted mean of its live
successors' vectors, refreshed as they change, and it gets the session head's repeat bonus like any item.
The live votes join the session head's kNN votes at ``LiveConfig.weight`` times the mix's kNN weight.

With learning off, the same walk scores the model as a worker without a live table: new items are unknown
(row 0), never rankable, and the scores of the rest are those of the standard evaluation (evaluation.py).
Full ranking, ties at random in expectation, as everywhere.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from encoders.models.inputs import SEARCH_TYPE
from encoders.models.live_neighbours import (
    LiveConfig,
    LiveNeighbours,
    knn_scale,
    padded_head,
    padded_ranker,
    padded_vectors,
)
from encoders.models.ranker import NumpyRanker, session_scores
from encoders.models.registry import SequenceModel
from encoders.models.session_head import NumpyRepeatHead
from encoders.training.evaluation import held_out, ranking_metrics, sequence_queries
from encoders.training.sequences import UserSequence
from stream.errors import TrainingError

BLOCKED = -1e9  # the kNN bonus that keeps an item not yet seen out of every list
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)  # live-vote weights tried on the validation slice
OFFSETS = (-0.5, -1.0, -2.0)  # new-item offsets tried next, with the best weight (0 is tried with every weight)
SLICES = ("overall", "new_items", "old_items")
OLD_ITEM_TOLERANCE = 0.005  # Recall@20 the items known at training may lose to learning, at most


class StreamingWalk:
    """A period's targets and events, ready to be walked in time order under any live settings: the model's
    queries and the padded tables are computed once, for every setting the validation tries."""

    def __init__(self, model: SequenceModel, sequences: dict[str, UserSequence], since: float, until: float,
                 max_events: int, query_vectors: np.ndarray | None = None) -> None:
        if model.repeat is None:
            raise TrainingError("streaming evaluation needs a model with a session head")
        if any(seq.live_items is None for seq in sequences.values()):
            raise TrainingError("streaming evaluation needs sequences with live item rows (build_sequences)")
        self.sequences = sequences
        item_emb = model.item_weight().detach().numpy()  # (n_known, dim), float32 as the standard evaluation
        n_known = item_emb.shape[0]
        n_rows = 1 + max(int(s.live_items.max(initial=0)) for s in sequences.values() if s.live_items is not None)
        first_seen = np.full(n_rows, math.inf)
        for seq in sequences.values():
            assert seq.live_items is not None
            np.minimum.at(first_seen, seq.live_items, seq.ts)
        self.fresh = first_seen >= since  # items first seen in the period: no vector of their own
        self.fresh[0] = False
        self.vectors = padded_vectors(item_emb, n_rows)
        self.vectors[self.fresh] = 0.0
        unknown_known = self.fresh[:n_known]  # model rows a worker of this period would not know
        self.head = padded_head(NumpyRepeatHead(model.repeat), n_rows)
        self.ranker = (padded_ranker(NumpyRanker(model.ranker, model.config.ranker_candidates), n_rows)
                       if model.ranker is not None else None)
        self.scale = knn_scale(self.head)
        self.targets: dict[tuple[str, int], np.ndarray] = {}
        for user, seq, positions in held_out(sequences, since, max_events, until):
            seen_by_model = replace(seq, items=np.where(unknown_known[seq.items], 0, seq.items))
            queries = sequence_queries(model, seen_by_model, positions, query_vectors)
            for position, query in zip(positions, queries, strict=True):
                self.targets[(user, position)] = query
        self.stream: list[tuple[float, str, int]] = []
        for user, seq in sequences.items():
            is_item = (seq.types != 0) & (seq.types != SEARCH_TYPE) & (seq.ts >= since) & (seq.ts < until)
            self.stream.extend((float(seq.ts[t]), user, int(t)) for t in np.flatnonzero(is_item))
        self.stream.sort(key=lambda e: e[0])  # stable: a user's events keep their order
        self.item_events = {user: np.flatnonzero((seq.types != 0) & (seq.types != SEARCH_TYPE))
                            for user, seq in sequences.items()}

    def metrics(self, config: LiveConfig | None) -> dict[str, dict[str, float]]:
        """Metrics ("overall", "new_items", "old_items") of the walk under ``config`` (None: learning off)."""
        vectors = self.vectors.copy()  # new items' rows fill in as the walk goes
        rankable = ~self.fresh
        rankable[0] = False
        fresh = self.fresh
        live = LiveNeighbours(config) if config is not None else None
        ranks: dict[str, list[tuple[int, int]]] = {name: [] for name in SLICES}
        for ts, user, t in self.stream:
            seq = self.sequences[user]
            assert seq.live_items is not None
            events = self.item_events[user]
            earlier = events[events < t]
            recent = seq.live_items[earlier]
            query = self.targets.get((user, t))
            if query is not None:
                target = int(seq.live_items[t])
                pair = _rank(self.head, self.ranker, query, vectors, recent, seq.types[earlier], rankable, fresh,
                             live, config, self.scale, target)
                ranks["overall"].append(pair)
                ranks["new_items" if fresh[target] else "old_items"].append(pair)
            if live is not None:
                item = int(seq.live_items[t])
                rankable[item] = True
                for source in live.observe(recent[-live.config.history * 4:].tolist(), item, int(seq.types[t]), ts):
                    if fresh[source]:
                        vector = live.vector(source, vectors)
                        vectors[source] = vector if vector is not None else 0.0
        return {name: ranking_metrics(pairs) if pairs else {"events": 0} for name, pairs in ranks.items()}


def streaming_metrics(model: SequenceModel, sequences: dict[str, UserSequence], since: float, until: float,
                      max_events: int, config: LiveConfig | None,
                      query_vectors: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Metrics ("overall", "new_items", "old_items") of the targets in [since, until) (users in sorted order,
    as the standard evaluation picks them), walking every item event of the period in time order; ``config``
    None: learning off."""
    return StreamingWalk(model, sequences, since, until, max_events, query_vectors).metrics(config)


def _rank(head: NumpyRepeatHead, ranker: NumpyRanker | None, query: np.ndarray, vectors: np.ndarray,
          recent: np.ndarray, types: np.ndarray, rankable: np.ndarray, fresh: np.ndarray,
          live: LiveNeighbours | None, config: LiveConfig | None, scale: float, target: int) -> tuple[int, int]:
    """(items scored higher, items scored equal including the target) for one target, or a miss when the
    target cannot be ranked yet."""
    blocked = np.flatnonzero(~rankable[1:]) + 1
    if live is None or config is None:  # a worker without learning: the period's new items are unknown
        recent = np.where(fresh[recent], 0, recent)
        extra = (blocked, np.full(blocked.size, BLOCKED))
    else:
        voted, votes = live.votes(recent.tolist())
        parts = [(voted, votes * config.weight * scale), (blocked, np.full(blocked.size, BLOCKED))]
        if config.new_item_offset:
            new = np.flatnonzero(fresh & rankable)
            parts.append((new, np.full(new.size, config.new_item_offset * scale)))
        extra = (np.concatenate([rows for rows, _ in parts]), np.concatenate([bonus for _, bonus in parts]))
    if not rankable[target]:
        return rankable.size, 1
    rows, final = session_scores(head, ranker, query, vectors, recent, types, None, extra)
    scores = np.full(rankable.size, -math.inf)
    scores[rows] = final
    scores[~rankable] = -math.inf
    score = scores[target]
    return int((scores > score).sum()), int((scores == score).sum())


def fit_live_weight(model: SequenceModel, sequences: dict[str, UserSequence], since: float, until: float,
                    max_events: int, base: LiveConfig | None = None,
                    query_vectors: np.ndarray | None = None) -> tuple[LiveConfig, dict[str, Any]]:
    """Choose the live votes' weight, then the new-item offset, by MRR@20 on the validation events in
    [since, until), walked as :func:`streaming_metrics` walks the test period, for a model trained on the
    events before ``since``; only settings that keep the old items' Recall@20 within ``OLD_ITEM_TOLERANCE``
    of learning off are chosen, while one does. Returns the chosen settings (``base``'s, default
    LiveConfig's, with those two) and what every setting (and learning off) scored there."""
    base = base or LiveConfig()
    walk = StreamingWalk(model, sequences, since, until, max_events, query_vectors)
    measured = {"off": walk.metrics(None)}
    # What the stream teaches must not cost the items the model knew.
    floor = measured["off"]["old_items"].get("recall@20", 0.0) - OLD_ITEM_TOLERANCE
    tried: dict[str, LiveConfig] = {}

    def best_so_far() -> LiveConfig:
        fair = [k for k in tried if measured[k]["old_items"].get("recall@20", 0.0) >= floor]
        key = max(fair or tried, key=lambda k: (measured[k]["overall"]["mrr@20"], -tried[k].weight,
                                                tried[k].new_item_offset))
        return tried[key]

    def trial(config: LiveConfig) -> None:
        key = f"{config.weight}/{config.new_item_offset}"
        tried[key] = config
        measured[key] = walk.metrics(config)

    for weight in WEIGHTS:
        trial(replace(base, weight=weight, new_item_offset=0.0))
    weight = best_so_far().weight
    for offset in OFFSETS:
        trial(replace(base, weight=weight, new_item_offset=offset))
    chosen = best_so_far()
    fair = measured[f"{chosen.weight}/{chosen.new_item_offset}"]["old_items"].get("recall@20", 0.0) >= floor
    return chosen, {"weights": list(WEIGHTS), "offsets": [0.0, *OFFSETS], "chosen_weight": chosen.weight,
                    "chosen_offset": chosen.new_item_offset, "old_items_within_tolerance": fair,
                    "validation": measured}
