"""A session head: learned bonus logits for the user's recent items (repeats) and their co-occurring items.

Re-clicks are a quarter of yoochoose's held-out clicks, and an inner product against one query vector
ranks a session's own items poorly. The head adds, for every item among the user's last ``window`` item
events, ``gate(query) * sum over its occurrences of weight[event type, recency rank]`` (rank 0 = the most
recent item event; searches carry no item and do not count). With ``neighbours`` > 0 it also adds, for
each of the last ``NEIGHBOUR_HISTORY`` item events, ``gate2(query) * nbr_weight[rank] * cosine`` to that
item's top co-occurring items (the item-kNN similarity of the training period, stored in the model as
buffers): a hybrid of the sequence model and session co-occurrence, with the mix learned end to end.

The same arithmetic runs in numpy (:class:`NumpyRepeatHead`) both for offline evaluation and for
``UserEncoder.repeat_scores``, so online scores equal offline ones.

:class:`SessionHeadConfig` is the one config of the head and of the learned re-ranker of its mix
(encoders/models/ranker.py), held by every model config as its ``head`` field; :func:`build_heads` makes both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse
from torch import Tensor, nn
from torch.nn import functional

from encoders.models.inputs import SEARCH_TYPE, TYPE_IDS
from encoders.models.ranker import Ranker, RankerShape, count_setting
from stream.errors import ConfigError

NEIGHBOUR_HISTORY = 10  # recent item events whose co-occurring items get a bonus
# The head's keys in the flat form of a model config: what artifacts store and what ``--option`` sets.
FLAT_FIELDS = ("repeat_window", "neighbours", "ranker_hidden", "ranker_rules", "ranker_candidates")


@dataclass(frozen=True)
class SessionHeadConfig:
    """The session head and the re-ranker of a model, whatever the model (field ``head`` of its config).

    Saved flat, as the :data:`FLAT_FIELDS` keys beside the model's own (:meth:`to_flat`, :meth:`from_flat`):
    the form every artifact has, and the names ``streamrec train --option`` takes.
    """

    # The last 50 item events (0 = no repeat part): re-clicks are a quarter of yoochoose's held-out clicks, and
    # the head lifts the GRU's MRR@20 there (0.1733 -> 0.1863 at 3 epochs; docs/models.md).
    repeat_window: int = 50
    # Co-occurring items per recent item (0 = none): off, as the co-occurrence part measured worse on yoochoose
    # (docs/models.md); ``--option neighbours=50`` turns it on. The fitted kNN mix sets it on its own copy.
    neighbours: int = 0
    # None: a re-ranker is attached only once fitted (``train --ranker``: encoders/training/ranker_fit.py
    # ``with_ranker``), as an unfitted one would re-order the best candidates at random.
    ranker: RankerShape | None = None

    def __post_init__(self) -> None:
        count_setting("repeat_window", self.repeat_window)
        count_setting("neighbours", self.neighbours)
        if self.ranker is not None and type(self.ranker) is not RankerShape:  # e.g. a RankerConfig with its fit
            raise ConfigError("ranker", f"must be a RankerShape (RankerConfig.shape), got {type(self.ranker).__name__}")

    @property
    def ranker_candidates(self) -> int:
        """Items the re-ranker re-orders; 0 without one."""
        return self.ranker.candidates if self.ranker is not None else 0

    def to_flat(self) -> dict[str, int]:
        """The :data:`FLAT_FIELDS` keys of a saved model config (no re-ranker: ``ranker_*`` all 0)."""
        r = self.ranker
        return {"repeat_window": self.repeat_window, "neighbours": self.neighbours,
                "ranker_hidden": r.hidden if r else 0, "ranker_rules": r.rules if r else 0,
                "ranker_candidates": r.candidates if r else 0}

    @classmethod
    def from_flat(cls, fields: Mapping[str, Any],
                  absent: SessionHeadConfig | None = None) -> tuple[SessionHeadConfig, dict[str, Any]]:
        """The head named by the :data:`FLAT_FIELDS` keys of ``fields`` (model options or a saved model
        config) and the other keys. A missing key is ``absent``'s value: the defaults for a new model,
        :data:`PRE_HEAD` for a saved config. ``ranker_hidden`` > 0 makes a re-ranker (0: none, and then its
        rules and candidates must be 0 too); its other keys default to :class:`RankerShape`'s."""
        base = cls() if absent is None else absent
        given = {k: fields[k] for k in FLAT_FIELDS if k in fields}
        rest = {k: v for k, v in fields.items() if k not in FLAT_FIELDS}
        shape = base.ranker if base.ranker is not None else RankerShape()
        hidden = given.get("ranker_hidden", base.ranker.hidden if base.ranker is not None else 0)
        ranker = None
        if hidden != 0:
            ranker = RankerShape(hidden=hidden, candidates=given.get("ranker_candidates", shape.candidates),
                                 rules=given.get("ranker_rules", shape.rules))
        else:
            for name in ("ranker_rules", "ranker_candidates"):
                if given.get(name, 0) != 0:
                    raise ConfigError(name, "is a re-ranker's: set ranker_hidden > 0 too (0 = no re-ranker)")
        head = cls(repeat_window=given.get("repeat_window", base.repeat_window),
                   neighbours=given.get("neighbours", base.neighbours), ranker=ranker)
        return head, rest


