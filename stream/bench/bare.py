"""The benchmark's baselines: the cheapest consume -> produce a Faust agent or a plain aiokafka loop can do.

``python -m stream.bench.bare faust|aiokafka`` runs one as a child process configured by ``STREAMREC_*``
variables, like the worker. Both read the input topics, decode each record's JSON (the least any consumer does)
and forward the original bytes to the recommendations topic. The Faust baseline goes through the worker's own
agent loop (``stream.kafka.agents.make_agent``) and app options, so the only difference left is the data path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, MutableMapping

import orjson

from stream.config import Settings, load_settings
from stream.core.pipeline import Outcome
from stream.core.schemas import Event, EventType, Source


class Forward:
    """A handler that decodes the JSON and forwards the record unchanged (the agent loop's floor)."""

    def validate(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source) -> Event | Outcome:
        """Decode, then forward the original bytes under the same key."""
        orjson.loads(raw or b"null")
        return Outcome(key, raw, False)

    def pending_text(self, event: Event) -> Callable[[], object] | None:
        """Nothing to encode: the bare agent has no model."""
        return None

    def pending_texts(self, events: list[Event]) -> Callable[[], int] | None:
        """Nothing to encode: the bare agent has no model."""
        return None

    def recommend(self, event: Event, source: Source, states: MutableMapping[str, bytes],
                  trending: MutableMapping[str, bytes] | None = None) -> Outcome:
        """Never reached: :meth:`validate` answers every record."""
        raise AssertionError("the bare handler answers in validate")


def run_faust(settings: Settings) -> None:
    """A Faust app with one forwarding agent per input topic, with the worker's app options."""
    import faust
    from prometheus_client import CollectorRegistry

    from stream.core.metrics import Metrics
    from stream.kafka.agents import make_agent
    from stream.kafka.faust_options import freeze_heap, new_app

    app = new_app(settings)

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    out, dead = raw_topic(settings.topic_recommendations), raw_topic(settings.topic_dead_letters)
    processed: dict[tuple[str, int], int] = {}
    for event_type, name in settings.input_topics.items():
        body = make_agent(event_type, Forward(), {}, out, dead, Metrics(CollectorRegistry()), processed)
        app.agent(raw_topic(name), name=f"bare.{event_type}")(body)
    freeze_heap()  # as the worker does
    faust.Worker(app, loglevel=settings.log_level.upper()).execute_from_commandline()


async def run_aiokafka(settings: Settings) -> None:
    """A consumer-group loop: fetch a batch, decode each record, send it on (acks as Faust's producer)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from stream.kafka.clients import client_options

    consumer = AIOKafkaConsumer(*settings.input_topics.values(), **client_options(settings),
                                group_id=settings.app_id, auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=0)
    await producer.start()
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for messages in batch.values():
                for msg in messages:
                    orjson.loads(msg.value or b"null")
                    await producer.send(settings.topic_recommendations, msg.value, key=msg.key)
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str]) -> int:
    """Entry point: ``faust`` or ``aiokafka``."""
    settings = load_settings()
    if argv == ["faust"]:
        sys.argv = sys.argv[:1]  # Faust's worker reads the command line; it must see no benchmark arguments
        run_faust(settings)
    elif argv == ["aiokafka"]:
        asyncio.run(run_aiokafka(settings))
    else:
        print("usage: python -m stream.bench.bare faust|aiokafka", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
