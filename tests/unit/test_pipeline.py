"""The data path as a plain function: real model artifact, exact index, a dict as the state table."""

from __future__ import annotations

import base64

import orjson

from stream.core.pipeline import Recommender
from stream.core.schemas import Source
from stream.core.state import UserState

NOW = 1_700_000_000.0


def click(user: str, item: str, event_id: str, kind: str = "click") -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"schema_version": 1, "user_id": user, "item_id": item,
                                        "ts": NOW - 0.004, "event_id": event_id})


def test_click_updates_state_and_returns_top_k(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    item = recommender.served.encoder.item_ids[0]
    key, raw = click("u1", item, "e1")
    out = recommender.process("click", raw, key, Source("clicks", 0, 1), states)
    assert not out.dead_letter and out.key == b"u1"
    rec = out.recommendation
    assert rec is not None and len(rec.items) == 10
    assert [i.score for i in rec.items] == sorted((i.score for i in rec.items), reverse=True)
    assert (rec.event_id, rec.model_version, rec.generated_at) == ("e1", recommender.served.encoder.version, NOW)
    state = UserState.from_bytes(states["u1"])
    assert state.recent == [("click", item)] and state.events == 1
    assert state.vector.any()
    registry = recommender.metrics.registry  # type: ignore[union-attr]
    labels = {"event_type": "click", "variant": "default"}
    assert registry.get_sample_value("streamrec_worker_recommendations_total", labels) == 1
    assert registry.get_sample_value("streamrec_worker_event_to_recommendation_seconds_count",
                                     labels) == 1


def test_purchased_items_are_never_recommended(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    first = recommender.process("click", *reversed(click("u2", recommender.served.encoder.item_ids[3], "e0")),
                               source=Source("clicks", 0, 0), states=states)
    assert first.recommendation is not None
    bought = [i.item_id for i in first.recommendation.items[:5]]
    for n, item in enumerate(bought, 1):
        key, raw = click("u2", item, f"p{n}")
        out = recommender.process("purchase", raw, key, Source("purchases", 0, n), states)
    assert out.recommendation is not None
    assert not {i.item_id for i in out.recommendation.items} & set(bought)
    assert UserState.from_bytes(states["u2"]).purchased == bought


def test_redelivered_event_does_not_step_twice(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    key, raw = click("u3", recommender.served.encoder.item_ids[1], "same")
    a = recommender.process("click", raw, key, Source("clicks", 0, 5), states)
    before = states["u3"]
    b = recommender.process("click", raw, key, Source("clicks", 0, 5), states)
    assert states["u3"] == before
    assert a.recommendation is not None and b.recommendation is not None
    assert a.recommendation.items == b.recommendation.items


def test_invalid_event_becomes_a_dead_letter_and_leaves_state_alone(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    raw = b'{"schema_version": 1, "user_id": "u4", "ts": "soon"}'
    out = recommender.process("click", raw, b"u4", Source("clicks", 2, 9), states)
    assert out.dead_letter and out.reason == "wrong_type" and not states
    record = orjson.loads(out.value)
    assert base64.b64decode(record["value_b64"]) == raw
    assert record["source"] == {"topic": "clicks", "partition": 2, "offset": 9}
    registry = recommender.metrics.registry  # type: ignore[union-attr]
    assert registry.get_sample_value("streamrec_worker_invalid_events_total",
                                     {"event_type": "click", "reason": "wrong_type"}) == 1
    assert registry.get_sample_value("streamrec_worker_dead_letters_total", {"topic": "clicks"}) == 1


def test_key_must_be_the_user_id(recommender: Recommender) -> None:
    _, raw = click("u5", "x", "e")
    out = recommender.process("click", raw, b"someone-else", Source("clicks", 0, 0), {})
    assert out.dead_letter and out.reason == "key_mismatch"


def test_unknown_item_and_search_still_answer(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    key, raw = click("u6", "never-seen-item", "e1")
    assert recommender.process("click", raw, key, Source("clicks", 0, 0), states).recommendation is not None
    search = orjson.dumps({"schema_version": 1, "user_id": "u6", "query": "shoes", "ts": NOW})
    out = recommender.process("search", search, b"u6", Source("searches", 0, 0), states)
    assert out.recommendation is not None and len(out.recommendation.items) == 10
    assert UserState.from_bytes(states["u6"]).events == 2


def test_state_of_another_model_is_rebuilt_from_history(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    items = recommender.served.encoder.item_ids[:3]
    for n, item in enumerate(items):
        key, raw = click("u7", item, f"e{n}")
        recommender.process("click", raw, key, Source("clicks", 0, n), states)
    expected = UserState.from_bytes(states["u7"]).vector
    stale = UserState.from_bytes(states["u7"])
    stale.model_version = "older-model"
    stale.vector = stale.vector * 0 + 1
    rebuilt = recommender._load_state(stale.to_bytes(), recommender.served.encoder)
    assert rebuilt.model_version == recommender.served.encoder.version
    assert abs(rebuilt.vector - expected).max() < 1e-5


def test_live_hit_rate_counts_items_from_the_last_list(recommender: Recommender) -> None:
    states: dict[str, bytes] = {}
    key, raw = click("u8", recommender.served.encoder.item_ids[0], "e0")
    first = recommender.process("click", raw, key, Source("clicks", 0, 0), states).recommendation
    assert first is not None
    registry = recommender.metrics.registry  # type: ignore[union-attr]
    labels = {"event_type": "click", "k": "10", "variant": "default"}
    assert registry.get_sample_value("streamrec_live_opportunities_total", labels) is None  # no list before
    key, raw = click("u8", first.items[2].item_id, "e1")  # in the list: a hit
    second = recommender.process("click", raw, key, Source("clicks", 0, 1), states).recommendation
    assert second is not None
    miss = next(i for i in recommender.served.encoder.item_ids if i not in {x.item_id for x in second.items})
    key, raw = click("u8", miss, "e2")
    recommender.process("click", raw, key, Source("clicks", 0, 2), states)
    assert registry.get_sample_value("streamrec_live_opportunities_total", labels) == 2
    assert registry.get_sample_value("streamrec_live_hits_total", labels) == 1


def test_erasure_forgets_the_user_and_tombstones_the_list(recommender: Recommender) -> None:
    from stream.core.schemas import Erasure

    states: dict[str, bytes] = {}
    key, raw = click("u9", recommender.served.encoder.item_ids[0], "e0")
    recommender.process("click", raw, key, Source("clicks", 0, 0), states)
    assert "u9" in states
    out = recommender.erase(Erasure("u9", NOW, "x1").to_json(), b"u9", Source("erasures", 0, 0), states)
    assert not out.dead_letter and out.key == b"u9" and out.value is None  # a tombstone
    assert "u9" not in states
    again = recommender.erase(Erasure("u9", NOW, "x2").to_json(), b"u9", Source("erasures", 0, 1), states)
    assert again.value is None  # erasing an unknown user is fine (idempotent)
    bad = recommender.erase(b'{"schema_version": 1}', b"u9", Source("erasures", 0, 2), states)
    assert bad.dead_letter and bad.reason == "missing_field"
    registry = recommender.metrics.registry  # type: ignore[union-attr]
    assert registry.get_sample_value("streamrec_worker_erasures_total") == 2


class CopyingTable(dict[str, bytes]):
    """A table whose reads return equal but new bytes objects, as a RocksDB store does."""

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        value = super().get(key, default)
        return None if value is None else bytes(bytearray(value))


def test_decoded_state_cache_matches_decoding_and_yields_to_a_replaced_value(recommender: Recommender) -> None:
    cached: dict[str, bytes] = {}
    copying = CopyingTable()
    items = recommender.served.encoder.item_ids
    for n in range(6):  # the dict hands back the stored object (cache hits); the copying table never does
        key, raw = click("u9", items[n * 7], f"c{n}")
        a = recommender.process("click", raw, key, Source("clicks", 0, n), cached)
        b = recommender.process("click", raw, key, Source("clicks", 0, n), copying)
        assert a.recommendation is not None and b.recommendation is not None
        assert a.recommendation.items == b.recommendation.items
        assert cached["u9"] == copying["u9"]
    # A value written by someone else (a changelog restore, another worker) replaces the cached state.
    other: dict[str, bytes] = {}
    key, raw = click("u9", items[100], "x")
    recommender.process("click", raw, key, Source("clicks", 0, 0), other)
    cached["u9"] = other["u9"]
    key, raw = click("u9", items[101], "y")
    recommender.process("click", raw, key, Source("clicks", 0, 1), cached)
    state = UserState.from_bytes(cached["u9"])
    assert state.recent == [("click", items[100]), ("click", items[101])] and state.events == 2
