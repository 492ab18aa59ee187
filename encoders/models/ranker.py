"""A learned second stage: re-rank the best candidates of the mix with a small MLP over session features.

The mix (encoders/training/item_knn_mix.py) adds three scores linearly: the model's inner product, the
repeat bonus and the item-kNN votes. Which of them should win depends on the session: whether the user is
re-visiting items or moving on, whether a candidate is the last item, the one before it, or what tends to
*follow* the last item
(the kNN votes are symmetric). The ranker takes the top ``candidates`` items by the mix score and scores
each from :data:`FEATURES` with a one-hidden-layer MLP fitted (softmax over the candidates, the next item as
the label) on the validation slice, by a model that was trained on the events before it: the same setting
as the test period, which the fit never sees. The candidates then rank in the MLP's order, above all other
items, whose order stays the mix's.

Its tables come from the training period: sequential rules (for each item, its most frequent followers
within 10 positions, weighted 1 / gap and normalised per item, and its most frequent predecessors), the
item's popularity over the whole period and over its last 7 days. The same numpy code (:class:`NumpyRanker`)
scores offline and in the worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from encoders.models.inputs import PURCHASE_TYPE
from stream.errors import ConfigError

if TYPE_CHECKING:  # session_head.py builds the ranker from its config, so it imports this module
    from encoders.models.session_head import NumpyRepeatHead

FEATURES = (
    "inner",  # the model's inner product
    "repeat",  # the session head's repeat bonus
    "knn",  # item-kNN's session votes (mix weight included)
    "mix",  # the sum: the first-stage score
    "mix_rank",  # 1 / (1 + rank among the candidates by the mix score)
    "is_last",  # the candidate is the user's last item
    "in_session",  # among the last HISTORY item events
    "recency",  # 1 / (1 + position of its latest occurrence among them), 0 if absent
    "count",  # occurrences among them
    "length",  # log1p of the item events seen, at most HISTORY
    "distinct",  # distinct items among them / HISTORY
    "popularity",  # log1p training-period count / 10
    "after_purchase",  # the last item event was a purchase
    "knn_last",  # item-kNN similarity to the last item alone
    "follows_last",  # sequential rule last -> candidate
    "precedes_last",  # sequential rule candidate -> last
    "is_second_last",  # the candidate is the item before the last
    "recent_popularity",  # log1p count in the last 7 days of the training period / 5
    "trend",  # recent_popularity - popularity
)
HISTORY = 10  # recent item events the session features look at


def count_setting(setting: str, value: object, least: int = 0) -> int:
    """``value`` as a whole number of at least ``least``, else ConfigError naming ``setting``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(setting, f"must be a whole number >= {least}, got {value!r}")
    return value


@dataclass(frozen=True)
class RankerShape:
    """The re-ranker's size, the part of :class:`RankerConfig` a model keeps: ``SessionHeadConfig.ranker``
    (encoders/models/session_head.py), saved in the model config as the ``ranker_*`` keys.

    Each default is the value ``train --ranker`` fits with (encoders/training/train.py ``RANKER``): the shape of
    the best measured yoochoose model (MRR@20 0.2394 with the kNN mix), so changing one changes what is trained.
    """

    hidden: int = 32  # the MLP's hidden units (the measured model's)
    candidates: int = 100  # best items by the mix score that the ranker re-orders; the index returns at least as many
    rules: int = 50  # followers and predecessors kept per item (the measured model's)

    def __post_init__(self) -> None:
        count_setting("ranker_hidden", self.hidden, least=1)  # no re-ranker is SessionHeadConfig.ranker = None
        count_setting("ranker_candidates", self.candidates)
        count_setting("ranker_rules", self.rules)


@dataclass(frozen=True)
class RankerConfig(RankerShape):
    """The ranker's shape and fit; the shape is saved with the model (:attr:`shape`), the fit in its metrics."""

    epochs: int = 30
    lr: float = 3e-3
    max_events: int = 30_000  # validation targets it is fitted on

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @property
    def shape(self) -> RankerShape:
        """The part a model keeps (its config compares equal after an artifact round trip without the fit)."""
        return RankerShape(hidden=self.hidden, candidates=self.candidates, rules=self.rules)


