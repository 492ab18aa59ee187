"""A search on the data path: the text index joins the model's, the blend orders the union, the list names the
search; a query of symbols only claims no text match. Real MiniLM vectors of real titles, a tiny GRU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import torch

from encoders.artifact import ModelArtifact
from encoders.models.gru import RecurrentConfig, RecurrentModel
from encoders.models.search_blend import SearchBlend
from encoders.serving import UserEncoder
from encoders.text import DIM, TextEncoder
from index.brute import BruteForceIndex
from stream.core.catalog import Catalog
from stream.core.indexed_model import IndexedModel
from stream.core.pipeline import Recommender, Rules
from stream.core.rerank import Filters
from stream.core.schemas import ItemRecord, Source
from stream.core.state import UserState
from tests.recommenders import single_model

TITLES = ["Night of the Living Dead (1968). Horror", "Star Wars (1977). Action, Adventure, Sci-Fi",
          "Toy Story (1995). Animation, Children, Comedy", "Notting Hill (1999). Comedy, Romance",
          "Alien (1979). Horror, Sci-Fi", "Heat (1995). Action, Crime, Thriller"]
IDS = [f"m{n}" for n in range(1, len(TITLES) + 1)]


def _recommender(tmp_path: Path, with_text_index: bool = True, carry: float = 0.5) -> Recommender:
    torch.manual_seed(4)
    model = RecurrentModel(RecurrentConfig(n_items=len(TITLES), dim=8, hidden=8, text_dim=DIM)).eval()
    assert model.text is not None
    vectors = TextEncoder().encode(TITLES)
    model.text.set_item_text(np.vstack([np.zeros((1, DIM), np.float32), vectors]))
    blend = SearchBlend(pool=4, weights=(5.0, 0.0, 0.1, 0.0, 0.0, 0.0), popularity=(0.0,) * 7, carry_events=carry,
                        carry_half_life_s=3600.0)
    encoder = UserEncoder(ModelArtifact(model, IDS, "v1", "test", {}, tmp_path, blend))
    assert encoder.blend is not None and encoder.item_text is not None
    served = IndexedModel(encoder, BruteForceIndex(encoder.dim), text_index=BruteForceIndex(DIM) if with_text_index
                          else None)
    served.sync(IDS, Catalog(), Filters())
    return single_model(served, rules=Rules(top_k=3, explanations=2), clock=lambda: 1e9)


def _search(recommender: Recommender, query: str, states: dict[str, bytes] | None = None,
            ts: float = 999_999_999.0) -> list[tuple[str, tuple[str, ...]]]:
    raw = orjson.dumps({"schema_version": 1, "user_id": "u", "query": query, "ts": ts})
    out = recommender.process("search", raw, b"u", Source("searches", 0, int(ts)), {} if states is None else states)
    assert out.recommendation is not None
    return [(it.item_id, it.because) for it in out.recommendation.items]


def _click(recommender: Recommender, item: str, states: dict[str, bytes],
           ts: float) -> list[tuple[str, tuple[str, ...]]]:
    raw = orjson.dumps({"schema_version": 1, "user_id": "u", "item_id": item, "ts": ts, "event_id": f"c{ts}"})
    out = recommender.process("click", raw, b"u", Source("clicks", 0, int(ts)), states)
    assert out.recommendation is not None
    return [(it.item_id, it.because) for it in out.recommendation.items]


def test_a_search_is_answered_from_the_text_index_and_names_the_search(tmp_path: Path) -> None:
    items = _search(_recommender(tmp_path), "zombie horror film")
    assert items[0][0] == "m1" and {i for i, _ in items[:2]} == {"m1", "m5"}  # the two horror titles lead
    assert all(because[0] == "search:zombie horror film" for _, because in items)


def test_a_query_of_symbols_gets_the_personal_list_and_claims_no_text_match(tmp_path: Path) -> None:
    hybrid = _recommender(tmp_path)
    plain = _recommender(tmp_path, with_text_index=False)  # the same model without the text index
    for query in ("🚀🚀", "   "):
        got = _search(hybrid, query)
        assert [i for i, _ in got] == [i for i, _ in _search(plain, query)]
        assert all(because == (f"search:{query}",) for _, because in got)


def test_catalog_items_join_and_leave_the_text_index(tmp_path: Path) -> None:
    recommender = _recommender(tmp_path)
    served = recommender.served
    assert served.text_index is not None and len(served.text_index) == len(TITLES)
    recommender.apply_items([ItemRecord("new-1", title="Dawn of the Dead (1978). Horror")])
    assert "new-1" in served.text_index and "new-1" in served.index
    assert _search(recommender, "zombie horror film")[0][0] in {"m1", "new-1"}
    recommender.apply_items([ItemRecord("m1", available=False), ItemRecord("new-1", deleted=True)])
    assert "m1" not in served.text_index and "new-1" not in served.text_index
    assert "m1" not in {i for i, _ in _search(recommender, "zombie horror film")}


def test_the_search_carries_into_the_next_lists_and_then_fades(tmp_path: Path) -> None:
    recommender = _recommender(tmp_path)
    states: dict[str, bytes] = {}
    _search(recommender, "zombie horror film", states, ts=999_999_000.0)
    state = UserState.from_bytes(states["u"])
    assert state.intent and state.intent_events == 0
    after_one = _click(recommender, "m3", states, ts=999_999_010.0)  # weight 0.5: still named, still shaping
    assert all(because[0] == "search:zombie horror film" for _, because in after_one)
    assert "m1" in {i for i, _ in after_one}
    for n in range(2, 6):  # 0.5 ** n: below MIN_INTENT after five events
        listed = _click(recommender, "m6", states, ts=999_999_010.0 + n)
    assert not any(because and because[0].startswith("search:") for _, because in listed)
    assert not UserState.from_bytes(states["u"]).intent  # forgotten: the state holds no stale hash


def test_a_worker_that_never_saw_the_search_drops_its_intent(tmp_path: Path) -> None:
    states: dict[str, bytes] = {}
    _search(_recommender(tmp_path), "zombie horror film", states, ts=999_999_000.0)
    restarted = _recommender(tmp_path)  # another worker: the state has the hash, not the query
    listed = _click(restarted, "m3", states, ts=999_999_010.0)
    assert not any(because and because[0].startswith("search:") for _, because in listed)
    assert not UserState.from_bytes(states["u"]).intent


def test_a_blend_that_does_not_carry_keeps_no_intent_in_the_state(tmp_path: Path) -> None:
    states: dict[str, bytes] = {}
    recommender = _recommender(tmp_path, carry=0.0)
    answered = _search(recommender, "zombie horror film", states, ts=999_999_000.0)
    assert all(because[0] == "search:zombie horror film" for _, because in answered)  # the search itself: shaped
    assert not UserState.from_bytes(states["u"]).intent
    listed = _click(recommender, "m3", states, ts=999_999_010.0)
    assert not any(because and because[0].startswith("search:") for _, because in listed)
