"""Topics every worker reads whole: the catalog (``items``) and model releases (``models``).

Not through the consumer group: a group would split the partitions between workers, and every worker needs
every record (each holds the whole index). A consumer without a group id reads the topics from the
beginning (both are compacted: that is the latest record per key), tells when it has caught up with the
end offsets it saw at start, and then follows new records; it commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import BrokerError
from stream.kafka.clients import client_options
from stream.kafka.topics import partition_count

log = logging.getLogger(__name__)
FETCH_WAIT_MS = 10  # how long a fetch waits for new records: bounds how late a catalog change or list is applied

RecordsHandler = Callable[[list[ConsumerRecord[bytes, bytes]], bool], Awaitable[None]]


async def follow(settings: Settings, topics: list[str], handle: RecordsHandler,
                 caught_up: Callable[[], Awaitable[None]]) -> None:
    """Read ``topics`` whole, then follow them, calling ``handle(records, live)`` per fetched batch
    (``live`` is False during the initial catch-up) and ``caught_up()`` once. Runs until cancelled."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_WAIT_MS)
    await consumer.start()
    try:
        partitions = []
        for topic in topics:
            count = await partition_count(settings, topic)
            if not count:
                raise BrokerError(f"topic {topic!r} does not exist (run: streamrec topics)")
            partitions += [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        live = False
        while True:
            if not live and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                live = True
                await caught_up()
            try:
                batch = await consumer.getmany(*partitions, timeout_ms=200, max_records=2000)
            except KafkaError as exc:  # the broker went away: aiokafka reconnects; say so and go on
                log.warning("reading %s failed (%s); retrying", ", ".join(topics), exc)
                await asyncio.sleep(1.0)
                continue
            records = [record for tp in partitions for record in batch.get(tp, [])]
            if records:
                await handle(records, live)
    finally:
        await consumer.stop()