class Ranker(nn.Module):
    """The ranker's weights and tables, stored with the model (safetensors) and copied into numpy to serve."""

    def __init__(self, n_items: int, hidden: int, rules: int) -> None:
        super().__init__()
        rows = n_items + 1
        self.follow_idx: Tensor
        self.follow_w: Tensor
        self.precede_idx: Tensor
        self.precede_w: Tensor
        self.popularity: Tensor
        self.recent_popularity: Tensor
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("follow_idx", torch.zeros(rows, rules, dtype=torch.long))
        self.register_buffer("follow_w", torch.zeros(rows, rules))
        self.register_buffer("precede_idx", torch.zeros(rows, rules, dtype=torch.long))
        self.register_buffer("precede_w", torch.zeros(rows, rules))
        self.register_buffer("popularity", torch.zeros(rows))
        self.register_buffer("recent_popularity", torch.zeros(rows))
        self.register_buffer("mean", torch.zeros(len(FEATURES)))
        self.register_buffer("std", torch.ones(len(FEATURES)))
        self.mlp = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def set_tables(self, tables: RankerTables) -> None:
        """Store the rule and popularity tables of a training period."""
        with torch.no_grad():
            for name in ("follow_idx", "follow_w", "precede_idx", "precede_w", "popularity", "recent_popularity"):
                getattr(self, name).copy_(torch.from_numpy(getattr(tables, name)))


@dataclass
class RankerTables:
    """Rule and popularity tables of the events before a cutoff (rows: model item rows, row 0 unused)."""

    follow_idx: np.ndarray
    follow_w: np.ndarray
    precede_idx: np.ndarray
    precede_w: np.ndarray
    popularity: np.ndarray
    recent_popularity: np.ndarray


def _lookup(idx: np.ndarray, weight: np.ndarray, row: int, items: np.ndarray) -> np.ndarray:
    """weight[row, j] where idx[row, j] == item, for each item (0 where absent)."""
    found = idx[row][None, :] == items[:, None]  # (C, K)
    out: np.ndarray = (found * weight[row][None, :]).sum(axis=1)
    return out


