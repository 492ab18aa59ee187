"""`streamrec evaluate`: full-ranking metrics of saved artifacts and of the baselines on the same split.

Each artifact is scored on its own dataset's test period, rebuilt exactly as training built it: the cutoff
stored in the artifact, its item id map, and search events kept or dropped as in training. Popularity and
item-kNN are fitted on the same pre-cutoff events and scored on the same events. Writes ``metrics.json``
(name -> metrics; a model trained without searches is ``<type>-no-searches``, a further artifact of the same
kind ``<name>:<version>``), ``report.md`` (a table) and ``metrics.png`` (a bar chart) into the output folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.artifact import ModelArtifact, load_artifact
from encoders.models.item_tower import TextTable
from encoders.training.evaluation import evaluate_model
from encoders.training.sequences import UserSequence, build_sequences
from stream.errors import ArtifactError
from stream.tools.datasets import load_events

METRICS = ("recall@10", "recall@20", "ndcg@10", "mrr@20", "coverage@20", "novelty")
PLOTTED = ("recall@10", "recall@20", "ndcg@10", "mrr@20")  # on one 0..1 scale


def artifact_sequences(artifact: ModelArtifact, data_dir: Path
                       ) -> tuple[dict[str, UserSequence], float, np.ndarray | None]:
    """The artifact's dataset rebuilt as training built it: user sequences, the cutoff, and the MiniLM
    vectors of the query rows (for a model with an item tower, else None)."""
    split = artifact.metrics.get("split", {})
    train = artifact.metrics.get("train", {})
    if "cutoff_ts" not in split:
        raise ArtifactError(f"model artifact {artifact.path}: no split in its metrics (train it again)")
    events = load_events(artifact.dataset, data_dir)
    if not train.get("searches", True):
        events = [e for e in events if e.type != "search"]
    config = artifact.model.config
    queries = None
    if getattr(config, "text_dim", 0):  # the item tower reads search queries as MiniLM vectors
        from encoders.text import DIM, TextEncoder

        queries = TextTable((e.query for e in events), TextEncoder().encode, DIM)
    sequences = build_sequences(events, artifact.item_ids, config.query_buckets, config.max_query_tokens,
                                queries.rows if queries is not None else None)
    return sequences, float(split["cutoff_ts"]), queries.vectors if queries is not None else None


def evaluate_artifact(artifact: ModelArtifact, data_dir: Path, max_events: int) -> dict[str, dict[str, float]]:
    """Model and baseline metrics on the artifact's dataset and split."""
    sequences, cutoff, query_vectors = artifact_sequences(artifact, data_dir)
    return evaluate_model(artifact.model.config.cell, artifact.model, sequences, cutoff, len(artifact.item_ids),
                          max_events, query_vectors)


def evaluate_artifacts(paths: Sequence[Path], data_dir: Path, out: Path,
                       max_events: int = 20_000) -> dict[str, dict[str, float]]:
    """Evaluate every artifact (one dataset per run) and write the report files; returns metrics.json."""
    artifacts = [load_artifact(p) for p in paths]
    datasets = sorted({a.dataset for a in artifacts})
    if len(datasets) != 1:
        raise ArtifactError(f"artifacts of several datasets ({', '.join(datasets)}): evaluate one at a time")
    table: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    for art in artifacts:
        results = evaluate_artifact(art, data_dir, max_events)
        for name, metrics in results.items():
            if name in ("popularity", "item_knn") and name in table:
                continue  # the same split gives the same baseline figures
            key = name
            if name not in ("popularity", "item_knn") and not art.metrics.get("train", {}).get("searches", True):
                key = f"{name}-no-searches"
            if key in table:  # a second artifact of the same kind
                key = f"{key}:{art.version}"
            table[key] = metrics
            sources[key] = art.version
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(datasets[0], table, sources, artifacts))
    _plot(datasets[0], table, out / "metrics.png")
    return table


def _markdown(dataset: str, table: dict[str, dict[str, float]], sources: dict[str, str],
              artifacts: list[ModelArtifact]) -> str:
    split = artifacts[0].metrics.get("split", {})
    lines = [f"# Offline evaluation on {dataset}", "",
             f"Full ranking over {len(artifacts[0].item_ids)} items; test = events at or after "
             f"ts {split.get('cutoff_ts')} (latest {split.get('test_fraction')} of events); "
             f"{next(iter(table.values())).get('events', 0)} test events.", "",
             "| name | " + " | ".join(METRICS) + " | artifact |",
             "|---" * (len(METRICS) + 2) + "|"]
    for name, m in table.items():
        cells = " | ".join(f"{m.get(k, float('nan')):.4f}" for k in METRICS)
        lines.append(f"| {name} | {cells} | {sources[name]} |")
    lines += ["", "![metrics](metrics.png)", ""]
    for art in artifacts:
        train: dict[str, Any] = art.metrics.get("train", {})
        mix = train.get("mix")
        epochs = f"{train.get('epochs')} epochs"
        if mix:  # the epoch count was chosen on the validation slice
            epochs = (f"{mix['chosen_epochs']} epochs (of {train.get('epochs')} validated; item-kNN mix "
                      f"c={mix['repeat_scale']}, w={mix['knn_weight']})")
        ranker = train.get("ranker")
        if ranker:
            epochs += (f", learned re-ranker over the best {ranker['candidates']} (fitted on {ranker['examples']} "
                       f"validation targets)")
        lines.append(f"- `{art.version}`: {epochs}, {train.get('seconds')} s to train and "
                     f"evaluate, searches {'kept' if train.get('searches', True) else 'dropped'}")
    return "\n".join(lines) + "\n"


def _plot(dataset: str, table: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(PLOTTED), 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [k + i * width for k in range(len(PLOTTED))]
        ax.bar(xs, [table[name].get(m, 0.0) for m in PLOTTED], width, label=name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(PLOTTED))], PLOTTED)
    ax.set_title(f"{dataset}: full-ranking next-item metrics (test period)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
