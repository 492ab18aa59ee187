"""`streamrec evaluate ARTIFACT --search`: how well a search is answered, on MovieLens, with full ranking.

Four scorers rank every item for each search:

* ``model``: the served model's list after the search steps the user's state (the query enters the GRU as
  one more input);
* ``hybrid``: the search blend (encoders/models/search_blend.py) over the union of the query's best items by
  text and the user's best items by the model; the artifact's own blend, or one fitted on its training
  period when it has none;
* ``text_only``: the query's MiniLM vector against the items' text vectors (title and genres);
* ``popularity``: the training period's counts.

Measures:

* tag-as-query: each test-period tag event is a search with the tag's text whose target is the tagged
  movie, given the user's history (Recall@20, MRR@20);
* genre-query precision: each genre name as a query, for cold users and for users with history at the
  cutoff; the share of the top 10 whose genres contain it (precision@10);
* the next click: Recall@20 of the item event that follows a test-period search (``model``: the search only
  stepped the state; ``hybrid``: the carried intent).

Writes ``search.json`` (scorer -> metrics, and ``run``: the artifact, precision by genre, the blend) into the
output folder and adds a section to its ``report.md``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.artifact import ModelArtifact, load_artifact
from encoders.models.inputs import TYPE_IDS, query_tokens
from encoders.models.search_blend import FILE as BLEND_FILE
from encoders.models.search_blend import NumpyBlend, SearchBlend
from encoders.training.baselines import Popularity
from encoders.training.evaluation import rank_of, ranking_metrics
from encoders.training.search_fit import (
    SearchCase,
    blended_scores,
    carried_scores,
    fit_search_blend,
    follow_cases,
    search_cases,
)
from encoders.training.sequences import UserSequence
from stream.errors import ArtifactError
from stream.tools.datasets import dataset_dir
from stream.tools.report import artifact_sequences

SCORERS = ("model", "hybrid", "text_only", "popularity")
GENRE_USERS = 200  # users per genre query, cold and with history
MIN_HISTORY = 5  # item events before the cutoff for a user "with history"
SEED = 7  # which users with history are drawn


@dataclass
class SearchEvaluation:
    """What the scorers need: the artifact, its sequences and split, the query vectors and the blend."""

    artifact: ModelArtifact
    sequences: dict[str, UserSequence]
    cutoff: float
    query_vectors: np.ndarray
    blend: SearchBlend
    blend_report: dict[str, object]
    counts: np.ndarray  # training-period item counts by row

    def __post_init__(self) -> None:
        self.scorer = NumpyBlend(self.blend)
        self.popularity = self.counts.astype(np.float64)  # the popularity scorer's scores (row 0 never wins)
        self.popularity[0] = -math.inf


def prepare(path: Path, data_dir: Path) -> SearchEvaluation:
    """Load the artifact and rebuild its split; the artifact's blend, or one fitted on its training period."""
    artifact = load_artifact(path)
    if artifact.dataset != "movielens":
        raise ArtifactError(f"{path}: search quality is measured on movielens, this model is {artifact.dataset}")
    sequences, cutoff, query_vectors = artifact_sequences(artifact, data_dir)
    if query_vectors is None:
        raise ArtifactError(f"{path}: a model without an item tower cannot answer searches by text")
    counts = Popularity(sequences, cutoff, len(artifact.item_ids)).counts
    blend = SearchBlend.load(artifact.path)
    report: dict[str, object] = {"source": BLEND_FILE}
    if blend is None:
        blend, report = fit_search_blend(artifact.model, sequences, query_vectors, counts, cutoff, seed=SEED)
        report["source"] = "fitted on the training period"
    return SearchEvaluation(artifact, sequences, cutoff, query_vectors, blend, report, counts)


def case_scores(ev: SearchEvaluation, case: SearchCase) -> dict[str, np.ndarray]:
    """Each scorer's scores of every item row for one search (row 0 never wins)."""
    return {"model": case.personal, "hybrid": blended_scores(ev.scorer, case), "text_only": case.text,
            "popularity": ev.popularity}


