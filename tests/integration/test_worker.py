"""A real worker process on the real broker: lists for many users, dead letters, state after restart."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from encoders.artifact import load_artifact
from encoders.serving import UserEncoder
from index.hnsw import HnswIndex
from stream.config import Settings
from stream.core.schemas import Event, Recommendation, Source
from stream.kafka.consume import RecommendationReader, wait_until_serving
from stream.kafka.loading import rules_for
from stream.local.processes import start_worker, stop_worker
from tests.recommenders import single_model
from tests.streaming import click, collect, send


@pytest.fixture()
def worker(settings: Settings) -> Iterator[None]:
    """A `streamrec worker` child process, serving before the test body starts."""
    assert settings.model_path is not None
    proc = start_worker(settings, settings.model_path, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))
        yield
    finally:
        stop_worker(proc)
        print((settings.home / "worker.log").read_text()[-3000:])


def test_fifty_users_each_get_a_list_within_5_s(settings: Settings, worker: None) -> None:
    items = load_artifact(settings.model_path).item_ids  # type: ignore[arg-type]

    async def run() -> tuple[dict[str, Recommendation], float]:
        reader = RecommendationReader(settings)
        await reader.start()
        records = [(settings.topic_clicks, f"user-{n}".encode(), click(f"user-{n}", items[n], f"ev-{n}"))
                   for n in range(50)]
        started = time.time()
        await send(settings, records)
        got = await collect(reader, {f"ev-{n}" for n in range(50)}, timeout_s=5.0)
        elapsed = time.time() - started
        await reader.stop()
        return got, elapsed

    got, elapsed = asyncio.run(run())
    assert len(got) == 50, f"only {len(got)} of 50 users got a list within 5 s"
    assert elapsed <= 5.5
    assert {rec.user_id for rec in got.values()} == {f"user-{n}" for n in range(50)}
    assert all(len(rec.items) == settings.top_k for rec in got.values())
    assert all(rec.generated_at >= rec.event_ts for rec in got.values())
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'streamrec_worker_event_to_recommendation_seconds_count{event_type="click",variant="default"}' in text
    assert 'streamrec_worker_recommendations_total{event_type="click",variant="default"}' in text
    logged = (settings.home / "worker.log").read_text()  # the worker logs at INFO (the default level)
    assert "Ready" in logged or "ready" in logged.lower()
    assert not [n for n in range(50) if f"user-{n}" in logged], "user ids appear in the worker's INFO log"


def test_malformed_events_go_to_dead_letters_and_nothing_stops(settings: Settings, worker: None) -> None:
    bad = [
        (settings.topic_clicks, b"u-bad", b"{not json"),
        (settings.topic_clicks, b"u-bad", orjson.dumps({"schema_version": 7, "user_id": "u-bad", "ts": 1.0})),
        (settings.topic_searches, b"u-bad", orjson.dumps({"schema_version": 1, "user_id": "u-bad", "ts": 1.0})),
        (settings.topic_purchases, b"u-bad", orjson.dumps({"schema_version": 1, "user_id": "u-bad",
                                                           "ts": "x", "item_id": "1"})),
        (settings.topic_clicks, None, b"\xff\xfe\x00"),
    ]
    good = (settings.topic_clicks, b"u-good", click("u-good", "1", "after-bad"))

    async def run() -> tuple[list[dict[str, object]], dict[str, Recommendation]]:
        reader = RecommendationReader(settings)
        await reader.start()
        await send(settings, [*bad, good])
        got = await collect(reader, {"after-bad"}, timeout_s=10)
        await reader.stop()
        consumer = AIOKafkaConsumer(settings.topic_dead_letters, bootstrap_servers=settings.bootstrap_servers,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        letters: list[dict[str, object]] = []
        deadline = time.time() + 10
        while len(letters) < len(bad) and time.time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                letters.extend(orjson.loads(m.value) for m in msgs)
        await consumer.stop()
        return letters, got

    letters, got = asyncio.run(run())
    assert "after-bad" in got, "a valid event after the bad ones got no list"
    assert sorted(str(d["reason"]) for d in letters) == sorted(
        ["malformed_json", "unsupported_schema_version", "missing_field", "wrong_type", "malformed_json"])
    originals = {base64.b64decode(str(d["value_b64"])) for d in letters}
    assert originals == {value for _, _, value in bad}
    assert all(d["source"]["topic"] in settings.input_topics.values() for d in letters)  # type: ignore[index]
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'streamrec_worker_invalid_events_total{event_type="click",reason="malformed_json"} 2.0' in text


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_state_survives_a_worker_restart(settings: Settings, store: str) -> None:
    """The list after a restart equals the one a single process computes from all events, so the
    state was restored (memory: from the changelog; RocksDB: local files plus the changelog's tail).
    A lost state would give a different list."""
    settings = settings.replace(store=store)
    assert settings.model_path is not None
    artifact = load_artifact(settings.model_path)
    items = artifact.item_ids
    user = "restart-user"
    history = [("click", items[5]), ("purchase", items[8]), ("click", items[13]), ("purchase", items[21])]

    async def one(event_type: str, item: str, event_id: str) -> Recommendation:
        reader = RecommendationReader(settings)
        await reader.start()
        topic = settings.input_topics[event_type]  # type: ignore[index]
        wire = Event(event_type, user, time.time(), event_id, item_id=item).to_json()  # type: ignore[arg-type]
        await send(settings, [(topic, user.encode(), wire)])
        got = await collect(reader, {event_id}, timeout_s=15)
        await reader.stop()
        assert event_id in got, f"no list for {event_id}"
        return got[event_id]

    proc = start_worker(settings, settings.model_path, settings.home / "worker-1.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))
        for n, (kind, item) in enumerate(history):
            asyncio.run(one(kind, item, f"before-{n}"))
    finally:
        stop_worker(proc)
    proc = start_worker(settings, settings.model_path, settings.home / "worker-2.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))
        after = asyncio.run(one("click", items[34], "after-restart"))
    finally:
        stop_worker(proc)

    encoder = UserEncoder(artifact)
    index = HnswIndex(encoder.dim, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                      ef=settings.hnsw_ef, capacity=len(items))
    index.add(encoder.item_ids, encoder.item_vectors())
    reference = single_model(encoder, index, rules_for(settings))
    states: dict[str, bytes] = {}
    for n, (kind, item) in enumerate([*history, ("click", items[34])]):
        wire = Event(kind, user, time.time(), f"ref-{n}", item_id=item).to_json()  # type: ignore[arg-type]
        out = reference.process(kind, wire, user.encode(), Source("ref", 0, n), states)  # type: ignore[arg-type]
    assert out.recommendation is not None
    expected = [i.item_id for i in out.recommendation.items]
    assert [i.item_id for i in after.items] == expected
    assert not {items[8], items[21]} & {i.item_id for i in after.items}


def test_erasure_removes_the_state_and_tombstones_the_list(settings: Settings, worker: None) -> None:
    from stream.core.schemas import Erasure
    from stream.kafka.topics import STATE_TABLE, changelog_topic

    assert settings.model_path is not None
    artifact = load_artifact(settings.model_path)
    items = artifact.item_ids
    user = "erase-me"

    async def last_values(topic: str) -> list[bytes | None]:
        """Every value recorded for the user's key in a topic, oldest first."""
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        values: list[bytes | None] = []
        deadline = time.time() + 5
        while time.time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                values.extend(m.value for m in msgs if m.key == user.encode())
        await consumer.stop()
        return values

    async def run() -> tuple[list[bytes | None], list[bytes | None], Recommendation]:
        reader = RecommendationReader(settings)
        await reader.start()
        await send(settings, [(settings.topic_clicks, user.encode(), click(user, items[3], "before-1")),
                              (settings.topic_clicks, user.encode(), click(user, items[4], "before-2"))])
        assert len(await collect(reader, {"before-2"}, timeout_s=10)) == 1
        await send(settings, [(settings.topic_erasures, user.encode(),
                               Erasure(user, time.time(), "erase-1").to_json())])
        await asyncio.sleep(2)
        listed = await last_values(settings.topic_recommendations)
        changelog = await last_values(changelog_topic(settings, STATE_TABLE))
        await send(settings, [(settings.topic_clicks, user.encode(), click(user, items[7], "after-1"))])
        after = (await collect(reader, {"after-1"}, timeout_s=10))["after-1"]
        await reader.stop()
        return listed, changelog, after

    listed, changelog, after = asyncio.run(run())
    assert listed[-1] is None and any(v is not None for v in listed), "no tombstone after the lists"
    assert changelog[-1] is None, "the state changelog still holds the user"
    encoder = UserEncoder(artifact)
    index = HnswIndex(encoder.dim, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                      ef=settings.hnsw_ef, capacity=len(items))
    index.add(encoder.item_ids, encoder.item_vectors())
    fresh = single_model(encoder, index, rules_for(settings)).process(
        "click", click(user, items[7], "ref"), user.encode(), Source("ref", 0, 0), {})
    assert fresh.recommendation is not None
    assert [i.item_id for i in after.items] == [i.item_id for i in fresh.recommendation.items]  # state started over


def test_impossible_topic_settings_fail_with_a_clear_message(settings: Settings) -> None:
    from stream.errors import BrokerError
    from stream.kafka.topics import ensure_topics

    bad = settings.replace(topic_clicks=settings.topic_clicks + "-rf3", replication_factor=3)
    with pytest.raises(BrokerError, match="replication"):
        asyncio.run(ensure_topics(bad))


def test_the_worker_topics_exist_compacted_before_any_worker_starts(settings: Settings) -> None:
    """The table changelogs are created with the input topics, so a worker never joins its group before they
    show in the metadata (on three brokers that race left a changelog with 0 partitions)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from stream.kafka.clients import client_options
    from stream.kafka.topics import STATE_TABLE, TRENDING_TABLE, changelog_topic, ensure_topics, leader_topic

    found = asyncio.run(ensure_topics(settings))  # the fixture created them already: this only checks
    changelogs = [changelog_topic(settings, table) for table in (STATE_TABLE, TRENDING_TABLE)]
    assert {name: found.get(name) for name in changelogs} == dict.fromkeys(changelogs, settings.partitions)
    assert found.get(leader_topic(settings)) == 1

    async def cleanup_policies() -> dict[str, str]:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)
                                                      for name in changelogs])
        finally:
            await admin.close()
        policies = {}
        for response in responses:
            for _, _, _, name, entries in response.resources:
                policies[name] = next(value for key, value, *_ in entries if key == "cleanup.policy")
        return policies

    assert asyncio.run(cleanup_policies()) == dict.fromkeys(changelogs, "compact")
