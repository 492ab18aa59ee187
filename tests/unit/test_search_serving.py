"""A search on the data path: the text index joins the model's, the blend orders the union, the list names the
search; a query of symbols only claims no text match. Real MiniLM vectors of real titles, a tiny GRU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import torch

from encoders.artifact import ModelArtifact
from encoders.models.gru import RecurrentConfig, RecurrentModel
from encoders.models.ranker import RankerShape
from encoders.models.search_blend import NumpyBlend, SearchBlend
from encoders.models.session_head import SessionHeadConfig
from encoders.serving import UserEncoder
from encoders.text import DIM, TextEncoder
from index.brute import BruteForceIndex
from stream.core.catalog import Catalog
from stream.core.hybrid import hybrid
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


def _reference_hybrid(served: IndexedModel, blend: NumpyBlend, query: np.ndarray, query_text: np.ndarray,
                      personal: list[tuple[str, float]], state: UserState) -> dict[str, float]:
    """The hybrid retrieval by id, item for item, as the offline evaluation defines it: every candidate's
    blended score."""
    assert served.text_index is not None
    encoder = served.encoder
    by_text = [item for item, _ in served.text_index.search(query_text, blend.pool)]
    mine = dict(sorted(personal, key=lambda pair: -pair[1])[:blend.user_pool])
    ids = list(dict.fromkeys([*by_text, *mine]))
    rows = encoder.rows_of(ids)
    text = np.array([float(served.text_vectors_of([item])[0] @ query_text) for item in ids])
    scores = np.array([mine[item] if item in mine else float(served.vectors_of([item])[0] @ query)
                       for item in ids])
    blended = blend.scores(rows, text, scores, encoder.rows_of([item for _, item in state.recent]))
    return dict(zip(ids, blended.tolist(), strict=True))


def test_the_hybrid_by_row_scores_as_the_hybrid_by_id(tmp_path: Path) -> None:
    """The worker's row-space hybrid (kept text pools, the re-ranker's rows) gives every candidate the score the
    id-by-id definition gives it, with catalog items known only by their text in both pools; a catalog change
    drops the kept pools."""
    torch.manual_seed(5)
    titles = [*TITLES, "Dawn of the Dead (1978). Horror", "Aliens (1986). Action, Horror, Sci-Fi",
              "Clueless (1995). Comedy, Romance", "Die Hard (1988). Action, Crime, Thriller"]
    ids = [f"m{n}" for n in range(1, len(titles) + 1)]
    head = SessionHeadConfig(repeat_window=4, neighbours=3, ranker=RankerShape(hidden=6, candidates=5, rules=2))
    model = RecurrentModel(RecurrentConfig(n_items=len(titles), dim=8, hidden=8, text_dim=DIM, head=head)).eval()
    assert model.text is not None
    model.text.set_item_text(np.vstack([np.zeros((1, DIM), np.float32), TextEncoder().encode(titles)]))
    blend = SearchBlend(pool=5, weights=(3.0, 0.5, 0.7, 0.2, 0.3, -0.4), popularity=tuple(np.linspace(0, 1, 11)),
                        carry_events=0.5, personal_pool=6)
    encoder = UserEncoder(ModelArtifact(model, ids, "v1", "test", {}, tmp_path, blend))
    assert encoder.blend is not None and encoder.rescore_rows(np.zeros(8), [], []) is not None
    served = IndexedModel(encoder, BruteForceIndex(encoder.dim), text_index=BruteForceIndex(DIM))
    catalog = Catalog()
    catalog.apply(ItemRecord("new-1", title="Night of the Living Dead (1990). Horror"))
    catalog.apply(ItemRecord("new-2", title="Sense and Sensibility (1995). Drama, Romance"))
    served.sync([*ids, "new-1", "new-2"], catalog, Filters())
    queries = TextEncoder().encode(["zombie horror", "romantic comedy", "space war"])
    rng = np.random.default_rng(3)
    text_only = 0
    for case in range(12):
        state = UserState(vector=encoder.initial_state(), model_version="v1")
        for n in rng.choice(len(ids), size=int(rng.integers(0, 4)), replace=False).tolist():
            state.remember("click", ids[n], f"e{case}-{n}", 1.0, 10, 10, "clicks:0", n)
        query = rng.standard_normal(8).astype(np.float32)
        query_text = queries[case % 3]
        candidates = served.index.search(query, 9)
        personal = encoder.rescore(query, state.recent, candidates)
        scored = encoder.rescore_rows(query, state.recent, candidates)
        assert scored is not None
        expected = _reference_hybrid(served, encoder.blend, query, query_text, personal, state)
        text_only += "new-1" in expected or "new-2" in expected
        for given in (personal, scored):
            for named in (None, f"q{case % 3}"):  # built now, and kept from an earlier case
                got = dict(hybrid(served, encoder.blend, query, query_text, 1.0, given, state, limit=100,
                                  named=named))
                assert got.keys() == expected.keys()
                assert all(abs(got[item] - score) < 1e-6 for item, score in expected.items()), (got, expected)
                best = hybrid(served, encoder.blend, query, query_text, 1.0, given, state, limit=3, named=named)
                assert np.allclose(sorted(score for _, score in best), sorted(expected.values())[-3:], atol=1e-6)
    assert text_only >= 4  # catalog items known only by their text were candidates
    assert len(served.text_pools) == 3 and served.text_pools.hits > 0
    catalog.apply(ItemRecord("new-2", deleted=True))
    served.sync(["new-2"], catalog, Filters())
    assert len(served.text_pools) == 0  # the text index changed: no pool is kept from before


def test_a_searchs_kept_input_gates_step_the_state_as_computing_them_does(tmp_path: Path) -> None:
    encoder = _recommender(tmp_path).served.encoder
    rng = np.random.default_rng(1)
    text = encoder.encode_text("zombie horror film")
    for _ in range(3):  # the first computes and keeps the gates, the next two read them
        state = rng.standard_normal(encoder.state_size).astype(np.float32)
        kept = encoder.step(state, "search", None, text, query="zombie horror film")
        assert np.array_equal(kept, encoder.step(state, "search", None, text))
    other = encoder.encode_text("romantic comedy")
    assert not np.array_equal(encoder.step(state, "search", None, other, query="romantic comedy"), kept)