class NumpyRanker:
    """The ranker in numpy: features and scores, the one implementation used offline and online."""

    def __init__(self, ranker: Ranker, candidates: int) -> None:
        def array(t: Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        self.candidates = candidates
        self.follow_idx, self.follow_w = array(ranker.follow_idx), array(ranker.follow_w).astype(np.float64)
        self.precede_idx, self.precede_w = array(ranker.precede_idx), array(ranker.precede_w).astype(np.float64)
        self.popularity = array(ranker.popularity).astype(np.float64)
        self.recent_popularity = array(ranker.recent_popularity).astype(np.float64)
        self.mean, self.std = array(ranker.mean).astype(np.float64), array(ranker.std).astype(np.float64)
        first, second = ranker.mlp[0], ranker.mlp[2]
        assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
        self.w1, self.b1 = array(first.weight).T.astype(np.float64), array(first.bias).astype(np.float64)
        self.w2, self.b2 = array(second.weight)[0].astype(np.float64), float(array(second.bias)[0])

    def features(self, rows: np.ndarray, inner: np.ndarray, repeat: np.ndarray, knn: np.ndarray,
                 knn_idx: np.ndarray, knn_sim: np.ndarray, recent_rows: Sequence[int] | np.ndarray,
                 recent_types: Sequence[int] | np.ndarray) -> np.ndarray:
        """(C, len(FEATURES)) for candidate ``rows`` with their score parts, given the user's item events
        (rows and type ids, oldest first) and the session head's kNN table."""
        c = rows.size
        f = np.zeros((c, len(FEATURES)))
        mix = inner + repeat + knn
        f[:, 0], f[:, 1], f[:, 2], f[:, 3] = inner, repeat, knn, mix
        rank = np.empty(c)
        rank[np.argsort(-mix, kind="stable")] = np.arange(c)
        f[:, 4] = 1.0 / (1.0 + rank)
        history = np.asarray(recent_rows, dtype=np.int64)[-HISTORY:][::-1]  # most recent first
        types = np.asarray(recent_types, dtype=np.int64)
        f[:, 11] = self.popularity[rows]
        f[:, 17] = self.recent_popularity[rows]
        f[:, 18] = f[:, 17] - f[:, 11]
        if history.size == 0:
            return f
        match = rows[:, None] == history[None, :]  # (C, H)
        seen = match.any(axis=1)
        f[:, 5] = match[:, 0]
        f[:, 6] = seen
        f[:, 7] = np.where(seen, 1.0 / (1.0 + match.argmax(axis=1)), 0.0)
        f[:, 8] = match.sum(axis=1)
        f[:, 9] = math.log1p(history.size)
        f[:, 10] = np.unique(history).size / HISTORY
        f[:, 12] = float(types[-1] == PURCHASE_TYPE)
        last = int(history[0])
        f[:, 13] = _lookup(knn_idx, knn_sim, last, rows)
        f[:, 14] = _lookup(self.follow_idx, self.follow_w, last, rows)
        f[:, 15] = _lookup(self.precede_idx, self.precede_w, last, rows)
        if history.size > 1:
            f[:, 16] = match[:, 1]
        return f

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The MLP's score of each row of ``features``."""
        hidden = np.maximum(((features - self.mean) / self.std) @ self.w1 + self.b1, 0.0)
        out: np.ndarray = hidden @ self.w2 + self.b2
        return out


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first."""
    top = np.argpartition(-scores, k)[:k] if scores.size > k else np.arange(scores.size)
    out: np.ndarray = top[np.argsort(-scores[top], kind="stable")]
    return out


Extra = tuple[np.ndarray, np.ndarray]  # (rows, bonus) added to the kNN part: the live table's votes (a row may repeat)


def first_stage(head: NumpyRepeatHead, query: np.ndarray, item_emb: np.ndarray,
                recent_rows: Sequence[int] | np.ndarray, recent_types: Sequence[int] | np.ndarray,
                candidates: np.ndarray | None = None,
                extra: Extra | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, inner product, repeat bonus, kNN bonus) of the index's ``candidates`` (None: every item) and
    the rows the session head adds, after a user's item events (rows and type ids, oldest first); ``extra``
    (rows, bonus) joins the kNN part (encoders/models/live_neighbours.py)."""
    b_rows, repeat_b, knn_b = head.bonus_parts(query, recent_rows, recent_types)
    if extra is not None and extra[0].size:
        b_rows, inverse = np.unique(np.concatenate([b_rows, extra[0]]), return_inverse=True)
        n = repeat_b.size
        repeat_b = np.bincount(inverse[:n], weights=repeat_b, minlength=b_rows.size)
        knn_b = np.bincount(inverse, weights=np.concatenate([knn_b, extra[1]]), minlength=b_rows.size)
    if candidates is None:
        rows = np.arange(1, item_emb.shape[0], dtype=np.int64)
        position = b_rows - 1
        inner = item_emb[1:] @ query.astype(item_emb.dtype)  # a view: no copy of the item table
    else:
        rows, inverse = np.unique(np.concatenate([candidates, b_rows]), return_inverse=True)
        position = inverse[candidates.size:]
        inner = item_emb[rows] @ query.astype(item_emb.dtype)
    repeat = np.zeros(rows.size)
    knn = np.zeros(rows.size)
    repeat[position] = repeat_b
    knn[position] = knn_b
    return rows, inner.astype(np.float64), repeat, knn


def candidate_features(head: NumpyRepeatHead, ranker: NumpyRanker, query: np.ndarray, item_emb: np.ndarray,
                recent_rows: Sequence[int] | np.ndarray, recent_types: Sequence[int] | np.ndarray,
                candidates: np.ndarray | None,
                extra: Extra | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, first-stage scores, positions of the ranker's candidates in ``rows`` best first, their
    features): what both :func:`session_scores` and the fit's examples (encoders/training/ranker_fit.py) start from."""
    rows, inner, repeat, knn = first_stage(head, query, item_emb, recent_rows, recent_types, candidates, extra)
    mix = inner + repeat + knn
    top = _best(mix, ranker.candidates)
    features = ranker.features(rows[top], inner[top], repeat[top], knn[top], head.nbr_idx, head.nbr_sim,
                               recent_rows, recent_types)
    return rows, mix, top, features


def session_scores(head: NumpyRepeatHead, ranker: NumpyRanker | None, query: np.ndarray, item_emb: np.ndarray,
                   recent_rows: Sequence[int] | np.ndarray, recent_types: Sequence[int] | np.ndarray,
                   candidates: np.ndarray | None = None, extra: Extra | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The final scores of item rows after a user's item events: the inner product plus the session head's
    bonus and, with a ranker, its re-ordering of the best ``ranker.candidates`` by that sum (see
    :func:`first_stage`). Returns (rows, scores); the re-ordered rows score above the rest, whose order is
    kept; ``extra`` joins the kNN part (:func:`first_stage`). The one scoring function of the offline evaluation
    and of the worker."""
    if ranker is None:
        rows, inner, repeat, knn = first_stage(head, query, item_emb, recent_rows, recent_types, candidates, extra)
        return rows, inner + repeat + knn
    rows, mix, top, features = candidate_features(head, ranker, query, item_emb, recent_rows, recent_types,
                                                  candidates, extra)
    if rows.size == 0:
        return rows, mix
    ranked = ranker.scores(features)
    out = mix.copy()
    rest = np.ones(rows.size, dtype=bool)
    rest[top] = False
    if rest.any():  # below the re-ordered candidates, in the mix's order
        out[rest] = mix[rest] - mix[rest].max() + ranked.min() - 1.0
    out[top] = ranked
    return rows, out
