"""`streamrec evaluate --diversity S1,S2,...`: the accuracy/diversity trade-off of the MMR re-rank.

For each strength, every held-out target of the offline evaluation (same events, same full-ranking scores)
gets a top-20 list re-ranked by ``stream.core.rerank.diversify`` (the function the worker runs) from the model's
best 80 items, and is scored with Recall@20, MRR@20, NDCG@10, intra-list diversity (mean pairwise cosine
distance of the top 10's item vectors) and categories per list (distinct catalog categories in the top 10;
the dataset's categories, where it has them). Strength 0 is the plain ranking.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoders.artifact import load_artifact
from encoders.training.evaluation import held_out, model_scorer
from stream.core.rerank import diversify
from stream.core.schemas import RecommendedItem
from stream.tools.datasets import load_catalog
from stream.tools.report import artifact_sequences

POOL = 80  # candidates re-ranked per list (the worker uses 4 x top_k)
LIST = 20


def evaluate_diversity(path: Path, data_dir: Path, strengths: Sequence[float],
                       max_events: int = 20_000) -> dict[str, dict[str, float]]:
    """Metrics per strength (keys "diversity=<s>") for one artifact."""
    artifact = load_artifact(path)
    sequences, cutoff, query_vectors = artifact_sequences(artifact, data_dir)
    scorer = model_scorer(artifact.model, query_vectors)
    vectors = artifact.model.item_weight().detach().numpy()  # (n_items + 1, dim)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    categories = {r.item_id: r.category for r in load_catalog(artifact.dataset, data_dir)}
    row_category = [None] + [categories.get(item) for item in artifact.item_ids]
    results: dict[str, list[tuple[int, float, int]]] = {f"diversity={s:g}": [] for s in strengths}
    for _, seq, positions in held_out(sequences, cutoff, max_events):
        scores = np.asarray(scorer(seq, positions), dtype=np.float64)
        scores[:, 0] = -np.inf
        for p, target in enumerate(seq.items[positions]):
            best = np.argpartition(-scores[p], POOL)[:POOL]
            best = best[np.argsort(-scores[p, best])]
            pool = [RecommendedItem(str(int(r)), float(scores[p, r])) for r in best]
            for s in strengths:
                chosen = [int(it.item_id) for it in diversify(pool, vectors[best], LIST, s)]
                rank = chosen.index(int(target)) if int(target) in chosen else LIST + 1
                top = unit[chosen[:10]]
                similarity = top @ top.T
                spread = float(1.0 - similarity[np.triu_indices(len(top), 1)].mean())
                kinds = len({row_category[r] for r in chosen[:10] if row_category[r] is not None})
                results[f"diversity={s:g}"].append((rank, spread, kinds))
    out = {}
    for name, rows in results.items():
        ranks = np.array([r for r, _, _ in rows], dtype=np.float64)
        out[name] = {"recall@20": float(np.mean(ranks < LIST)),
                     "mrr@20": float(np.mean(np.where(ranks < LIST, 1.0 / (ranks + 1), 0.0))),
                     "ndcg@10": float(np.mean(np.where(ranks < 10, 1.0 / np.log2(ranks + 2), 0.0))),
                     "intra_list_diversity@10": float(np.mean([d for _, d, _ in rows])),
                     "categories@10": float(np.mean([c for _, _, c in rows])), "events": len(rows)}
    return out


def write_diversity_report(path: Path, data_dir: Path, strengths: Sequence[float], out: Path,
                           max_events: int = 20_000) -> dict[str, dict[str, float]]:
    """Evaluate and write diversity.json and diversity.md into ``out``."""
    table = evaluate_diversity(path, data_dir, strengths, max_events)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diversity.json").write_text(json.dumps(table, indent=2) + "\n")
    keys = ("recall@20", "mrr@20", "ndcg@10", "intra_list_diversity@10", "categories@10")
    lines = [f"# Accuracy and diversity: MMR re-rank of {path.name}", "",
             "| strength | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name.split('=')[1]} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |"
              for name, m in table.items()]
    (out / "diversity.md").write_text("\n".join(lines) + "\n")
    return table
