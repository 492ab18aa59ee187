"""The agent loop (stream/kafka/agents.py) around the data path: a record whose handling raises is dead-lettered with
its bytes and the exception, counted, and the agent goes on. The seam faked here is Faust's stream and
producer (what the agent reads and sends); the handler is the benchmark's real decode-and-forward one."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream.bench.bare import Forward
from stream.core.metrics import Metrics
from stream.core.pipeline import Outcome
from stream.core.schemas import Event, EventType, Source
from stream.kafka.agents import PROCESSING_ERROR, Failures, make_agent


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class _Event:
    message: _Message


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _App:
    def __init__(self) -> None:
        self.producer = _Producer()


class _Stream:
    def __init__(self, messages: list[_Message]) -> None:
        self.app = _App()
        self._messages = messages

    async def events(self) -> AsyncIterator[_Event]:
        for message in self._messages:
            yield _Event(message)


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _Breaks(Forward):
    """Forwards every record but one, on which it raises as a bug would."""

    def validate(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source) -> Event | Outcome:
        if source.offset == 1:
            raise KeyError("trending")
        return super().validate(event_type, raw, key, source)


def test_a_record_whose_handling_raises_is_dead_lettered_and_the_agent_goes_on() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    processed: dict[tuple[str, int], int] = {}
    agent = make_agent("click", _Breaks(), {}, cast(faust.TopicT, _Topic("recommendations")),
                       cast(faust.TopicT, _Topic("dead-letters")), metrics, processed)
    values = [orjson.dumps({"n": n}) for n in range(3)]
    stream = _Stream([_Message("clicks", 0, n, b"u1", value) for n, value in enumerate(values)])
    asyncio.run(agent(cast(faust.StreamT[bytes], stream)))

    sent = stream.app.producer.sent
    assert [topic for topic, _, _ in sent] == ["recommendations", "dead-letters", "recommendations"]
    assert (sent[0][2], sent[2][2]) == (values[0], values[2])  # the records around it went on
    letter = orjson.loads(sent[1][2] or b"")
    assert letter["reason"] == PROCESSING_ERROR
    assert letter["detail"] == "KeyError: 'trending'"
    assert letter["source"] == {"topic": "clicks", "partition": 0, "offset": 1}
    assert base64.b64decode(letter["value_b64"]) == values[1] and base64.b64decode(letter["key_b64"]) == b"u1"
    assert registry.get_sample_value("streamrec_worker_processing_errors_total", {"event_type": "click"}) == 1
    assert registry.get_sample_value("streamrec_worker_dead_letters_total", {"topic": "clicks"}) == 1
    assert processed == {("clicks", 0): 2}


def test_a_failure_on_every_event_logs_one_traceback_then_a_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    registry = CollectorRegistry()
    failures = Failures(Metrics(registry), clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="stream.kafka.agents"):
        for n, t in enumerate([0.0, 1.0, 30.0, 61.0, 62.0]):
            now[0] = t
            outcome = failures.outcome("click", ValueError("bad"), b"{}", b"u", Source("clicks", 0, n))
            assert outcome.dead_letter and outcome.reason == PROCESSING_ERROR
    logged = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert logged == [("processing click record clicks-0@0 raised ValueError (0 more since the last report); "
                       "dead-lettered", True),
                      ("processing click record clicks-0@3 raised ValueError (2 more since the last report); "
                       "dead-lettered", False)]
    assert registry.get_sample_value("streamrec_worker_processing_errors_total", {"event_type": "click"}) == 5


class _Batches(_Stream):
    """Faust's stream as a batching agent reads it: lists of events (``take_events``)."""

    def __init__(self, batches: list[list[_Message]]) -> None:
        super().__init__([m for b in batches for m in b])
        self.batches = batches
        self.taken: list[tuple[int, float]] = []

    async def take_events(self, max_: int, within: float) -> AsyncIterator[list[_Event]]:
        self.taken.append((max_, within))
        for batch in self.batches:
            yield [_Event(m) for m in batch]


class _Encodes(Forward):
    """Decodes every record but one (on which it raises, as a bug would) into a search, 'encodes' each batch's
    queries in one call (what Recommender.pending_texts returns) and answers each search with its own list."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def validate(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source) -> Event | Outcome:
        if source.offset == 1:
            raise KeyError("trending")
        return Event("search", (key or b"").decode(), 1.0, f"e{source.partition}-{source.offset}",
                     query=orjson.loads(raw or b"{}")["q"])

    def pending_texts(self, events: list[Event]) -> Callable[[], int] | None:
        def encode() -> int:
            self.calls.append([e.query or "" for e in events])
            return len(events)
        return encode

    def recommend(self, event: Event, source: Source, states: Any, trending: Any = None) -> Outcome:
        return Outcome(event.user_id.encode(), f"list for {event.event_id}".encode(), False)


def test_a_batch_is_encoded_once_and_each_record_still_answered_on_its_own() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    processed: dict[tuple[str, int], int] = {}
    handler = _Encodes()
    agent = make_agent("search", handler, {}, cast(faust.TopicT, _Topic("recommendations")),
                       cast(faust.TopicT, _Topic("dead-letters")), metrics, processed, batch=(32, 0.002))
    values = [orjson.dumps({"q": f"query {n}"}) for n in range(5)]
    stream = _Batches([[_Message("searches", 0, n, b"u1", values[n]) for n in range(3)],
                       [_Message("searches", 1, n, b"u2", values[n]) for n in range(3, 5)]])
    asyncio.run(agent(cast(faust.StreamT[bytes], stream)))

    assert stream.taken == [(32, 0.002)]
    # One call per batch, with its valid searches; offset 1 raised in validation and was dead-lettered.
    assert handler.calls == [["query 0", "query 2"], ["query 3", "query 4"]]
    sent = stream.app.producer.sent
    assert [topic for topic, _, _ in sent] == ["recommendations", "dead-letters", "recommendations",
                                               "recommendations", "recommendations"]
    assert [value for topic, _, value in sent if topic == "recommendations"] == [
        b"list for e0-0", b"list for e0-2", b"list for e1-3", b"list for e1-4"]  # in order, each its own
    assert processed == {("searches", 0): 2, ("searches", 1): 4}
    assert registry.get_sample_value("streamrec_worker_input_batch_events_count", {"event_type": "search"}) == 2
    assert registry.get_sample_value("streamrec_worker_text_batch_queries_sum") == 4
