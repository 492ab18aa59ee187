"""The co-views agent: counts each item's live successors into the co-occurrence table and publishes the lists
that change to ``item-neighbours``. The counting is stream/core/cooccurrence.py's; this moves the records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import faust

from stream.core.cooccurrence import CoOccurrence, NeighbourList, decode_co_view
from stream.core.metrics import Metrics
from stream.core.schemas import Source, dead_letter
from stream.errors import InvalidEvent
from stream.kafka.agents import AgentFun, Failures
from stream.kafka.state_table import StateTable

EVENT_TYPE = "co-view"  # the label of its invalid records and processing errors


def make_cooccurrence_agent(counter: CoOccurrence, table: StateTable, neighbours_topic: str, dead_letters: str,
                            metrics: Metrics, max_bytes: int) -> AgentFun:
    """The agent body of the co-views topic: a record in, its row updated (changelog record out), and the
    item's list published when it changed; a record that fails to decode is dead-lettered."""
    failures = Failures(metrics)

    async def cooccurrence_agent(stream: faust.StreamT[bytes]) -> None:
        producer = stream.app.producer
        events: AsyncIterator[faust.EventT[bytes]] = stream.events()
        async for event in events:
            message = event.message
            source = Source(message.topic, message.partition, message.offset)
            letter: bytes | None = None
            published: NeighbourList | None = None
            try:
                view = decode_co_view(message.value, message.key, max_bytes=max_bytes)
                counted, published = counter.apply(view, message.partition, message.offset, table)
                (metrics.cooccurrence_updates if counted else metrics.cooccurrence_duplicates).inc()
            except InvalidEvent as error:
                metrics.invalid.labels(event_type=EVENT_TYPE, reason=error.reason).inc()
                metrics.dead_letters.labels(topic=message.topic).inc()
                letter = dead_letter(message.value, message.key, error, source, time.time())
            except Exception as error:  # the record must not be lost (see Failures)
                letter = failures.outcome(EVENT_TYPE, error, message.value, message.key, source).value
            await table.flush(producer, message.partition)
            if letter is not None:
                await producer.send(dead_letters, message.key, letter, None, None, None)
            elif published is not None:
                await publish(producer, neighbours_topic, published, metrics)

    return cooccurrence_agent


async def publish(producer: Any, topic: str, lst: NeighbourList, metrics: Metrics) -> None:
    """Send one neighbour list, keyed by its item (the topic is compacted: the latest list per item)."""
    await producer.send(topic, lst.item_id.encode(), lst.to_json(), None, None, None)
    metrics.neighbour_lists_published.inc()


async def publish_due(counter: CoOccurrence, table: StateTable, producer: Any, topic: str, metrics: Metrics,
                      held: set[int]) -> None:
    """Publish the lists held back by the rate limit whose interval has passed, for the partitions in ``held``
    (each publication is recorded in its row, whose changelog record goes to the row's partition)."""
    for partition, lst in counter.due(table, held.__contains__):
        await table.flush(producer, partition)
        await publish(producer, topic, lst, metrics)
