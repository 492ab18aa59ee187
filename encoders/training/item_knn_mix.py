"""A fitted hybrid: the sequence model's scores plus session item-kNN votes, mixed on a validation slice.

The score of item i after a user's history is ``q . e_i + c * repeat(i) + w * knn(i)``: the inner product
and the learned repeat bonus of the session head (encoders/models/session_head.py), and item-kNN's session score
(each of the last 10 item events votes ``0.8 ** rank`` times its cosine co-occurrence with i, plus
``repeat_boost`` for itself, as in encoders/training/baselines.py, over each item's top ``k`` neighbours). Jointly
trained, the kNN weight stays small because the model memorises its training events; here the two scalars
``c`` and ``w`` are chosen by MRR@20 on the latest training events, which the model fitted on the earlier
ones has not seen (as the test period is unseen). The mix is stored in the session head's existing
parameters (repeat weights times ``c``, neighbour weights ``w * 0.8 ** rank``, a neighbour gate fixed at 1),
so the worker serves it through the same ``NumpyRepeatHead.bonus`` that scores it offline.

A mix that loses to item-kNN alone on the validation slice (lower MRR@20 or lower Recall@20) is never
chosen: the best grid point that does not lose is, and the grid's largest ``w`` orders items by the kNN votes
with the model breaking their ties, which item-kNN's random tie-breaking rarely beats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from encoders.models.inputs import SEARCH_TYPE
from encoders.models.registry import SequenceModel, model_from_config
from encoders.models.session_head import NEIGHBOUR_HISTORY, NumpyRepeatHead, neighbour_table
from encoders.training.baselines import ItemKnnConfig
from encoders.training.evaluation import held_out, rank_of, ranking_metrics, sequence_queries
from encoders.training.sequences import UserSequence
from stream.errors import TrainingError

REPEAT_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # c: the head's learned repeat bonus, scaled
KNN_WEIGHTS = (0.0, *(2.0 ** k for k in range(13)))  # w, 1 to 4096: inner products are O(10), kNN votes O(1)
_GATE_ONE = math.log(math.e - 1.0)  # softplus(_GATE_ONE) == 1: the neighbour bonus does not depend on the query


@dataclass(frozen=True)
class Mix:
    """The chosen mix and what it and its parts scored on the validation slice."""

    repeat_scale: float
    knn_weight: float
    validation: dict[str, dict[str, float]]  # "mix", "model" (c=1, w=0), "item_knn" (kNN votes alone)
    beats_item_knn: bool = True  # False: no grid point reached item-kNN on both MRR@20 and Recall@20


def not_worse(figures: dict[str, float], baseline: dict[str, float]) -> bool:
    """True when ``figures`` do not lose to ``baseline`` on MRR@20 nor on Recall@20."""
    return figures["mrr@20"] >= baseline["mrr@20"] and figures["recall@20"] >= baseline["recall@20"]


def best_fit(fits: list[Mix]) -> int:
    """The position of the fit (one per validated epoch) with the best validation MRR@20 among those that do
    not lose to item-kNN; a :class:`TrainingError` naming both figures when every one loses."""
    fair = [i for i, fit in enumerate(fits) if fit.beats_item_knn]
    if not fair:
        best = max(fits, key=lambda fit: fit.validation["mix"]["mrr@20"])
        mix, knn = best.validation["mix"], best.validation["item_knn"]
        raise TrainingError(
            f"every model and mix loses to item-kNN on the validation slice: the best scored MRR@20 "
            f"{mix['mrr@20']:.4f} and Recall@20 {mix['recall@20']:.4f}, item-kNN {knn['mrr@20']:.4f} and "
            f"{knn['recall@20']:.4f}; no model was written")
    return max(fair, key=lambda i: (fits[i].validation["mix"]["mrr@20"], fits[i].validation["mix"]["recall@20"]))


def knn_table(similarity: sparse.csr_matrix, k: int,
              repeat_boost: float = ItemKnnConfig().repeat_boost) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k - 1`` most similar items and itself (with ``repeat_boost``, item-kNN's bonus for a
    repeat): (n_items + 1, k) rows and weights for the session head's neighbour part."""
    idx, sim = neighbour_table(similarity, k - 1)
    rows = np.arange(similarity.shape[0], dtype=np.int64)[:, None]
    return np.hstack([rows, idx]), np.hstack([np.full_like(rows, repeat_boost, dtype=np.float32), sim])


