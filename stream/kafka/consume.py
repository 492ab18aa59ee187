"""Read recommendation lists back from Kafka: used by ``streamrec tail``, the demo and the tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.config import Settings
from stream.core.schemas import Recommendation
from stream.errors import BrokerError, ProcessError
from stream.kafka.clients import client_options
from stream.kafka.topics import partition_count


class RecommendationReader:
    """Reads the recommendations topic from its current end (or from the start) without a consumer group."""

    def __init__(self, settings: Settings, from_beginning: bool = False) -> None:
        self.settings = settings
        self.from_beginning = from_beginning
        self._consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                          group_id=None, fetch_max_wait_ms=20)

    async def start(self) -> None:
        """Assign every partition and seek; lists produced after this call are all seen."""
        await self._consumer.start()
        topic = self.settings.topic_recommendations
        count = await partition_count(self.settings, topic)
        if not count:
            raise BrokerError(f"topic {topic!r} does not exist (run: streamrec topics)")
        assigned = [TopicPartition(topic, p) for p in range(count)]
        self._consumer.assign(assigned)
        if self.from_beginning:
            await self._consumer.seek_to_beginning(*assigned)
        else:
            await self._consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve the end offsets now, not lazily at the first fetch
                await self._consumer.position(tp)

    async def stop(self) -> None:
        """Close the consumer."""
        await self._consumer.stop()

    async def records(self, timeout_s: float | None = None) -> AsyncIterator[tuple[Recommendation, float]]:
        """Yield (list, received_at) pairs; stop once ``timeout_s`` seconds passed idle in all (None = never)."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            received = time.time()
            if not batch:
                if timeout_s is not None:
                    timeout_s -= 0.2
                    if timeout_s <= 0:
                        return
                continue
            for messages in batch.values():
                for msg in messages:
                    if msg.value is not None:  # tombstones erase a user; nothing to show
                        yield Recommendation.from_json(msg.value), received


PROBE_USER = "__streamrec_probe__"


async def wait_until_serving(settings: Settings, timeout_s: float = 120.0, user: str = PROBE_USER,
                             alive: Callable[[], bool] | None = None) -> float:
    """Send a probe click each second until a list for it comes back; return the seconds it took.

    A worker is ready only when its consumer group has partitions and its table has recovered; a round
    trip through the real topics is the one check that covers all of that.
    """
    from aiokafka import AIOKafkaProducer

    from stream.core.schemas import Event

    started = time.time()
    reader = RecommendationReader(settings)
    await reader.start()
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    sent: set[str] = set()
    try:
        while time.time() - started < timeout_s:
            if alive is not None and not alive():
                raise ProcessError("the worker exited before it served a probe event (see its log)")
            probe = Event("click", user, time.time(), f"probe-{len(sent)}-{time.time_ns()}", item_id="probe")
            sent.add(probe.event_id)
            await producer.send_and_wait(settings.topic_clicks, probe.to_json(), key=user.encode())
            async for rec, _ in reader.records(timeout_s=1.0):
                if rec.event_id in sent:
                    return time.time() - started
        raise ProcessError(f"no worker answered a probe event within {timeout_s:.0f} s")
    finally:
        await producer.stop()
        await reader.stop()
