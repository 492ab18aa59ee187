"""Helpers for tests that talk to the real broker: produce records, wait for lists."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from stream.config import Settings
from stream.core.schemas import Event, Recommendation
from stream.kafka.consume import RecommendationReader


async def send(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """Produce (topic, key, value) records in order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def collect(reader: RecommendationReader, wanted: set[str], timeout_s: float) -> dict[str, Recommendation]:
    """Lists by event id until every wanted event id has one or the time is up."""
    got: dict[str, Recommendation] = {}
    deadline = time.time() + timeout_s
    while wanted - got.keys() and time.time() < deadline:
        async for rec, _ in reader.records(timeout_s=0.5):
            if rec.event_id in wanted:
                got[rec.event_id] = rec
            if not wanted - got.keys():
                break
    return got


def click(user: str, item: str, event_id: str) -> bytes:
    """A valid click, stamped now."""
    return Event("click", user, time.time(), event_id, item_id=item).to_json()
