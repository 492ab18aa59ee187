"""The agent loop (stream/kafka/agents.py) around the data path: a record whose handling raises is dead-lettered with
its bytes and the exception, counted, and the agent goes on. The seam faked here is Faust's stream and
producer (what the agent reads and sends); the handler is the benchmark's real decode-and-forward one."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
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
