"""Explanations and diversity on the real artifact."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson

from stream.core.explain import explain
from stream.core.pipeline import Recommender, Rules
from stream.core.rerank import diversify
from stream.core.schemas import RecommendedItem, Source

NOW = 1_700_000_000.0


def send(rec: Recommender, states: dict[str, bytes], user: str, n: int, item: str | None = None,
         query: str | None = None) -> list[RecommendedItem]:
    kind, body = ("search", {"query": query}) if query else ("click", {"item_id": item})
    raw = orjson.dumps({"schema_version": 1, "user_id": user, "ts": NOW - 1, "event_id": f"{user}-{n}"} | body)
    topic = "searches" if query else "clicks"
    out = rec.process(kind, raw, user.encode(), Source(topic, 0, n), states)  # type: ignore[arg-type]
    assert out.recommendation is not None
    return list(out.recommendation.items)


def test_explanations_name_the_viewed_items_and_the_search(recommender: Recommender) -> None:
    recommender.default.rules = Rules(top_k=10, explanations=2)
    ids = recommender.served.encoder.item_ids
    states: dict[str, bytes] = {}
    viewed = [ids[10], ids[500]]
    items = send(recommender, states, "u1", 0, item=viewed[0])
    assert all(it.because == (f"click:{viewed[0]}",) for it in items)  # one past item: it explains all
    items = send(recommender, states, "u1", 1, item=viewed[1])
    named = {b for it in items for b in it.because}
    assert named <= {f"click:{v}" for v in viewed} and all(1 <= len(it.because) <= 2 for it in items)
    # Each item names the viewed item whose vector is most like it.
    vectors = recommender.served.vectors_of(viewed)
    for it in items:
        v = recommender.served.vectors_of([it.item_id])[0]
        cos = vectors @ v / np.linalg.norm(vectors, axis=1) / np.linalg.norm(v)
        assert it.because[0] == f"click:{viewed[int(np.argmax(cos))]}"
    items = send(recommender, states, "u1", 2, query="garden tools")
    assert all(it.because[0] == "search:garden tools" for it in items)


def test_explanations_off_and_cost(recommender: Recommender) -> None:
    ids = recommender.served.encoder.item_ids
    items = [RecommendedItem(i, 1.0) for i in ids[:10]]
    recent = [("click", i) for i in ids[20:70]]
    assert explain(items, recent, None, recommender.served.unit_vectors_of, names=0) == items
    started = time.perf_counter()
    for _ in range(200):
        explain(items, recent, None, recommender.served.unit_vectors_of)
    assert (time.perf_counter() - started) / 200 < 0.002  # a loose ceiling; `streamrec bench rerank` measures it


def test_diversify_trades_relevance_for_spread(recommender: Recommender) -> None:
    ids = recommender.served.encoder.item_ids
    query = recommender.served.vectors_of([ids[3]])[0]
    ranked = [RecommendedItem(i, s) for i, s in recommender.served.index.search(query, 40)]
    vectors = recommender.served.vectors_of([it.item_id for it in ranked])

    def spread(items: list[RecommendedItem]) -> float:
        v = recommender.served.vectors_of([it.item_id for it in items])
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sim = v @ v.T
        return float(1 - sim[np.triu_indices(len(items), 1)].mean())

    plain = diversify(ranked, vectors, 10, 0.0)
    assert plain == ranked[:10]
    mild, strong = diversify(ranked, vectors, 10, 0.3), diversify(ranked, vectors, 10, 0.8)
    assert spread(plain) <= spread(mild) <= spread(strong) and spread(strong) > spread(plain)
    assert mild[0] == ranked[0] and len({it.item_id for it in strong}) == 10


def test_diversity_report_trades_accuracy_for_spread(artifact_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    from stream.tools.diversity_report import write_diversity_report

    table = write_diversity_report(artifact_dir, data_dir, [0.0, 0.5, 0.9], tmp_path, max_events=300)
    plain, mid, strong = (table[f"diversity={s}"] for s in ("0", "0.5", "0.9"))
    assert plain["events"] == strong["events"] >= 300
    assert plain["intra_list_diversity@10"] <= mid["intra_list_diversity@10"] < strong["intra_list_diversity@10"]
    assert (tmp_path / "diversity.md").read_text().count("\n| ") == 4  # header + 3 strengths
