"""The live catalog, the filters (each one), cold-start blending and the model swap, on the real artifact."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from encoders.artifact import ModelArtifact
from encoders.serving import UserEncoder
from index.brute import BruteForceIndex
from stream.core.indexed_model import IndexedModel
from stream.core.pipeline import Outcome, Recommender, Rules
from stream.core.rerank import Filters, blend, rerank
from stream.core.schemas import ItemRecord, RecommendedItem, Source, decode_item, decode_release
from stream.core.state import UserState
from stream.core.trending import Trending
from stream.errors import InvalidEvent
from tests.recommenders import single_model

NOW = 1_700_000_000.0


class TextEncoder(UserEncoder):
    """The real encoder with a stand-in text path (the seam a model with an item tower fills)."""

    def text_item_vector(self, text: str) -> np.ndarray | None:
        return np.full(self.dim, float(len(text)), dtype=np.float32)


def event(user: str, item: str, n: int, kind: str = "click") -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"schema_version": 1, "user_id": user, "item_id": item, "ts": NOW - 1,
                                        "event_id": f"{user}-{n}"})


def make(artifact: ModelArtifact, rules: Rules, encoder_cls: type[UserEncoder] = UserEncoder) -> Recommender:
    encoder = encoder_cls(artifact)
    index = BruteForceIndex(encoder.dim)
    index.add(encoder.item_ids, encoder.item_vectors())
    return single_model(encoder, index, rules, clock=lambda: NOW, trending=Trending(3600.0))


def items_of(out: Outcome) -> list[str]:
    rec = out.recommendation
    assert rec is not None
    return [i.item_id for i in rec.items]


def test_item_records_decode_and_reject() -> None:
    up = ItemRecord("42", title="Heat (1995)", category="Action", price=3.5, available=False)
    assert decode_item(up.to_json(), b"42") == up
    assert decode_item(None, b"42") == ItemRecord("42", deleted=True)  # a compaction tombstone deletes
    assert decode_item(ItemRecord("42", deleted=True).to_json(), b"42").deleted
    for raw, key, reason in [(up.to_json(), b"41", "key_mismatch"), (b"{", b"42", "malformed_json"),
                             (b'{"schema_version": 1, "item_id": "42", "available": "no"}', b"42", "wrong_type"),
                             (b'{"schema_version": 1, "item_id": "42", "price": -1}', b"42", "invalid_value"),
                             (None, None, "missing_field")]:
        with pytest.raises(InvalidEvent) as info:
            decode_item(raw, key)
        assert info.value.reason == reason
    with pytest.raises(InvalidEvent):
        decode_release(b'{"schema_version": 1, "path": "/x"}')


def test_unavailable_and_deleted_items_leave_every_list(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10))
    states: dict[str, bytes] = {}
    first = items_of(rec.process("click", *reversed(event("u1", rec.served.encoder.item_ids[0], 0)),
                                source=Source("clicks", 0, 0), states=states))
    rec.apply_items([ItemRecord(first[0], available=False), ItemRecord(first[1], deleted=True)])
    second = items_of(rec.process("click", *reversed(event("u1", rec.served.encoder.item_ids[1], 1)),
                                 source=Source("clicks", 0, 1), states=states))
    assert first[0] not in second and first[1] not in second and len(second) == 10
    rec.apply_items([ItemRecord(first[0], available=True)])  # back in stock: back in the index
    assert first[0] in rec.served.index and first[1] not in rec.served.index


def test_category_allow_and_deny(artifact: ModelArtifact) -> None:
    ids = artifact.item_ids
    deny = make(artifact, Rules(filters=Filters(deny=frozenset({"shoes"}))))
    deny.apply_items([ItemRecord(i, category="shoes") for i in ids[:50]])
    assert not any(i in deny.served.index for i in ids[:50]) and ids[60] in deny.served.index
    allow = make(artifact, Rules(filters=Filters(allow=frozenset({"books"}))))
    allow.apply_items([ItemRecord(i, category="books") for i in ids[:20]])
    allow.served.sync(ids, allow.catalog, allow.default.rules.filters)
    assert sorted(i for i in ids if i in allow.served.index) == sorted(ids[:20])  # unknown category: not allowed
    out = items_of(allow.process("click", *reversed(event("u2", ids[30], 0)), source=Source("clicks", 0, 0),
                                states={}))
    assert set(out) <= set(ids[:20])


def test_viewed_last_n_filter(artifact: ModelArtifact) -> None:
    state = UserState(vector=np.zeros(1, np.float32), model_version="m",
                      recent=[("click", "a"), ("click", "b"), ("purchase", "c"), ("click", "d")], purchased=["c"])
    assert Filters().excluded_for(state) == {"c"}
    assert Filters(exclude_viewed_last_n=2).excluded_for(state) == {"c", "d"}
    rec = make(artifact, Rules(filters=Filters(exclude_viewed_last_n=3)))
    states: dict[str, bytes] = {}
    seen = []
    for n in range(3):
        out = items_of(rec.process("click", *reversed(event("u3", rec.served.encoder.item_ids[n * 7], n)),
                                  source=Source("clicks", 0, n), states=states))
        seen.append(rec.served.encoder.item_ids[n * 7])
        assert not set(seen) & set(out)


def test_new_item_gets_a_vector_from_its_text(artifact: ModelArtifact) -> None:
    plain = make(artifact, Rules())
    plain.apply_items([ItemRecord("brand-new", title="A new film")])
    assert "brand-new" not in plain.served.index  # no text path: waits for a model that knows it
    rec = make(artifact, Rules(), TextEncoder)
    rec.apply_items([ItemRecord("brand-new", title="A new film")])
    assert "brand-new" in rec.served.index
    before = rec.served.text_vectors["brand-new"][1].copy()
    rec.apply_items([ItemRecord("brand-new", title="A new film, renamed")])  # a changed title: a new vector
    assert not np.array_equal(rec.served.text_vectors["brand-new"][1], before)
    rec.apply_items([ItemRecord("brand-new", deleted=True)])
    assert "brand-new" not in rec.served.index


def test_cold_start_blends_trending_until_enough_events(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10, cold_start_events=4))
    states: dict[str, bytes] = {}
    hot = artifact.item_ids[100]
    for n in range(30):  # other users make items trend, one most of all
        item = hot if n % 2 else artifact.item_ids[101 + n % 13]
        rec.process("click", *reversed(event(f"crowd{n}", item, 0)), source=Source("clicks", 0, n), states=states)
    out = rec.process("click", *reversed(event("newbie", artifact.item_ids[5], 0)), source=Source("clicks", 0, 99),
                     states=states).recommendation
    assert out is not None and hot in [i.item_id for i in out.items]
    assert sum(i.because == ("trending",) for i in out.items) >= 7  # 1 of 4 events: ~a quarter personal
    for n in range(1, 4):
        out = rec.process("click", *reversed(event("newbie", artifact.item_ids[5 + n], n)),
                         source=Source("clicks", 0, 99 + n), states=states).recommendation
    assert out is not None and not any("trending" in i.because for i in out.items)  # 4 events: fully personal
    search = orjson.dumps({"schema_version": 1, "user_id": "searcher", "query": "space", "ts": NOW - 1})
    first = rec.process("search", search, b"searcher", Source("searches", 0, 0), states).recommendation
    assert first is not None and not any("trending" in i.because for i in first.items)  # a search: the query's


def test_blend_and_rerank_keep_k_distinct_allowed_items() -> None:
    personal = [RecommendedItem(x, 1.0 - n / 10) for n, x in enumerate("abcdef")]
    out = blend(personal, [("a", 9.0), ("x", 5.0), ("y", 4.0), ("z", 3.0)], 5, 0.4, {"y"}, set("abcdefxz"))
    assert [i.item_id for i in out] == ["a", "b", "x", "z", "c"]
    assert [i.item_id for i in rerank([("a", 1.0), ("b", 3.0), ("b", 2.0), ("c", 0.5)], {"c"}, 5, {"a", "b"})] \
        == ["b", "a"]


def test_swap_serves_the_new_model_and_replays_catalog_changes(artifact: ModelArtifact) -> None:
    rec = make(artifact, Rules(top_k=10))
    states: dict[str, bytes] = {}
    ids = artifact.item_ids
    for n in range(3):
        rec.process("click", *reversed(event("u5", ids[n], n)), source=Source("clicks", 0, n), states=states)
    snapshot = rec.catalog.copy()
    new_encoder = UserEncoder(artifact)
    new_encoder.version = "next-model"
    new_index = BruteForceIndex(new_encoder.dim)
    new_index.add(new_encoder.item_ids, new_encoder.item_vectors())
    rec.apply_items([ItemRecord(ids[200], available=False)])  # arrives while the new model builds
    rec.swap(IndexedModel(new_encoder, new_index), snapshot.seq)
    assert ids[200] not in rec.served.index
    out = rec.process("click", *reversed(event("u5", ids[3], 3)), source=Source("clicks", 0, 3), states=states)
    assert out.recommendation is not None and out.recommendation.model_version == "next-model"
    state = UserState.from_bytes(states["u5"])
    assert state.model_version == "next-model" and state.events == 4  # rebuilt from recent events, then stepped


def test_trending_decays_and_survives_a_restart() -> None:
    table: dict[str, bytes] = {}
    clock = iter(range(0, 1000, 2)).__next__
    trending = Trending(half_life_s=3600.0, clock=clock)
    for _ in range(10):
        trending.observe(0, "old", "click", NOW - 4 * 3600, table)
    for _ in range(2):
        trending.observe(1, "new", "purchase", NOW, table)
    assert [i for i, _ in trending.top(2)] == ["new", "old"]  # 10 views 4 half-lives ago < 2 purchases now
    restored = Trending(half_life_s=3600.0)
    restored.observe(0, "x", "click", NOW, table)
    restored.observe(1, "x", "search", NOW, table)  # not counted, but loads partition 1
    restored.observe(1, "y", "click", NOW, table)
    assert restored.top(1)[0][0] == "new"


def test_new_catalog_item_gets_its_vector_from_the_real_item_tower() -> None:
    from pathlib import Path

    from tests.unit.test_item_tower import _model

    encoder = UserEncoder(ModelArtifact(_model(), [f"m{n}" for n in range(1, 7)], "v", "test", {}, Path(".")))
    index = BruteForceIndex(encoder.dim)
    index.add(encoder.item_ids, encoder.item_vectors())
    rec = single_model(encoder, index, Rules())
    rec.apply_items([ItemRecord("new-1", title="Toy Story 5 (2027)", category="Animation")])
    assert "new-1" in rec.served.index and len(rec.served.index) == 7
    expected = encoder.text_item_vector("Toy Story 5 (2027). Animation")  # MiniLM through the item tower
    assert expected is not None and np.allclose(rec.served.vectors_of(["new-1"])[0], expected)
