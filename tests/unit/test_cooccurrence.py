"""Learning from the stream, without Kafka: co-views out of the data path, the table rows the co-views agent
keeps and publishes, and the lists a worker votes with."""

from __future__ import annotations

import random
from dataclasses import replace

import orjson
import pytest
from prometheus_client import CollectorRegistry

from encoders.artifact import ModelArtifact
from encoders.models.live_neighbours import LiveConfig, LiveNeighbours, Successors, knn_scale
from encoders.serving import UserEncoder
from index.brute import BruteForceIndex
from stream.core.catalog import Catalog
from stream.core.cooccurrence import (
    CoOccurrence,
    CoView,
    NeighbourList,
    Row,
    co_views,
    decode_co_view,
    decode_neighbour_list,
)
from stream.core.indexed_model import IndexedModel
from stream.core.metrics import Metrics
from stream.core.pipeline import Rules
from stream.core.rerank import Filters
from stream.core.schemas import Source
from stream.errors import InvalidEvent
from tests.recommenders import single_model

NOW = 1_700_000_000.0


def event(user: str, item: str, n: int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"schema_version": 1, "user_id": user, "item_id": item, "ts": NOW - 100 + n,
                                        "event_id": f"{user}-{n}"})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def served_with_learning(artifact: ModelArtifact, config: LiveConfig | None = None) -> IndexedModel:
    artifact.live = config or LiveConfig()
    encoder = UserEncoder(artifact)
    index = BruteForceIndex(encoder.dim)
    index.add(encoder.item_ids, encoder.item_vectors())
    return IndexedModel(encoder, index)


def test_an_item_event_emits_its_transitions_keyed_by_source(artifact: ModelArtifact) -> None:
    served = served_with_learning(artifact)
    recommender = single_model(served, rules=Rules(learning=LiveConfig(history=3)), clock=lambda: NOW)
    states: dict[str, bytes] = {}
    items = served.encoder.item_ids[:5]
    sent: list[CoView] = []
    for n, item in enumerate([*items, items[1]]):
        out = recommender.process("click", *reversed(event("u", item, n)), source=Source("clicks", 0, n),
                                  states=states)
        sent += out.co_views
        assert len(out.co_views) == min(n, 3)  # at most ``history`` per event
    assert [(v.source, v.item, v.weight) for v in sent[-3:]] == [(items[4], items[1], 1.0), (items[3], items[1], 0.5),
                                                                 (items[2], items[1], 1 / 3)]
    again = recommender.process("click", *reversed(event("u", items[1], 5)), source=Source("clicks", 0, 5),
                                states=states)
    assert again.co_views == ()  # a redelivered event teaches nothing twice
    view = sent[0]
    assert decode_co_view(view.to_json(), view.key(), max_bytes=1024) == view
    assert recommender.metrics.registry.get_sample_value("streamrec_worker_co_views_total") == len(sent)
    off = single_model(served, rules=Rules(learning=None), clock=lambda: NOW)
    assert off.process("click", *reversed(event("v", items[0], 0)), source=Source("clicks", 0, 9), states={}) \
        .co_views == ()
    assert off.process("click", *reversed(event("v", items[1], 1)), source=Source("clicks", 0, 10),
                       states=states).co_views == ()


