"""Full-ranking next-item evaluation on the held-out later period (no sampled negatives).

Every click/purchase at or after the temporal cutoff is a prediction target: each scorer ranks all items
given the user's history before that event (training-period events included). Items the model never saw
count as misses. Ties are broken at random, in expectation: a target tied with others takes each of their
positions with equal probability. Metrics: Recall@10/@20 (hit rate, one target per event), NDCG@10, MRR@20, catalog
coverage@20 (share of items that appear in any top 20) and novelty (mean -log2 of the training-period
popularity share of the recommended top 20). Baselines are scored on exactly the same events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from encoders.models.inputs import SEARCH_TYPE
from encoders.models.ranker import NumpyRanker, session_scores
from encoders.models.registry import SequenceModel
from encoders.models.session_head import NumpyRepeatHead
from encoders.training.baselines import ItemKnn, Popularity
from encoders.training.sequences import UserSequence

# scores(sequence, positions) -> (P, n_items + 1): scores for the event at each position, from events before it
Scorer = Callable[[UserSequence, list[int]], np.ndarray]


def model_scorer(model: SequenceModel, query_vectors: np.ndarray | None = None) -> Scorer:
    """A scorer reading the model's query after the events before each target; the session head (if any) and
    the re-ranker (if any) score through the numpy code that serving uses (encoders/models/ranker.py
    ``session_scores``). ``query_vectors`` are the MiniLM vectors of the sequences' query rows, for a model
    with a text tower."""
    head = NumpyRepeatHead(model.repeat) if model.repeat is not None else None
    ranker = NumpyRanker(model.ranker, model.config.ranker_candidates) if model.ranker is not None else None
    model.eval()
    item_emb = model.item_weight().detach().numpy()  # (n_items + 1, dim)

    def scores(seq: UserSequence, positions: list[int]) -> np.ndarray:
        q = sequence_queries(model, seq, positions, query_vectors)  # (P, dim)
        if head is None:
            out: np.ndarray = q @ item_emb.T  # (P, n_items + 1)
            return out
        out = np.zeros((len(positions), item_emb.shape[0]))
        item_events = np.flatnonzero((seq.types != 0) & (seq.types != SEARCH_TYPE))
        for p, t in enumerate(positions):
            recent = item_events[item_events < t]  # the head keeps the last ones it uses
            rows, final = session_scores(head, ranker, q[p], item_emb, seq.items[recent], seq.types[recent])
            out[p, rows] = final
        return out

    return scores


@torch.inference_mode()
def sequence_queries(model: SequenceModel, seq: UserSequence, positions: list[int],
                     query_vectors: np.ndarray | None = None) -> np.ndarray:
    """The model's query vector (P, dim) after the events before each position of one sequence (eval mode);
    ``query_vectors`` are the MiniLM vectors of the sequences' query rows, for a model with a text tower."""
    model.eval()
    text = None
    if query_vectors is not None and seq.queries is not None:
        text = torch.from_numpy(query_vectors[seq.queries])  # (T, text_dim)
    out: np.ndarray = model.history_queries(torch.from_numpy(seq.items), torch.from_numpy(seq.types),
                                            torch.from_numpy(seq.tokens), positions, text).numpy()
    return out


def target_positions(seq: UserSequence, since: float, until: float = math.inf) -> list[int]:
    """Item events with ``since <= ts < until`` that have at least one event before them."""
    first = max(int(np.searchsorted(seq.ts, since, side="left")), 1)
    stop = int(np.searchsorted(seq.ts, until, side="left"))
    return [t for t in range(first, stop) if seq.types[t] != SEARCH_TYPE]


def held_out(sequences: dict[str, UserSequence], since: float, max_events: int,
             until: float = math.inf) -> Iterator[tuple[str, UserSequence, list[int]]]:
    """The evaluated targets, in evaluation order: users sorted, each user's positions in [since, until)
    (the test period: from the cutoff on), until at least ``max_events`` targets (a user's targets are never
    split)."""
    events = 0
    for user in sorted(sequences):
        positions = target_positions(sequences[user], since, until)
        if not positions:
            continue
        yield user, sequences[user], positions
        events += len(positions)
        if events >= max_events:
            return


