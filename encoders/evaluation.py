"""Full-ranking next-item evaluation on the held-out later period (no sampled negatives).

For every held-out item event, the model ranks all items given the user's whole history up to it;
hit-rate@k, NDCG@k and MRR are averaged over those events. Items unknown to the model count as misses.
The popularity baseline ranks by pre-cutoff counts, on the same events.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from encoders.gru import RecurrentModel
from encoders.sequences import UserSequence


def _rank_metrics(ranks: list[int], k: int) -> dict[str, float]:
    """Ranks are 0-based positions of the target (a huge rank for misses)."""
    if not ranks:
        return {f"hit_rate_at_{k}": 0.0, f"ndcg_at_{k}": 0.0, "mrr": 0.0, "events": 0}
    r = np.asarray(ranks, dtype=np.float64)
    return {
        f"hit_rate_at_{k}": float(np.mean(r < k)),
        f"ndcg_at_{k}": float(np.mean(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0))),
        "mrr": float(np.mean(1.0 / (r + 1.0))),
        "events": len(ranks),
    }


@torch.inference_mode()
def evaluate(model: RecurrentModel, sequences: dict[str, UserSequence], cutoff: float,
             k: int = 10, max_events: int = 20_000) -> dict[str, dict[str, float]]:
    """Metrics of the model and of the popularity baseline on events at or after the cutoff."""
    model.eval()
    n_items = model.config.n_items
    popularity = np.zeros(n_items + 1, dtype=np.float64)
    for seq in sequences.values():
        n = int(np.searchsorted(seq.ts, cutoff, side="left"))
        np.add.at(popularity, seq.items[:n], 1.0)
    popularity[0] = -math.inf
    pop_rank = np.empty(n_items + 1, dtype=np.int64)
    pop_rank[np.argsort(-popularity, kind="stable")] = np.arange(n_items + 1)

    item_vectors = model.item_emb.weight  # (n_items + 1, dim)
    model_ranks: list[int] = []
    base_ranks: list[int] = []
    for user in sorted(sequences):
        seq = sequences[user]
        first = int(np.searchsorted(seq.ts, cutoff, side="left"))
        positions = [t for t in range(max(first, 1), len(seq.ts)) if seq.types[t] != 2]  # item events only
        if not positions:
            continue
        queries, _ = model(torch.from_numpy(seq.items[None]), torch.from_numpy(seq.types[None]),
                           torch.from_numpy(seq.tokens[None]))  # (1, T, dim)
        for t in positions:
            target = int(seq.items[t])
            if target == 0:
                model_ranks.append(n_items)
                base_ranks.append(n_items)
                continue
            scores = item_vectors @ queries[0, t - 1]  # (n_items + 1,)
            scores[0] = -math.inf
            model_ranks.append(int((scores > scores[target]).sum()))
            base_ranks.append(int(pop_rank[target]))
        if len(model_ranks) >= max_events:
            break
    return {"model": _rank_metrics(model_ranks, k), "popularity": _rank_metrics(base_ranks, k)}
