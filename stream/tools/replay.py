"""Produce a real dataset's events into the input topics, in time order, at a fixed rate.

Each event is stamped with the wall-clock time it is sent (``ts``), since latency is measured from
``ts``; its dataset time only fixes the order. Every event gets a fresh ``event_id``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from encoders.training.events import DatasetEvent
from stream.config import Settings
from stream.core.schemas import Event
from stream.errors import ConfigError
from stream.kafka.clients import client_options


@dataclass
class ReplayStats:
    """What a replay sent."""

    sent: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    sent_at: dict[str, float] = field(default_factory=dict)  # event_id -> send time (for latency checks)


def to_wire(e: DatasetEvent, ts: float) -> Event:
    """The wire event for a dataset event sent at ``ts``."""
    return Event(e.type, e.user_id, ts, uuid.uuid4().hex, item_id=e.item_id, query=e.query,
                 quantity=e.quantity, price=e.price)


async def replay(settings: Settings, events: Iterable[DatasetEvent], rate: float, limit: int | None = None,
                 on_sent: Callable[[Event], None] | None = None) -> ReplayStats:
    """Send events at ``rate`` per second (0 = as fast as possible), at most ``limit`` of them."""
    if rate < 0:
        raise ConfigError("rate", "must be >= 0")
    topics = settings.input_topics
    stats = ReplayStats()
    producer = AIOKafkaProducer(**client_options(settings), acks="all",
                                enable_idempotence=True, linger_ms=0)
    await producer.start()
    started = time.perf_counter()
    try:
        for n, e in enumerate(events):
            if limit is not None and n >= limit:
                break
            if rate > 0:
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            wire = to_wire(e, time.time())
            await producer.send(topics[e.type], wire.to_json(), key=e.user_id.encode())
            stats.sent += 1
            stats.by_type[e.type] = stats.by_type.get(e.type, 0) + 1
            if on_sent:
                on_sent(wire)
        await producer.flush()
    finally:
        await producer.stop()
    stats.seconds = time.perf_counter() - started
    return stats
