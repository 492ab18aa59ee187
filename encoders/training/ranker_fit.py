"""Fit the re-ranker (encoders/models/ranker.py) on the validation slice and attach it to a model.

The examples are the validation targets scored by the mixed model that was trained on the events before the
slice: for each target, the features of the first stage's best ``candidates`` and the target's position among
them (-1 when it is not among them; such targets do not train the MLP). The final model gets the fitted MLP
and the rule and popularity tables of the whole training period.

The tables: sequential rules (for each item, its most frequent followers within RULE_GAP positions, weighted
1 / gap and normalised per item, and its most frequent predecessors), the item's popularity over the whole
period and over its last RECENT_DAYS days.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy import sparse
from torch import Tensor, nn

from encoders.models.inputs import SEARCH_TYPE
from encoders.models.ranker import FEATURES, NumpyRanker, Ranker, RankerConfig, RankerTables, candidate_features
from encoders.models.registry import SequenceModel, model_from_config
from encoders.models.session_head import NumpyRepeatHead, neighbour_table
from encoders.training.evaluation import held_out, sequence_queries
from encoders.training.sequences import UserSequence
from stream.errors import TrainingError

RULE_GAP = 10  # positions within which an item "follows" another
RECENT_DAYS = 7.0  # the recent-popularity window


def with_ranker(model: SequenceModel, config: RankerConfig, tables: RankerTables,
                fitted: Ranker | None = None) -> SequenceModel:
    """A copy of ``model`` with a re-ranker of ``config``'s shape holding ``tables`` (and the MLP and scaling of
    ``fitted``); the fit settings stay out of the model's config."""
    head = replace(model.config.head, ranker=config.shape)
    ranked = model_from_config(model.config.cell, model.config.to_dict() | head.to_flat())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ranker.")}
    ranked.load_state_dict(state, strict=False)
    assert ranked.ranker is not None
    if fitted is not None:
        ranked.ranker.load_state_dict(fitted.state_dict())
    ranked.ranker.set_tables(tables)
    return ranked.eval()


def ranker_examples(model: SequenceModel, sequences: dict[str, UserSequence], since: float, until: float,
                    max_events: int, query_vectors: np.ndarray | None = None) -> list[tuple[np.ndarray, int]]:
    """(features of the candidates, position of the target among them or -1) per validation target in
    [since, until), for a mixed model with a re-ranker (its MLP is not used here)."""
    assert model.repeat is not None and model.ranker is not None, "needs the session head and a ranker"
    head = NumpyRepeatHead(model.repeat)
    ranker = NumpyRanker(model.ranker, model.config.ranker_candidates)
    item_emb = model.item_weight().detach().numpy()
    examples: list[tuple[np.ndarray, int]] = []
    for _, seq, positions in held_out(sequences, since, max_events, until):
        q = sequence_queries(model, seq, positions, query_vectors)
        item_events = np.flatnonzero((seq.types != 0) & (seq.types != SEARCH_TYPE))
        for p, t in enumerate(positions):
            recent = item_events[item_events < t]
            examples.append(ranker_example(head, ranker, q[p], item_emb, seq.items[recent], seq.types[recent],
                                           int(seq.items[t])))
    return examples