# What a saved model config without some of the FLAT_FIELDS keys had: those keys came with the repeat head, its
# neighbours and the re-ranker, each off before it. Only GRU/LSTM artifacts can lack repeat_window (SASRec's
# config had it from its first version), and an artifact loads strictly, so a head it never had must not appear.
PRE_HEAD = SessionHeadConfig(repeat_window=0)


class WithSessionHead:
    """The flat form and the re-ranker's depth of a model config dataclass with a ``head`` field (every model
    config: gru.py, transformer.py)."""

    head: SessionHeadConfig

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, flat as every artifact has it: the head's fields are top-level keys
        (``SessionHeadConfig.to_flat``; encoders/models/registry.py ``model_from_config`` reads it back)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {k: v for k, v in fields.items() if k != "head"} | self.head.to_flat()

    @property
    def ranker_candidates(self) -> int:
        """Items the re-ranker re-orders (0 without one), as the evaluation and the worker read it."""
        return self.head.ranker_candidates


def build_heads(config: SessionHeadConfig, dim: int, n_items: int) -> tuple[RepeatHead | None, Ranker | None]:
    """A model's session head (None with neither a repeat window nor neighbours) and re-ranker (None without)."""
    head = RepeatHead(dim, config.repeat_window, n_items, config.neighbours) \
        if config.repeat_window or config.neighbours else None
    ranker = Ranker(n_items, config.ranker.hidden, config.ranker.rules) if config.ranker is not None else None
    return head, ranker


class RepeatHead(nn.Module):
    """Bonus logits for recently seen items, by event type and recency, scaled by a gate on the query."""

    def __init__(self, dim: int, window: int, n_items: int = 0, neighbours: int = 0) -> None:
        super().__init__()
        self.window = max(window, 1)
        self.weight = nn.Parameter(torch.zeros(len(TYPE_IDS) + 1, self.window))  # (types + 1, window)
        self.gate = nn.Linear(dim, 1)
        self.neighbours = neighbours
        self.nbr_idx: Tensor
        self.nbr_sim: Tensor
        self.register_buffer("nbr_idx", torch.zeros(n_items + 1 if neighbours else 0, neighbours, dtype=torch.long))
        self.register_buffer("nbr_sim", torch.zeros(n_items + 1 if neighbours else 0, neighbours))
        self.nbr_weight = nn.Parameter(0.8 ** torch.arange(NEIGHBOUR_HISTORY, dtype=torch.float32))
        self.nbr_gate = nn.Linear(dim, 1)

    def set_neighbours(self, idx: np.ndarray, sim: np.ndarray) -> None:
        """Store each item's top co-occurring items (n_items + 1, neighbours) and their cosine similarity."""
        with torch.no_grad():
            self.nbr_idx.copy_(torch.from_numpy(idx))
            self.nbr_sim.copy_(torch.from_numpy(sim))

    def _ranks(self, types: Tensor) -> tuple[Tensor, Tensor]:
        """Recency rank [b, t, s] of event s seen from t, and whether s is an item event at or before t."""
        is_item = (types != 0) & (types != SEARCH_TYPE)  # (B, T)
        count = is_item.long().cumsum(dim=1)  # item events up to and including each position
        rank = count[:, :, None] - count[:, None, :]  # (B, T, T): item events after s, up to t
        t = types.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=types.device).tril()
        return rank, causal[None] & is_item[:, None, :]

    def forward(self, queries: Tensor, items: Tensor, types: Tensor) -> Tensor:
        """Bonus of the item of event s for the prediction after event t: queries (B, T, dim), items and
        types (B, T) -> (B, T, T) indexed [b, t, s] (zero unless s <= t is among the last ``window`` item
        events up to t)."""
        rank, seen = self._ranks(types)
        valid = seen & (rank < self.window)
        w = self.weight[types[:, None, :].expand_as(rank), rank.clamp(0, self.window - 1)]  # (B, T, T)
        gate = functional.softplus(self.gate(queries))  # (B, T, 1)
        return w * valid * gate

    def add_to_logits(self, logits: Tensor, queries: Tensor, items: Tensor, types: Tensor,
                      positions: Tensor) -> Tensor:
        """``logits`` (N, n_items + 1) of the ``positions`` (B, T mask) plus the bonus of each recent item."""
        bonus = self.forward(queries, items, types)[positions]  # (N, T)
        index = items[:, None, :].expand(-1, items.shape[1], -1)[positions]  # (N, T)
        logits = logits.scatter_add(1, index, bonus)
        if not self.neighbours:
            return logits
        rank, seen = self._ranks(types)
        valid = seen & (rank < NEIGHBOUR_HISTORY)
        w = self.nbr_weight[rank.clamp(0, NEIGHBOUR_HISTORY - 1)] * valid  # (B, T, T)
        w = (w * functional.softplus(self.nbr_gate(queries)))[positions]  # (N, T)
        n = index.shape[0]
        values = self.nbr_sim[index] * w[..., None]  # (N, T, K)
        return logits.scatter_add(1, self.nbr_idx[index].reshape(n, -1), values.reshape(n, -1))