def tag_metrics(ev: SearchEvaluation) -> dict[str, dict[str, float]]:
    """Recall@20 and MRR@20 of the test period's tag-as-query searches whose movie the model knows."""
    n_items = len(ev.artifact.item_ids)
    ranks: dict[str, list[tuple[int, int]]] = {name: [] for name in SCORERS}
    for case in search_cases(ev.artifact.model, ev.sequences, ev.query_vectors, ev.cutoff):
        if not case.target:
            continue
        for name, scores in case_scores(ev, case).items():
            ranks[name].append(rank_of(scores, case.target, n_items))
    out = {}
    for name, pairs in ranks.items():
        metrics = ranking_metrics(pairs) if pairs else {"recall@20": 0.0, "mrr@20": 0.0, "events": 0}
        out[name] = {"tag_recall@20": metrics["recall@20"], "tag_mrr@20": metrics["mrr@20"],
                     "tag_searches": metrics["events"]}
    return out


def next_click(ev: SearchEvaluation) -> dict[str, dict[str, float]]:
    """Recall@20 of the item event that follows a test-period search, by the list the search got: the
    model's (the search only stepped the state), the hybrid's, the query's text alone, and popularity."""
    n_items = len(ev.artifact.item_ids)
    ranks: dict[str, list[tuple[int, int]]] = {name: [] for name in SCORERS}
    for follow in follow_cases(ev.artifact.model, ev.sequences, ev.query_vectors, ev.cutoff):
        case = follow.case
        if follow.events != 0 or not case.target:  # the click right after the search
            continue
        for name, scores in (("model", case.personal), ("hybrid", carried_scores(ev.scorer, follow)),
                             ("text_only", case.text), ("popularity", ev.popularity)):
            ranks[name].append(rank_of(scores, case.target, n_items))
    return {name: {"next_click_recall@20": ranking_metrics(pairs)["recall@20"] if pairs else 0.0,
                   "next_clicks": len(pairs)} for name, pairs in ranks.items()}


def movie_genres(data_dir: Path) -> dict[str, set[str]]:
    """Movie id -> its genres (movies.csv)."""
    with open(dataset_dir("movielens", data_dir) / "movies.csv", newline="", encoding="utf-8") as f:
        return {row["movieId"]: set(row["genres"].split("|")) - {"(no genres listed)"} for row in csv.DictReader(f)}


def _with_search(ev: SearchEvaluation, seq: UserSequence | None, end: int, query_row: int,
                 tokens: list[int]) -> UserSequence:
    """The user's first ``end`` events (none for a cold user) followed by one search."""
    config = ev.artifact.model.config
    def head(a: np.ndarray | None, tail: np.ndarray) -> np.ndarray:
        return tail if seq is None or a is None else np.concatenate([a[:end], tail])
    return UserSequence(
        items=head(seq.items if seq else None, np.zeros(1, np.int64)),
        types=head(seq.types if seq else None, np.array([TYPE_IDS["search"]])),
        tokens=head(seq.tokens if seq else None, np.array([tokens], np.int64).reshape(1, config.max_query_tokens)),
        ts=head(seq.ts if seq else None, np.array([ev.cutoff])),
        queries=head(seq.queries if seq else None, np.array([query_row])),
        search_targets=head(seq.search_targets if seq else None, np.zeros(1, np.int64)),
    )