def ranker_tables(sequences: dict[str, UserSequence], cutoff: float, n_items: int, rules: int) -> RankerTables:
    """Sequential rules and popularity of the item events before ``cutoff``."""
    n = n_items + 1
    heads: list[np.ndarray] = []
    tails: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    popularity = np.zeros(n)
    recent = np.zeros(n)
    for seq in sequences.values():
        stop = int(np.searchsorted(seq.ts, cutoff, side="left"))
        keep = (seq.items[:stop] != 0) & (seq.types[:stop] != SEARCH_TYPE)
        items, ts = seq.items[:stop][keep], seq.ts[:stop][keep]
        np.add.at(popularity, items, 1.0)
        np.add.at(recent, items[ts >= cutoff - RECENT_DAYS * 86400.0], 1.0)
        for gap in range(1, min(RULE_GAP, len(items) - 1) + 1):
            heads.append(items[:-gap])
            tails.append(items[gap:])
            weights.append(np.full(len(items) - gap, 1.0 / gap, np.float32))
    if heads:
        counts = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(heads), np.concatenate(tails))),
                                   shape=(n, n)).tocsr()
    else:
        counts = sparse.csr_matrix((n, n), dtype=np.float32)
    counts.sum_duplicates()
    rule = (sparse.diags(1.0 / (np.asarray(counts.sum(axis=1)).ravel() + 1e-9)) @ counts).tocsr()  # P(b follows a)
    follow_idx, follow_w = neighbour_table(rule, rules)
    precede_idx, precede_w = neighbour_table(rule.T.tocsr(), rules)  # row b: the a with the strongest a -> b
    return RankerTables(follow_idx, follow_w, precede_idx, precede_w,
                        np.log1p(popularity).astype(np.float32) / 10.0, np.log1p(recent).astype(np.float32) / 5.0)


def ranker_example(head: NumpyRepeatHead, ranker: NumpyRanker, query: np.ndarray, item_emb: np.ndarray,
                   recent_rows: np.ndarray, recent_types: np.ndarray, target: int) -> tuple[np.ndarray, int]:
    """One training example of the ranker: the features of the candidates :func:`session_scores` would
    re-order and the target's position among them; (no features, -1) when the target is not one of them
    (such a target cannot train the MLP, and its features would only take memory)."""
    rows, _, top, features = candidate_features(head, ranker, query, item_emb, recent_rows, recent_types, None)
    hit = np.flatnonzero(rows[top] == target)
    if not hit.size:
        return np.zeros((0, len(FEATURES)), np.float32), -1
    return features.astype(np.float32), int(hit[0])


def fit_ranker(ranker: Ranker, examples: list[tuple[np.ndarray, int]], config: RankerConfig, seed: int) -> list[float]:
    """Fit the MLP (and the feature scaling) on (features (C, F), target position or -1) examples: softmax
    cross-entropy over each example's candidates, the next item as the label. Returns the loss per epoch."""
    usable = [(f, y) for f, y in examples if y >= 0]
    if not usable:
        raise TrainingError("no validation target was among the ranker's candidates")
    x = torch.tensor(np.stack([f for f, _ in usable]), dtype=torch.float32)  # (N, C, F)
    y = torch.tensor([t for _, t in usable])
    flat = x.reshape(-1, x.shape[-1])
    mean, std = flat.mean(dim=0), flat.std(dim=0) + 1e-6
    with torch.no_grad():
        ranker.mean.copy_(mean)
        ranker.std.copy_(std)
    x = (x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for layer in ranker.mlp:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    optimiser = torch.optim.Adam(ranker.mlp.parameters(), lr=config.lr, weight_decay=1e-5)
    losses = []
    ranker.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), 256):
            batch = order[start:start + 256]
            logits: Tensor = ranker.mlp(x[batch]).squeeze(-1)
            loss: Tensor = nn.functional.cross_entropy(logits, y[batch])
            optimiser.zero_grad()
            torch.autograd.backward(loss)
            optimiser.step()
            total += loss.item() * len(batch)
        losses.append(total / len(y))
    ranker.eval()
    return losses


def candidate_mrr(ranker: NumpyRanker, examples: list[tuple[np.ndarray, int]]) -> tuple[float, float]:
    """MRR@20 over ``examples`` of the first stage's order of the candidates and of the ranker's order (a target
    outside the candidates is a miss for both): whether the fitted MLP pays on targets it was not fitted on."""
    first = reranked = 0.0
    for features, target in examples:
        if target < 0:
            continue
        scores = ranker.scores(features.astype(np.float64))
        rank = 1 + int((scores > scores[target]).sum())
        first += 1.0 / (target + 1) if target < 20 else 0.0
        reranked += 1.0 / rank if rank <= 20 else 0.0
    n = max(len(examples), 1)
    return first / n, reranked / n
