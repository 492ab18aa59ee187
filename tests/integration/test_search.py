"""Search as intent, on real MovieLens: the offline search evaluation, and a real worker answering a search."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from encoders.artifact import save_artifact
from encoders.models.search_blend import FILE as BLEND_FILE
from encoders.training.train import train
from stream.config import Settings
from stream.core.schemas import Event
from stream.kafka.consume import RecommendationReader, wait_until_serving
from stream.local.processes import start_worker, stop_worker
from stream.tools.datasets import item_texts, load_events
from stream.tools.search_report import evaluate_search, movie_genres
from tests.artifacts import QUICK
from tests.streaming import click, collect, send


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A small GRU with the item tower, trained for one epoch on MovieLens, with its search blend."""
    result = train(load_events("movielens", data_dir), cell="gru", config=QUICK,
                   progress=False, options={"dim": 32, "hidden": 32}, item_texts=item_texts("movielens", data_dir))
    assert result.search_blend is not None, "a model with an item tower on movielens gets a search blend"
    return save_artifact(result.model, result.item_ids, result.metrics, "movielens",
                         tmp_path_factory.mktemp("text-model"), result.search_blend)


def test_the_hybrid_answers_searches_better_than_the_model_and_than_text_alone(text_model: Path, data_dir: Path,
                                                                             tmp_path: Path) -> None:
    assert (text_model / BLEND_FILE).is_file()
    result = evaluate_search(text_model, data_dir, tmp_path, genre_users=30)
    print("\n" + json.dumps({k: v for k, v in result.items() if k != "run"}, indent=1))
    model, hybrid, text = result["model"], result["hybrid"], result["text_only"]
    assert isinstance(model, dict) and isinstance(hybrid, dict) and isinstance(text, dict)
    assert hybrid["tag_searches"] > 100
    assert hybrid["tag_recall@20"] >= 2 * model["tag_recall@20"]  # the personal signal adds to the text...
    assert hybrid["tag_recall@20"] > text["tag_recall@20"]  # ...and the text to the personal signal
    assert hybrid["genre_precision@10_cold"] >= 0.8
    assert hybrid["genre_precision@10_history"] >= 0.7
    assert model["genre_precision@10_cold"] < hybrid["genre_precision@10_cold"]
    written = json.loads((tmp_path / "search.json").read_text())
    assert set(written) == {"model", "hybrid", "text_only", "popularity", "run"}
    assert {"tag_recall@20", "tag_mrr@20", "genre_precision@10_cold", "genre_precision@10_history",
            "next_click_recall@20"} <= set(written["hybrid"])
    assert "## Search quality" in (tmp_path / "report.md").read_text()


def test_a_worker_answers_a_search_with_items_of_that_kind_and_says_why(settings: Settings, text_model: Path,
                                                                       data_dir: Path) -> None:
    settings = settings.replace(model_path=text_model)
    genres = movie_genres(data_dir)
    user = "searcher-1"
    proc = start_worker(settings, text_model, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=120, alive=lambda: proc.poll() is None))

        async def run() -> dict[str, object]:
            reader = RecommendationReader(settings)
            await reader.start()
            history = [(settings.topic_clicks, user.encode(), click(user, item, f"h-{item}"))
                       for item in ("1", "260", "1196")]  # Toy Story, Star Wars IV and V
            search = Event("search", user, time.time(), "s-horror", query="horror").to_json()
            await send(settings, [*history, (settings.topic_searches, user.encode(), search)])
            got = await collect(reader, {"h-1196", "s-horror"}, timeout_s=30)
            await reader.stop()
            return dict(got)

        got = asyncio.run(run())
    finally:
        stop_worker(proc)
    before, after = got["h-1196"], got["s-horror"]
    horror_after = sum("Horror" in genres[it.item_id] for it in after.items)  # type: ignore[attr-defined]
    horror_before = sum("Horror" in genres[it.item_id] for it in before.items)  # type: ignore[attr-defined]
    print(f"\nhorror items: {horror_before} before the search, {horror_after} after")
    assert horror_after >= 7 and horror_after > horror_before
    assert all(it.because and it.because[0] == "search:horror" for it in after.items)  # type: ignore[attr-defined]