def fit_mix(model: SequenceModel, sequences: dict[str, UserSequence], since: float, until: float,
            table: tuple[np.ndarray, np.ndarray], max_events: int,
            query_vectors: np.ndarray | None = None) -> Mix:
    """Choose ``c`` and ``w`` by MRR@20 on the validation events in [since, until), given a model trained
    on the events before ``since`` and the kNN ``table`` of those events."""
    assert model.repeat is not None, "the mix needs the session head"
    repeat = NumpyRepeatHead(model.repeat)
    repeat.neighbours = 0
    knn = NumpyRepeatHead(model.repeat)
    knn.window = 1
    knn.weight = np.zeros_like(knn.weight)
    knn.neighbours, knn.nbr_idx, knn.nbr_sim = table[0].shape[1], table[0], table[1].astype(np.float64)
    knn.nbr_weight = ItemKnnConfig().decay ** np.arange(NEIGHBOUR_HISTORY, dtype=np.float64)
    knn.nbr_gate_w, knn.nbr_gate_b = np.zeros_like(knn.nbr_gate_w), _GATE_ONE
    model.eval()
    item_emb = model.item_weight().detach().numpy()  # (n_items + 1, dim)
    grid = [(c, w) for c in REPEAT_SCALES for w in KNN_WEIGHTS]
    n_items = item_emb.shape[0]
    ranks: dict[tuple[float, float], list[tuple[int, int]]] = {key: [] for key in [*grid, (0.0, math.inf)]}
    for _, seq, positions in held_out(sequences, since, max_events, until):
        q = sequence_queries(model, seq, positions, query_vectors)  # (P, dim)
        inner = q @ item_emb.T  # (P, n_items + 1)
        rep, vote = np.zeros_like(inner), np.zeros_like(inner)
        item_events = np.flatnonzero((seq.types != 0) & (seq.types != SEARCH_TYPE))
        for p, t in enumerate(positions):
            recent = item_events[item_events < t]
            for head, out in ((repeat, rep), (knn, vote)):
                rows, bonus = head.bonus(q[p], seq.items[recent], seq.types[recent])
                out[p, rows] += bonus
        targets = seq.items[positions].tolist()
        for key in ranks:  # (0, inf): the kNN votes alone
            score = vote.copy() if math.isinf(key[1]) else inner + key[0] * rep + key[1] * vote
            score[:, 0] = -np.inf
            ranks[key] += [rank_of(score[p], target, n_items) for p, target in enumerate(targets)]
    measured = {key: ranking_metrics(r) for key, r in ranks.items()}  # ties at random, as the evaluation
    knn_alone = measured[(0.0, math.inf)]
    fair = [key for key in grid if not_worse(measured[key], knn_alone)]
    best = max(fair or grid, key=lambda key: (measured[key]["mrr@20"], measured[key]["recall@20"]))
    return Mix(repeat_scale=best[0], knn_weight=best[1],
               validation={"mix": measured[best], "model": measured[(1.0, 0.0)], "item_knn": knn_alone},
               beats_item_knn=bool(fair))


def with_mix(model: SequenceModel, table: tuple[np.ndarray, np.ndarray], mix: Mix) -> SequenceModel:
    """A copy of ``model`` whose session head adds ``c * repeat + w * knn`` (the kNN part from ``table``)."""
    mixed = model_from_config(model.config.cell, model.config.to_dict() | {"neighbours": table[0].shape[1]})
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(("nbr_idx", "nbr_sim"))}
    mixed.load_state_dict(state, strict=False)
    head = mixed.repeat
    assert head is not None
    head.set_neighbours(*table)
    with torch.no_grad():
        head.weight.mul_(mix.repeat_scale)
        head.nbr_weight.copy_(mix.knn_weight * ItemKnnConfig().decay ** torch.arange(NEIGHBOUR_HISTORY,
                                                                                      dtype=torch.float32))
        head.nbr_gate.weight.zero_()
        head.nbr_gate.bias.fill_(_GATE_ONE)
    return mixed.eval()