class NumpyRepeatHead:
    """The repeat head of a trained model in numpy: the one implementation used offline and online."""

    def __init__(self, head: RepeatHead) -> None:
        self.window = head.window
        self.weight = head.weight.detach().cpu().numpy().astype(np.float64)
        self.gate_w = head.gate.weight.detach().cpu().numpy()[0].astype(np.float64)  # (dim,)
        self.gate_b = float(head.gate.bias.detach().cpu().numpy()[0])
        self.neighbours = head.neighbours
        self.nbr_idx = head.nbr_idx.detach().cpu().numpy()  # (n_items + 1, K)
        self.nbr_sim = head.nbr_sim.detach().cpu().numpy().astype(np.float64)
        self.nbr_weight = head.nbr_weight.detach().cpu().numpy().astype(np.float64)
        self.nbr_gate_w = head.nbr_gate.weight.detach().cpu().numpy()[0].astype(np.float64)
        self.nbr_gate_b = float(head.nbr_gate.bias.detach().cpu().numpy()[0])

    def bonus(self, query: np.ndarray, rows: Sequence[int] | np.ndarray,
              types: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Item rows with a bonus and the bonus, given the user's item events (oldest first): the distinct items
        among the last ``window`` and, with neighbours, the co-occurring items of the last few."""
        unique, repeat, knn = self.bonus_parts(query, rows, types)
        return unique, repeat + knn

    def bonus_parts(self, query: np.ndarray, rows: Sequence[int] | np.ndarray,
                    types: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`bonus` split in its repeat part and its neighbour part: (rows, repeat, neighbours)."""
        span = max(self.window, NEIGHBOUR_HISTORY if self.neighbours else 0)
        rows_a = np.asarray(rows, dtype=np.int64)[-span:]
        types_a = np.asarray(types, dtype=np.int64)[-span:]
        if rows_a.size == 0:
            return rows_a, np.zeros(0), np.zeros(0)
        q = query.astype(np.float64)
        rank = np.arange(rows_a.size - 1, -1, -1)
        near = rank < self.window
        targets = [rows_a[near]]
        values = [self.weight[types_a[near], rank[near]] * _softplus(float(q @ self.gate_w) + self.gate_b)]
        n_repeat = targets[0].size
        if self.neighbours:
            near = rank < NEIGHBOUR_HISTORY
            gate = _softplus(float(q @ self.nbr_gate_w) + self.nbr_gate_b)
            targets.append(self.nbr_idx[rows_a[near]].ravel())
            values.append((self.nbr_sim[rows_a[near]] * (self.nbr_weight[rank[near]] * gate)[:, None]).ravel())
        unique, inverse = np.unique(np.concatenate(targets), return_inverse=True)
        all_values = np.concatenate(values)
        repeat = np.bincount(inverse[:n_repeat], weights=all_values[:n_repeat], minlength=unique.size)
        knn = np.bincount(inverse[n_repeat:], weights=all_values[n_repeat:], minlength=unique.size)
        keep = unique != 0  # unknown items and empty neighbour slots have no row to score
        return unique[keep], repeat[keep], knn[keep]


def _softplus(z: float) -> float:
    return max(z, 0.0) + float(np.log1p(np.exp(-abs(z))))  # without overflow


def neighbour_table(similarity: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` most similar items of each row of a sparse similarity matrix: (rows, k) ids and values,
    zero-padded."""
    n = similarity.shape[0]
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for r in range(n):
        start, stop = similarity.indptr[r], similarity.indptr[r + 1]
        cols, vals = similarity.indices[start:stop], similarity.data[start:stop]
        top = np.argsort(-vals, kind="stable")[:k]
        idx[r, :len(top)], sim[r, :len(top)] = cols[top], vals[top]
    return idx, sim


def next_item_loss(queries: Tensor, item_weight: Tensor, head: RepeatHead | None, items: Tensor, types: Tensor,
                   targets: Tensor) -> Tensor:
    """Full-softmax cross-entropy of the next item over all items: inner products plus the repeat bonus.

    queries (B, T, dim), item_weight (n_items + 1, dim), items/types/targets (B, T; target 0 = none).
    """
    has_target = targets != 0  # score only positions with a next item: short sessions are mostly padding
    if not bool(has_target.any()):
        return queries.sum() * 0.0
    logits = queries[has_target] @ item_weight.T  # (N, n_items + 1)
    if head is not None:
        logits = head.add_to_logits(logits, queries, items, types, has_target)
    logits[:, 0] = float("-inf")  # never predict padding
    return functional.cross_entropy(logits, targets[has_target])