def genre_precision(ev: SearchEvaluation, data_dir: Path, users: int = GENRE_USERS
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Precision@10 of every genre name as a query, per scorer, for cold users and for users with history;
    and per genre (the hybrid's, cold and with history)."""
    from encoders.text import TextEncoder

    genres_of = movie_genres(data_dir)
    names = sorted({g for gs in genres_of.values() for g in gs})
    row_genres: list[set[str]] = [set(), *(genres_of.get(item, set()) for item in ev.artifact.item_ids)]
    config = ev.artifact.model.config
    vectors = TextEncoder().encode(names)
    table = np.concatenate([ev.query_vectors, vectors])  # the genre queries' rows follow the dataset's
    ev_ext = SearchEvaluation(ev.artifact, ev.sequences, ev.cutoff, table, ev.blend, ev.blend_report, ev.counts)
    with_history = [u for u in sorted(ev.sequences) if _events_before(ev.sequences[u], ev.cutoff) >= MIN_HISTORY]
    rng = np.random.default_rng(SEED)
    chosen = [with_history[i] for i in sorted(rng.choice(len(with_history), min(users, len(with_history)),
                                                         replace=False))]
    totals: dict[str, dict[str, list[float]]] = {k: {n: [] for n in SCORERS} for k in ("cold", "history")}
    by_genre: dict[str, dict[str, float]] = {}
    for g, genre in enumerate(names):
        row = len(ev.query_vectors) + g
        tokens = query_tokens(genre, config.query_buckets, config.max_query_tokens)
        cohorts: dict[str, list[UserSequence]] = {
            # every cold user has the same empty history, so one stands for all of them
            "cold": [_with_search(ev, None, 0, row, tokens)],
            "history": [_with_search(ev, ev.sequences[u], _events_before(ev.sequences[u], ev.cutoff), row, tokens)
                        for u in chosen],
        }
        for cohort, seqs in cohorts.items():
            hybrid_share = []
            weight = users if cohort == "cold" else 1
            for seq in seqs:
                case = next(search_cases(ev_ext.artifact.model, {"u": seq}, table, ev.cutoff))
                for name, scores in case_scores(ev_ext, case).items():
                    top = np.argsort(-scores, kind="stable")[:10]
                    share = sum(genre in row_genres[r] for r in top) / 10.0
                    totals[cohort][name].extend([share] * weight)
                    if name == "hybrid":
                        hybrid_share.append(share)
            by_genre.setdefault(genre, {})[cohort] = float(np.mean(hybrid_share))
    summary = {name: {f"genre_precision@10_{cohort}": float(np.mean(totals[cohort][name]))
                      for cohort in totals} for name in SCORERS}
    return summary, by_genre


def _events_before(seq: UserSequence, cutoff: float) -> int:
    return int(np.searchsorted(seq.ts, cutoff, side="left"))


def evaluate_search(path: Path, data_dir: Path, out: Path, progress: Callable[[str], None] = lambda _: None,
                    genre_users: int = GENRE_USERS) -> dict[str, object]:
    """Every measure for every scorer; writes search.json and search.md into ``out`` and returns the JSON."""
    ev = prepare(path, data_dir)
    progress("tag-as-query searches")
    tags = tag_metrics(ev)
    progress("the clicks after a search")
    following = next_click(ev)
    progress("genre queries")
    genres, by_genre = genre_precision(ev, data_dir, genre_users)
    scorers = {name: tags[name] | genres[name] | following[name] for name in SCORERS}
    result: dict[str, object] = {**scorers, "run": {"artifact": ev.artifact.version, "by_genre": by_genre,
                                 "blend": ev.blend_report | {"pool": ev.blend.pool, "personal_pool": ev.blend.user_pool,
                                                              "weights": list(ev.blend.weights),
                                                              "carry_events": ev.blend.carry_events,
                                                              "carry_half_life_s": ev.blend.carry_half_life_s}}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    report = out / "report.md"  # its section follows `streamrec evaluate`'s table, or starts the file
    before = report.read_text().rstrip() + "\n\n" if report.exists() else ""
    report.write_text(before + _markdown(result["run"], scorers, by_genre))  # type: ignore[arg-type]
    return result


def _markdown(run: dict[str, object], scorers: dict[str, dict[str, float]],
              by_genre: dict[str, dict[str, float]]) -> str:
    keys = ("tag_recall@20", "tag_mrr@20", "genre_precision@10_cold", "genre_precision@10_history",
            "next_click_recall@20")
    lines = [f"## Search quality: {run['artifact']}", "",
             "Full ranking over every item. Tag-as-query: test-period tag events as searches for the tagged "
             "movie. Genre precision@10: each genre name as a query, for cold users and for users with "
             "history at the cutoff.", "",
             "| scorer | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, metrics in scorers.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics.get(k, 0.0):.4f}" for k in keys) + " |")
    weakest = sorted(by_genre.items(), key=lambda kv: kv[1].get("history", 0.0))[:5]
    lines += ["", "The hybrid's weakest genres (precision@10 with history, cold):", ""]
    lines += [f"- {genre}: {v.get('history', 0.0):.2f}, {v.get('cold', 0.0):.2f}" for genre, v in weakest]
    lines += ["", f"Blend: {json.dumps(run['blend'])}", ""]
    return "\n".join(lines)