@pytest.mark.parametrize(("raw", "key", "reason"), [
    (b"{", b"a", "malformed_json"),
    (b'{"schema_version": 1, "source": "a", "item": "b", "weight": 0, "ts": 5}', b"a", "invalid_value"),
    (b'{"schema_version": 1, "source": "a", "item": "a", "weight": 1, "ts": 5}', b"a", "invalid_value"),
    (b'{"schema_version": 1, "source": "a", "item": "b", "weight": 1, "ts": 5}', b"b", "key_mismatch"),
    (b'{"schema_version": 1, "item": "b", "weight": 1, "ts": 5}', b"a", "missing_field"),
])
def test_a_bad_co_view_is_refused_with_its_reason(raw: bytes, key: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_co_view(raw, key, max_bytes=1024)
    assert caught.value.reason == reason


def test_the_table_counts_as_the_offline_table_and_skips_redeliveries() -> None:
    config = LiveConfig(neighbours=8)
    counter = CoOccurrence(config, publish_interval_s=1.0, clock=Clock())
    offline = LiveNeighbours(config)
    table: dict[str, bytes] = {}
    rng = random.Random(3)
    for offset in range(2000):
        source, item = rng.sample(range(30), 2)
        ts = NOW + offset * 60.0 + rng.random()
        weight = rng.choice([1.0, 0.5, 1 / 3, 2.0])
        counted, _ = counter.apply(CoView(str(source), str(item), weight, ts), 0, offset, table)
        assert counted
        offline.rows.setdefault(source, Successors()).add(item, weight, ts, config)
        if offset % 7 == 0:  # a redelivery after a crash: the same record again changes nothing
            before = table[str(source)]
            counted, published = counter.apply(CoView(str(source), str(item), weight, ts), 0, offset, table)
            assert not counted and published is None and table[str(source)] == before
    for source, successors in offline.rows.items():
        row = Row.from_bytes(table[str(source)])
        assert len(row.successors.items) <= 8
        assert row.successors.items == [str(i) for i in successors.items]
        assert row.successors.weights == pytest.approx(successors.weights, rel=1e-12)
        again = Row.from_bytes(row.to_bytes())
        assert (again.successors.items, again.successors.weights, again.successors.ts, again.offset) == \
            (row.successors.items, row.successors.weights, row.successors.ts, row.offset)


def test_a_changed_list_is_published_at_most_once_per_interval() -> None:
    clock = Clock()
    counter = CoOccurrence(LiveConfig(), publish_interval_s=1.0, clock=clock)
    table: dict[str, bytes] = {}
    _, first = counter.apply(CoView("a", "b", 1.0, NOW), 0, 0, table)
    assert first is not None and first.neighbours == (("b", 1.0),)
    _, same = counter.apply(CoView("a", "b", 1.0, NOW + 1), 0, 1, table)
    assert same is None and not counter.pending  # the top order did not change: nothing to say
    _, held = counter.apply(CoView("a", "c", 5.0, NOW + 2), 0, 2, table)
    assert held is None and counter.pending == {"a": 0}  # changed, but within the interval
    assert counter.due(table, lambda p: True) == []
    clock.now += 1.0
    (partition, due), = counter.due(table, lambda p: True)
    assert partition == 0 and [item for item, _ in due.neighbours] == ["c", "b"]
    assert sum(w for _, w in due.neighbours) == pytest.approx(1.0)
    assert decode_neighbour_list(due.to_json(), max_bytes=65536) == due
    assert not counter.pending and Row.from_bytes(table["a"]).published_at == clock.now
    _, revoked = counter.apply(CoView("a", "d", 50.0, NOW + 3), 0, 3, table)
    clock.now += 5.0
    assert revoked is None and counter.due(table, lambda p: False) == [] and not counter.pending


def test_a_row_stays_bounded() -> None:
    config = LiveConfig(neighbours=50)
    counter = CoOccurrence(config, publish_interval_s=1.0, clock=Clock())
    table: dict[str, bytes] = {}
    for offset in range(5000):
        counter.apply(CoView("source-item", f"item-{offset % 400:06d}", 1.0, NOW + offset), 0, offset, table)
    assert len(Row.from_bytes(table["source-item"]).successors.items) == 50
    assert len(table["source-item"]) == 30 + 50 * (8 + 2 + 11)  # header, then weight, length and id each


def test_a_worker_votes_with_the_lists_and_ranks_an_item_born_after_training(artifact: ModelArtifact) -> None:
    served = served_with_learning(artifact)
    recommender = single_model(served, rules=Rules(top_k=10), clock=lambda: NOW)
    known = served.encoder.item_ids
    source = known[7]
    new = NeighbourList(source, (("born-later", 0.9), (known[8], 0.1)), NOW, NOW - 0.25)
    assert recommender.apply_neighbours([new]) == 1
    # Listed by the votes, not searched: without successors of its own it has no vector, so no index entry.
    assert "born-later" in served.listable and "born-later" not in served.index
    assert not served.encoder.knows("born-later")
    out = recommender.process("click", *reversed(event("u", source, 0)), source=Source("clicks", 0, 0), states={})
    assert out.recommendation is not None
    assert "born-later" in [it.item_id for it in out.recommendation.items]
    registry = recommender.metrics.registry
    assert registry.get_sample_value("streamrec_worker_live_items_indexed_total") == 1
    assert registry.get_sample_value("streamrec_worker_neighbour_list_age_seconds") == pytest.approx(0.25)
    # The new item's own list gives it a vector: the weighted mean of its successors'.
    recommender.apply_neighbours([NeighbourList("born-later", ((known[3], 0.5), (known[4], 0.5)), NOW, NOW)])
    expected = (served.encoder.item_vectors()[3] + served.encoder.item_vectors()[4]) / 2
    assert served.vectors_of(["born-later"])[0] == pytest.approx(expected, abs=1e-6)
    assert "born-later" in served.index  # found by searches from now on
    # A swapped-in model keeps what the stream taught.
    other = served_with_learning(artifact)
    recommender.swap(other, 0)
    assert "born-later" in other.index and set(other.live_lists.lists) == {source, "born-later"}


def test_the_workers_votes_are_the_offline_votes(artifact: ModelArtifact) -> None:
    config = replace(LiveConfig(), weight=2.0, new_item_offset=-0.5)
    served = served_with_learning(artifact, config)
    encoder = served.encoder
    names = [*encoder.item_ids[:40], "new-a", "new-b"]  # offline the items are numbers: these are their names
    offline = LiveNeighbours(config)
    rng = random.Random(5)
    for n in range(600):
        source, item = rng.sample(range(len(names)), 2)
        offline.observe([source], item, 1, NOW + n)
    for source, successors in offline.rows.items():
        items, weights = successors.normalised()
        served.apply_neighbours(names[source], [(names[i], w) for i, w in zip(items.tolist(), weights.tolist(),
                                                                              strict=True)], Catalog(), Filters(),
                                sum(successors.weights), successors.ts)
    recent = [rng.randrange(len(names)) for _ in range(12)]
    # The list answering the last event counts that event's own transitions, which the table has not yet.
    pending = co_views([("click", names[n]) for n in recent[:-1]], names[recent[-1]], "click", NOW + 700, config)
    offline.observe(recent[:-1], recent[-1], 1, NOW + 700)
    voted = served.live_votes([("click", names[n]) for n in recent], pending)
    assert voted is not None and len(pending) == 3
    expected_items, expected = offline.votes(recent)
    assert encoder.session_head is not None
    scale = knn_scale(encoder.session_head)
    got: dict[str, float] = {}
    for item, value in zip(encoder.ids_of_rows(voted[0]), voted[1].tolist(), strict=True):
        got[item] = got.get(item, 0.0) + value  # a row may come more than once: its votes add up
    want = {names[i]: v * config.weight * scale + (config.new_item_offset * scale if names[i].startswith("new-")
                                                   else 0.0)
            for i, v in zip(expected_items.tolist(), expected.tolist(), strict=True)}
    assert got.keys() == want.keys()
    for item, value in want.items():
        assert got[item] == pytest.approx(value, rel=1e-9)


def test_metrics_of_learning_exist_from_the_start() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    for name in ("streamrec_cooccurrence_updates_total", "streamrec_cooccurrence_lists_published_total",
                 "streamrec_cooccurrence_items", "streamrec_worker_live_items_indexed_total",
                 "streamrec_worker_neighbour_list_age_seconds", "streamrec_worker_co_views_total"):
        assert registry.get_sample_value(name) == 0.0


def test_an_item_first_seen_by_this_worker_is_rankable_from_its_first_event(artifact: ModelArtifact) -> None:
    served = served_with_learning(artifact)
    recommender = single_model(served, rules=Rules(learning=LiveConfig()), clock=lambda: NOW)
    states: dict[str, bytes] = {}
    known = served.encoder.item_ids
    for n, item in enumerate(["first-seen-here", known[5]]):
        recommender.process("click", *reversed(event("u", item, n)), source=Source("clicks", 0, n), states=states)
    assert "first-seen-here" in served.listable  # no list names it yet: its own event made it rankable
    assert served.encoder.is_live(served.encoder.scoring_row("first-seen-here"))
    query = served.encoder.query_vector(served.encoder.initial_state())
    scored = dict(served.encoder.rescore(query, [("click", "first-seen-here"), ("click", known[5])], []))
    assert scored["first-seen-here"] > 0  # the session head's repeat bonus, as for any item
    assert recommender.metrics.registry.get_sample_value("streamrec_worker_live_items_indexed_total") == 1
    other = served_with_learning(artifact)
    recommender.swap(other, 0)
    assert "first-seen-here" in other.listable
    off = served_with_learning(artifact)
    single_model(off, rules=Rules(learning=None), clock=lambda: NOW).process(
        "click", *reversed(event("v", "unseen-elsewhere", 0)), source=Source("clicks", 0, 0), states={})
    assert "unseen-elsewhere" not in off.listable  # learning off: the model as trained


def test_a_batch_counts_as_its_records_one_by_one_and_writes_each_row_once() -> None:
    config = LiveConfig(neighbours=6)
    rng = random.Random(11)
    records = [(CoView(f"s{rng.randrange(5)}", f"t{rng.randrange(12)}", rng.choice([1.0, 0.5, 2.0]), NOW + n), 0, n)
               for n in range(400)]
    one_by_one: dict[str, bytes] = {}
    single = CoOccurrence(config, publish_interval_s=1.0, clock=Clock())
    for view, partition, offset in records:
        single.apply(view, partition, offset, one_by_one)

    class Writes(dict[str, bytes]):
        writes = 0

        def __setitem__(self, key: str, value: bytes) -> None:
            Writes.writes += 1
            super().__setitem__(key, value)

    batched = Writes()
    counter = CoOccurrence(config, publish_interval_s=1.0, clock=Clock())
    counted = sum(counter.apply_batch(records[start:start + 100], batched)[0] for start in range(0, 400, 100))
    again, lists = counter.apply_batch(records[50:150], batched)  # a redelivered stretch changes nothing
    assert counted == 400 and again == 0 and lists == []
    assert Writes.writes == 4 * 5  # five rows, once a batch
    for key, raw in one_by_one.items():
        want, got = Row.from_bytes(raw), Row.from_bytes(batched[key])
        assert (got.successors.items, got.offset) == (want.successors.items, want.offset)
        assert got.successors.weights == pytest.approx(want.successors.weights, rel=1e-12)
