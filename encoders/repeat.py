"""A repeat (copy) head: a learned bonus for items the user interacted with recently, added to the logits.

Re-clicks are a quarter of yoochoose's held-out clicks, and an inner product against one query vector
ranks a session's own items poorly. The head adds, for every item among the user's last ``window`` item
events, ``gate(query) * sum over its occurrences of weight[event type, recency rank]`` (rank 0 = the most
recent item event; searches carry no item and do not count). The same arithmetic runs in numpy
(:class:`NumpyRepeatHead`) both for offline evaluation and for ``UserEncoder.repeat_scores``, so online
scores equal offline ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from encoders.events import SEARCH_TYPE, TYPE_IDS


class RepeatHead(nn.Module):
    """Bonus logits for recently seen items, by event type and recency, scaled by a gate on the query."""

    def __init__(self, dim: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.weight = nn.Parameter(torch.zeros(len(TYPE_IDS) + 1, window))  # (types + 1, window)
        self.gate = nn.Linear(dim, 1)

    def forward(self, queries: Tensor, items: Tensor, types: Tensor) -> Tensor:
        """Bonus of the item of event s for the prediction after event t: queries (B, T, dim), items and
        types (B, T) -> (B, T, T) indexed [b, t, s] (zero unless s <= t is among the last ``window`` item
        events up to t)."""
        is_item = (types != 0) & (types != SEARCH_TYPE)  # (B, T)
        count = is_item.long().cumsum(dim=1)  # item events up to and including each position
        rank = count[:, :, None] - count[:, None, :]  # (B, T, T): item events after s, up to t
        t = types.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=types.device).tril()
        valid = causal[None] & is_item[:, None, :] & (rank < self.window)
        w = self.weight[types[:, None, :].expand_as(rank), rank.clamp(0, self.window - 1)]  # (B, T, T)
        gate = functional.softplus(self.gate(queries))  # (B, T, 1)
        return w * valid * gate

    def add_to_logits(self, logits: Tensor, queries: Tensor, items: Tensor, types: Tensor,
                      positions: Tensor) -> Tensor:
        """``logits`` (N, n_items + 1) of the ``positions`` (B, T mask) plus the bonus of each recent item."""
        bonus = self.forward(queries, items, types)[positions]  # (N, T)
        index = items[:, None, :].expand(-1, items.shape[1], -1)[positions]  # (N, T)
        return logits.scatter_add(1, index, bonus)


class NumpyRepeatHead:
    """The repeat head of a trained model in numpy: the one implementation used offline and online."""

    def __init__(self, head: RepeatHead) -> None:
        self.window = head.window
        self.weight = head.weight.detach().cpu().numpy().astype(np.float64)
        self.gate_w = head.gate.weight.detach().cpu().numpy()[0].astype(np.float64)  # (dim,)
        self.gate_b = float(head.gate.bias.detach().cpu().numpy()[0])

    def bonus(self, query: np.ndarray, rows: Sequence[int] | np.ndarray,
              types: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct item rows among the last ``window`` item events (oldest first) and their bonus."""
        rows_a = np.asarray(rows, dtype=np.int64)[-self.window:]
        types_a = np.asarray(types, dtype=np.int64)[-self.window:]
        if rows_a.size == 0:
            return rows_a, np.zeros(0)
        rank = np.arange(rows_a.size - 1, -1, -1)
        z = float(query.astype(np.float64) @ self.gate_w) + self.gate_b
        gate = max(z, 0.0) + np.log1p(np.exp(-abs(z)))  # softplus without overflow
        unique, inverse = np.unique(rows_a, return_inverse=True)
        values = np.bincount(inverse, weights=self.weight[types_a, rank] * gate, minlength=unique.size)
        keep = unique != 0  # unknown items have no row to score
        return unique[keep], values[keep]


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
