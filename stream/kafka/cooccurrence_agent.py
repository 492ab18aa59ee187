"""The co-views agent: counts each item's live successors into the co-occurrence table and publishes the lists
that change to ``item-neighbours``. The counting is stream/core/cooccurrence.py's; this moves the records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust

from stream.core.cooccurrence import CoOccurrence, CoView, NeighbourList, decode_co_view
from stream.core.metrics import Metrics
from stream.core.schemas import Source, dead_letter
from stream.errors import InvalidEvent
from stream.kafka.agents import AgentFun, Failures
from stream.kafka.state_table import StateTable

EVENT_TYPE = "co-view"  # the label of its invalid records and processing errors


BATCH_MAX, BATCH_WITHIN_S = 256, 0.02  # co-views taken at once: a hot item's row is written once a batch


def make_cooccurrence_agent(counter: CoOccurrence, table: StateTable, neighbours_topic: str, dead_letters: str,
                            metrics: Metrics, max_bytes: int) -> AgentFun:
    """The agent body of the co-views topic: records in micro-batches, each row they touch updated once (one
    changelog record), and the lists that changed published; a record that fails to decode is dead-lettered.
    Faust acks a batch after its changelog records and lists are handed to the producer."""
    failures = Failures(metrics)

    async def cooccurrence_agent(stream: faust.StreamT[bytes]) -> None:
        producer = stream.app.producer
        # take_events is on Faust's Stream, not on the StreamT protocol it types agents with.
        batches: AsyncIterator[Sequence[faust.EventT[bytes]]] = cast(Any, stream).take_events(BATCH_MAX,
                                                                                             BATCH_WITHIN_S)
        async for taken in batches:
            views: dict[int, list[tuple[CoView, int, int]]] = {}  # by partition: a changelog flush each
            originals: dict[int, list[Any]] = {}  # their messages, for a dead letter with the original bytes
            for event in taken:
                message = event.message
                try:
                    view = decode_co_view(message.value, message.key, max_bytes=max_bytes)
                except InvalidEvent as error:
                    metrics.invalid.labels(event_type=EVENT_TYPE, reason=error.reason).inc()
                    metrics.dead_letters.labels(topic=message.topic).inc()
                    source = Source(message.topic, message.partition, message.offset)
                    await producer.send(dead_letters, message.key,
                                        dead_letter(message.value, message.key, error, source, time.time()),
                                        None, None, None)
                    continue
                views.setdefault(message.partition, []).append((view, message.partition, message.offset))
                originals.setdefault(message.partition, []).append(message)
            for partition, records in views.items():
                try:
                    counted, lists = counter.apply_batch(records, table)
                except Exception as error:  # the records must not be lost (see Failures)
                    for message in originals[partition]:
                        source = Source(message.topic, message.partition, message.offset)
                        letter = failures.outcome(EVENT_TYPE, error, message.value, message.key, source).value
                        await producer.send(dead_letters, message.key, letter, None, None, None)
                    continue
                metrics.cooccurrence_updates.inc(counted)
                if counted < len(records):
                    metrics.cooccurrence_duplicates.inc(len(records) - counted)
                await table.flush(producer, partition)
                for lst in lists:
                    await publish(producer, neighbours_topic, lst, metrics)

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
