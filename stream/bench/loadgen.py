"""Load for ``streamrec bench pipeline``: real events pre-encoded, sent at a fixed rate, outputs timed.

The sender must never be the bottleneck, so each event's JSON is built once up to its ``ts`` (stamped at the
moment of sending, since latency runs from ``ts``) and sends are queued in batches per 2 ms tick, never
awaiting a delivery. The reader times every output (the worker's lists or the baselines' forwarded events)
from the ``ts`` it carries to the moment it is fetched.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from encoders.training.events import DatasetEvent
from stream.core.schemas import SCHEMA_VERSION, EventType
from stream.errors import ConfigError

TICK_S = 0.002  # the sender's pacing step


@dataclass(frozen=True, slots=True)
class Template:
    """One event ready to send but for its event id and ``ts``."""

    type: EventType
    key: bytes
    head: bytes  # the JSON object up to the event id's value


def templates(events: Sequence[DatasetEvent], count: int, users: int, search_share: float,
              seed: int = 42) -> list[Template]:
    """``count`` events in dataset order: clicks and purchases from the dataset's interactions, a share of
    searches from its search events (movielens tags: real queries), both cycled when exhausted.

    Dataset users are numbered in order of appearance and folded onto ``users`` ids; each pass over the data
    shifts the fold, so more users than the dataset has get other users' real histories.
    """
    interactions = [e for e in events if e.type != "search"]
    searches = [e for e in events if e.type == "search"]
    if search_share > 0 and not searches:
        raise ConfigError("dataset", "the dataset has no search events")
    number: dict[str, int] = {}
    for e in events:
        number.setdefault(e.user_id, len(number))
    rng = random.Random(seed)
    out: list[Template] = []
    n_int = n_search = 0
    for _ in range(count):
        if rng.random() < search_share:
            e, cycle = searches[n_search % len(searches)], n_search // len(searches)
            n_search += 1
        else:
            e, cycle = interactions[n_int % len(interactions)], n_int // len(interactions)
            n_int += 1
        user = f"u{(number[e.user_id] + cycle * len(number)) % users}"
        body: dict[str, object] = {"schema_version": SCHEMA_VERSION, "user_id": user}
        if e.item_id is not None:
            body["item_id"] = e.item_id
        if e.query is not None:
            body["query"] = e.query
        head = orjson.dumps(body)[:-1] + b',"event_id":"'
        out.append(Template(e.type, user.encode(), head))
    return out


@dataclass
class SendStats:
    """What one paced send achieved."""

    sent: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Events per second actually queued."""
        return self.sent / self.seconds if self.seconds else 0.0


class PacedSender:
    """Sends templates in order at a fixed rate; event ids are ``<tag>-<n>`` so outputs can be told apart."""

    def __init__(self, producer: AIOKafkaProducer, topics: dict[EventType, str], events: list[Template],
                 tag: str) -> None:
        self.producer = producer
        self.topics = topics
        self.events = events
        self.tag = tag.encode()
        self.total = 0  # events sent over the sender's life

    async def run(self, rate: float, seconds: float) -> SendStats:
        """Send ``rate`` events per second for ``seconds``; catches up within a tick when it falls behind."""
        stats = SendStats()
        started = time.perf_counter()
        end = started + seconds
        send, events, tag, topics = self.producer.send, self.events, self.tag, self.topics
        while (now := time.perf_counter()) < end:
            due = int((now - started) * rate) - stats.sent
            for _ in range(due):
                t = events[self.total % len(events)]
                value = b"".join((t.head, tag, b"-", str(self.total).encode(), b'","ts":',
                                  repr(time.time()).encode(), b"}"))
                await send(topics[t.type], value, key=t.key)  # queues the record; delivery is not awaited
                self.total += 1
                stats.sent += 1
            await asyncio.sleep(TICK_S)
        await self.producer.flush()
        stats.seconds = time.perf_counter() - started
        return stats


@dataclass
class Output:
    """One output record seen by the reader."""

    ts: float  # the input event's ts
    received: float  # when the reader fetched it
    generated: float | None  # the worker's generated_at (None for the baselines)


@dataclass
class OutputReader:
    """Reads an output topic from its end; keeps the timing of every output of this run's events."""

    client: dict[str, Any]  # connection options (stream.kafka.clients.client_options)
    topic: str
    partitions: int
    tag: str
    outputs: list[Output] = field(default_factory=list)
    probes: set[str] = field(default_factory=set)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Seek to the end of every partition and start reading in the background."""
        self._consumer = AIOKafkaConsumer(**self.client, group_id=None,
                                          enable_auto_commit=False, fetch_max_wait_ms=5)
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        """Stop reading and close the consumer."""
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        prefix = self.tag + "-"
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            received = time.time()
            for messages in batch.values():
                for msg in messages:
                    if msg.value is None:
                        continue
                    body = orjson.loads(msg.value)
                    event = body.get("event", body)  # a worker's list, or a baseline's forwarded event
                    event_id = str(event.get("event_id", ""))
                    if event_id.startswith(prefix):
                        self.outputs.append(Output(float(event["ts"]), received, body.get("generated_at")))
                    elif event_id.startswith("probe-"):
                        self.probes.add(event_id)
