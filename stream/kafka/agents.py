"""Thin Faust agents: move records between Kafka and the data path, nothing else."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, MutableMapping, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol, cast

import faust

from stream.core.metrics import Metrics
from stream.core.pipeline import Outcome, Recommender
from stream.core.schemas import Event, EventType, Source, dead_letter
from stream.errors import InvalidEvent
from stream.kafka.state_table import StateTable

AgentFun = Callable[[faust.StreamT[bytes]], Coroutine[Any, Any, None]]
PROCESSING_ERROR = "processing_error"  # the dead letter's reason when handling a record raised
log = logging.getLogger(__name__)


class Handler(Protocol):
    """What an input agent calls per record: the data path (:class:`Recommender`), or the benchmark's bare
    decode-and-forward handler, so both run through the very same agent loop."""

    def validate(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source) -> Event | Outcome:
        """The decoded event, or the outcome that already answers the record."""

    def pending_text(self, event: Event) -> Callable[[], object] | None:
        """Slow work ``recommend`` would do for this event that may run in a thread beforehand (or None)."""

    def pending_texts(self, events: list[Event]) -> Callable[[], int] | None:
        """The same for a batch of events, as one call that returns how many texts it encoded (or None)."""

    def recommend(self, event: Event, source: Source, states: MutableMapping[str, bytes],
                  trending: MutableMapping[str, bytes] | None = None) -> Outcome:
        """Answer a decoded event."""


def make_agent(event_type: EventType, recommender: Handler, states: MutableMapping[str, bytes],
               recommendations: faust.TopicT, dead_letters: faust.TopicT, metrics: Metrics,
               processed: dict[tuple[str, int], int],
               trending: MutableMapping[str, bytes] | None = None, co_views: str | None = None,
               batch: tuple[int, float] | None = None, text_thread: Executor | None = None) -> AgentFun:
    """An agent body for one input topic: raw bytes in, recommendation or dead letter out (and the item event's
    co-views to the ``co_views`` topic, with learning on).

    ``processed`` records the last offset handled per (topic, partition), for the lag gauge; ``trending``
    is the table of trending counts. ``batch`` (most events, seconds to wait for them): take the records in
    micro-batches, so the new search queries of a batch are encoded in one forward; None: one by one. New
    queries are encoded on ``text_thread`` (the worker's one text-model thread; None: asyncio's default).
    """

    produce_stage = metrics.stage.labels(stage="produce")
    failures = Failures(metrics)

    def produced(started: float) -> Callable[[Any], None]:
        return lambda _: produce_stage.observe(time.perf_counter() - started)

    async def agent(stream: faust.StreamT[bytes]) -> None:
        # Lists go straight to the app's producer (Faust's public ProducerT.send: into aiokafka's batch
        # accumulator, partitioned by key like any topic send), not through Topic.send_soon's future-message
        # buffer, which cost ~40 us more an event. At-least-once holds the same way: before Faust commits an
        # offset it flushes this producer, so a list is never lost behind a commit; the agent does not wait
        # for the broker's ack per event (the produce stage times enqueue to ack).
        producer = stream.app.producer
        names = {False: recommendations.get_topic_name(), True: dead_letters.get_topic_name()}
        loop = asyncio.get_running_loop()

        async def send(message: Any, outcome: Outcome) -> None:
            if isinstance(states, StateTable):  # the state written (even by a handler that raised after it)
                await states.flush(producer, message.partition)
            if co_views is not None:  # enqueued before the offset can be committed, like the list
                for view in outcome.co_views:
                    await producer.send(co_views, view.key(), view.to_json(), None, None, None)
            started = time.perf_counter()
            ack = await producer.send(names[outcome.dead_letter], outcome.key, outcome.value, None, None, None)
            asyncio.ensure_future(ack).add_done_callback(produced(started))
            processed[(message.topic, message.partition)] = message.offset

        async def encode(slow: Callable[[], object]) -> None:
            # New queries cost milliseconds of CPU (MiniLM): in a thread (numpy and torch release the GIL), so the
            # other agents' events are not held up behind them.
            encoded = await loop.run_in_executor(text_thread, slow)
            metrics.text_batch.observe(encoded if isinstance(encoded, int) else 1)

        if batch is None:
            events: AsyncIterator[faust.EventT[bytes]] = stream.events()
            async for event in events:
                message = event.message
                source = Source(message.topic, message.partition, message.offset)
                try:
                    decoded = recommender.validate(event_type, message.value, message.key, source)
                    if isinstance(decoded, Outcome):
                        outcome = decoded
                    else:
                        slow = recommender.pending_text(decoded)
                        if slow is not None:
                            await encode(slow)
                        outcome = recommender.recommend(decoded, source, states, trending)
                except Exception as error:  # anything: the record must not be lost (see Failures)
                    outcome = failures.outcome(event_type, error, message.value, message.key, source)
                await send(message, outcome)
            return
        # Micro-batches: Faust acks a batch's records after this loop's body has handed all of their lists and
        # state records to the producer (at-least-once, as above); each record is still answered on its own.
        # take_events is on Faust's Stream, not on the StreamT protocol it types agents with.
        batches: AsyncIterator[Sequence[faust.EventT[bytes]]] = cast(Any, stream).take_events(*batch)
        async for taken in batches:
            metrics.input_batch.labels(event_type=event_type).observe(len(taken))
            answers: list[tuple[Any, Source, Event | Outcome]] = []
            for event in taken:
                message = event.message
                source = Source(message.topic, message.partition, message.offset)
                try:
                    answers.append((message, source, recommender.validate(event_type, message.value, message.key,
                                                                          source)))
                except Exception as error:
                    answers.append((message, source, failures.outcome(event_type, error, message.value,
                                                                      message.key, source)))
            valid = [decoded for _, _, decoded in answers if not isinstance(decoded, Outcome)]
            try:
                slow = recommender.pending_texts(valid) if valid else None
                if slow is not None:
                    await encode(slow)
            except Exception as error:  # each search then encodes its own query, or fails on its own
                log.warning("encoding a batch of %d search queries failed: %s", len(valid), error)
            for message, source, decoded in answers:
                if isinstance(decoded, Outcome):
                    outcome = decoded
                else:
                    try:
                        outcome = recommender.recommend(decoded, source, states, trending)
                    except Exception as error:
                        outcome = failures.outcome(event_type, error, message.value, message.key, source)
                await send(message, outcome)

    agent.__name__ = f"{event_type}_agent"
    agent.__qualname__ = agent.__name__
    return agent


class Failures:
    """Turns a record whose processing raised into a dead letter: a bug, or a dependency that broke (a table
    whose changelog vanished from the metadata, say). Faust acks the event an agent crashed on and restarts
    the agent, so without this the record would be skipped silently; instead it is counted and dead-lettered
    with its original bytes and the exception, and the agent goes on. The log gets the first traceback of
    each exception type, then one line a minute with the count, so a failure that hits every event does
    not flood it."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic,
                 log_every_s: float = 60.0) -> None:
        self.metrics = metrics
        self.clock = clock
        self.log_every_s = log_every_s
        self._logged: dict[str, tuple[float, int]] = {}  # exception type -> (last logged, failures since)

    def outcome(self, event_type: str, error: Exception, raw: bytes | None, key: bytes | None,
                source: Source) -> Outcome:
        """Count, maybe log, and return the dead letter for this record."""
        name = type(error).__name__
        now = self.clock()
        last, since = self._logged.get(name, (-math.inf, 0))
        if now - last >= self.log_every_s:
            log.error("processing %s record %s-%d@%d raised %s (%d more since the last report); dead-lettered",
                      event_type, source.topic, source.partition, source.offset, name, since,
                      exc_info=error if last == -math.inf else None)
            self._logged[name] = (now, 0)
        else:
            self._logged[name] = (last, since + 1)
        self.metrics.processing_errors.labels(event_type=event_type).inc()
        self.metrics.dead_letters.labels(topic=source.topic).inc()
        letter = dead_letter(raw, key, InvalidEvent(PROCESSING_ERROR, f"{name}: {error}"[:1000]), source,
                             time.time())
        return Outcome(key, letter, True, reason=PROCESSING_ERROR)


def make_erasure_agent(recommender: Recommender, states: MutableMapping[str, bytes], recommendations: faust.TopicT,
                       dead_letters: faust.TopicT) -> AgentFun:
    """The agent of the erasures topic: forget the user, tombstone the user's list."""

    failures = Failures(recommender.metrics)

    async def erasure_agent(stream: faust.StreamT[bytes]) -> None:
        events: AsyncIterator[faust.EventT[bytes]] = stream.events()
        async for event in events:
            message = event.message
            source = Source(message.topic, message.partition, message.offset)
            try:
                outcome = recommender.erase(message.value, message.key, source, states)
            except Exception as error:
                outcome = failures.outcome("erase", error, message.value, message.key, source)
            if isinstance(states, StateTable):  # the state's tombstone
                await states.flush(stream.app.producer, message.partition)
            target = dead_letters if outcome.dead_letter else recommendations
            await target.send(key=outcome.key, value=outcome.value)

    return erasure_agent
