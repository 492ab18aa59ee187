"""Learning from the stream on the real broker and a real worker: co-views re-keyed by item, the co-occurrence
table, the item-neighbours topic, and an item the model never saw recommended to another user within seconds."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
from aiokafka import AIOKafkaProducer

from encoders.artifact import load_artifact
from stream.config import Settings
from stream.core.cooccurrence import decode_neighbour_list
from stream.core.schemas import Event
from stream.kafka.consume import RecommendationReader, wait_until_serving
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import read_topic
from tests.streaming import click, collect, metric, send, wait_for_metric

NEW_ITEM = "born-after-training"


def test_an_item_born_after_training_reaches_another_users_list_within_seconds(settings: Settings) -> None:
    settings = settings.replace(learning="on")  # the fixture's reference tests turn it off
    assert settings.model_path is not None
    known = load_artifact(settings.model_path).item_ids
    source = known[11]
    proc = start_worker(settings, settings.model_path, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))

        async def run() -> tuple[float, list[str], list[str]]:
            reader = RecommendationReader(settings)
            await reader.start()
            # A second user who was at the source item before anyone saw the new one: a list without it.
            await send(settings, [(settings.topic_clicks, b"other", click("other", source, "before"))])
            before = (await collect(reader, {"before"}, timeout_s=20))["before"]
            # Three shoppers go from the source item to the new one: what the stream teaches.
            born_at = time.time()
            await send(settings, [(settings.topic_clicks, f"early-{n}".encode(), click(f"early-{n}", item,
                                                                                      f"early-{n}-{m}"))
                                  for n in range(3) for m, item in enumerate([source, NEW_ITEM])])
            # The second user clicks the source item again every 100 ms, until a list names the new item.
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
            await producer.start()
            after: list[str] = []
            seen_at = float("inf")
            try:
                n = 0
                while time.time() - born_at < 15 and not after:
                    event = Event("click", "other", time.time(), f"probe-{n}", item_id=source)
                    await producer.send_and_wait(settings.topic_clicks, event.to_json(), key=b"other")
                    n += 1
                    async for rec, _ in reader.records(timeout_s=0.1):
                        if rec.user_id == "other" and NEW_ITEM in {i.item_id for i in rec.items}:
                            after, seen_at = [i.item_id for i in rec.items], time.time()
                            break
            finally:
                await producer.stop()
                await reader.stop()
            return seen_at - born_at, [i.item_id for i in before.items], after

        seconds, before, after = asyncio.run(run())
        print(f"\nan item born after training in another user's list {seconds:.2f} s after its first event")
        assert NEW_ITEM not in before
        assert NEW_ITEM in after and seconds < 5.0
        lists = [decode_neighbour_list(value, max_bytes=65536)
                 for *_, value in asyncio.run(read_topic(settings, settings.topic_item_neighbours))]
        assert any(lst.item_id == source and lst.neighbours[0][0] == NEW_ITEM for lst in lists)
        port = settings.metrics_port
        assert metric(port, "streamrec_worker_co_views_total") >= 3
        assert metric(port, "streamrec_cooccurrence_updates_total") >= 3
        assert metric(port, "streamrec_cooccurrence_lists_published_total") >= 1
        assert metric(port, "streamrec_worker_neighbour_lists_applied_total") >= 1
        assert metric(port, "streamrec_worker_live_items_indexed_total") >= 1
        assert 0 <= metric(port, "streamrec_worker_neighbour_list_age_seconds") < 5

        # A co-views record that does not decode is counted and dead-lettered with its bytes; the agent goes on.
        garbage = b'{"schema_version": 1, "source": "x", "item": "x", "weight": 1, "ts": 5}'
        asyncio.run(send(settings, [(settings.topic_co_views, b"x", garbage)]))
        wait_for_metric(port, ["streamrec_worker_dead_letters_total"], 1, timeout_s=30)
        letters = [orjson.loads(value) for *_, value in asyncio.run(read_topic(settings, settings.topic_dead_letters))
                   if value is not None]
        letter = next(body for body in letters if body["source"]["topic"] == settings.topic_co_views)
        assert letter["reason"] == "invalid_value" and base64.b64decode(letter["value_b64"]) == garbage
        counted = metric(port, "streamrec_cooccurrence_updates_total")
        asyncio.run(send(settings, [(settings.topic_clicks, b"early-0", click("early-0", known[12], "after-dlq"))]))
        wait_for_metric(port, ["streamrec_cooccurrence_updates_total"], counted + 2, timeout_s=30)
    finally:
        stop_worker(proc)