def evaluate(scorers: dict[str, Scorer], sequences: dict[str, UserSequence], cutoff: float, n_items: int,
             popularity: np.ndarray, max_events: int = 50_000) -> dict[str, dict[str, float]]:
    """Metrics per scorer name on the same held-out events (users in sorted order, capped at max_events)."""
    share = popularity[1:] / max(popularity[1:].sum(), 1.0)
    self_info = np.concatenate([[0.0], -np.log2(np.maximum(share, 1e-12))])
    ranks: dict[str, list[tuple[int, int]]] = {name: [] for name in scorers}
    seen: dict[str, set[int]] = {name: set() for name in scorers}
    novelty: dict[str, list[float]] = {name: [] for name in scorers}
    for _, seq, positions in held_out(sequences, cutoff, max_events):
        targets = seq.items[positions]
        for name, scorer in scorers.items():
            scores = np.array(scorer(seq, positions), dtype=np.float64)
            scores[:, 0] = -math.inf  # padding / unknown is never recommended
            top = np.argpartition(-scores, 20, axis=1)[:, :20]
            for p, target in enumerate(targets):
                seen[name].update(int(i) for i in top[p])
                novelty[name].append(float(self_info[top[p]].mean()))
                ranks[name].append(rank_of(scores[p], int(target), n_items))
    return {name: _metrics(ranks[name], len(seen[name]), n_items, novelty[name]) for name in scorers}


def rank_of(scores: np.ndarray, target: int, n_items: int) -> tuple[int, int]:
    """(items scored higher, items scored equal including the target) for one target row of ``scores``; row 0
    (an item first seen after the cutoff) is a miss."""
    if target == 0:
        return n_items, 1
    score = scores[target]
    return int((scores > score).sum()), int((scores == score).sum())


def ranking_metrics(ranks: list[tuple[int, int]]) -> dict[str, float]:
    """Recall@10/@20, NDCG@10 and MRR@20 from :func:`rank_of` pairs: the expected value when ties are broken
    at random. Counting only higher items would credit a scorer whose target ties with thousands of others at
    0 (item-kNN gives most items no score) whenever fewer than k items score above it; at random, such a
    target lands among the tied items, almost always below the top k."""
    pairs = np.asarray(ranks, dtype=np.float64)
    higher, ties = pairs[:, 0], pairs[:, 1]

    def expected(cumulative: np.ndarray) -> np.ndarray:
        """Mean over the tied positions higher .. higher + ties - 1 of a per-position gain whose running sum
        (from position 0) is ``cumulative`` (zero past its end)."""
        k = cumulative.size - 1
        lo = np.minimum(higher, k).astype(np.int64)
        hi = np.minimum(higher + ties, k).astype(np.int64)
        out: np.ndarray = (cumulative[hi] - cumulative[lo]) / ties
        return out

    positions = np.arange(20, dtype=np.float64)
    hits = np.concatenate([[0.0], np.cumsum(np.ones(20))])  # recall: 1 per position in the top k
    reciprocal = np.concatenate([[0.0], np.cumsum(1.0 / (positions + 1.0))])
    discounted = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(positions[:10] + 2.0))])
    return {
        "recall@10": float(np.mean(expected(hits[:11]))),
        "recall@20": float(np.mean(expected(hits))),
        "ndcg@10": float(np.mean(expected(discounted))),
        "mrr@20": float(np.mean(expected(reciprocal))),
        "events": int(pairs.shape[0]),
    }


def _metrics(ranks: list[tuple[int, int]], covered: int, n_items: int, novelty: list[float]) -> dict[str, float]:
    """:func:`ranking_metrics` plus catalog coverage@20 and novelty."""
    if not ranks:
        return {"events": 0}
    return ranking_metrics(ranks) | {"coverage@20": covered / max(n_items, 1), "novelty": float(np.mean(novelty))}


def evaluate_model(name: str, model: SequenceModel, sequences: dict[str, UserSequence], cutoff: float,
                   n_items: int, max_events: int,
                   query_vectors: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the model (under ``name``) and of popularity and item-kNN fitted on the same split."""
    popularity = Popularity(sequences, cutoff, n_items)
    knn = ItemKnn(sequences, cutoff, n_items)
    return evaluate({name: model_scorer(model, query_vectors), "popularity": popularity.scores, "item_knn": knn.scores},
                    sequences, cutoff, n_items, popularity.counts, max_events=max_events)
