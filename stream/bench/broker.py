"""The broker a benchmark runs on: its own single-node Apache Kafka, or the configured cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from stream.config import Settings


@contextlib.contextmanager
def bench_broker(settings: Settings, own: bool) -> Iterator[Settings]:
    """The settings a benchmark runs with: on its own single-node Kafka (started here, stopped after it), or
    on the configured cluster."""
    if not own:
        yield settings
        return
    from stream.local.broker import LocalKafka, free_port
    from stream.local.broker_config import BrokerNode
    from stream.local.kafka_jars import KafkaJars

    kafka = LocalKafka(settings.home / "bench-kafka", KafkaJars(settings.kafka_jars_dir),
                       [BrokerNode(1, free_port(), free_port())])
    kafka.start(timeout=120)
    try:
        yield settings.replace(bootstrap_servers=kafka.bootstrap_servers)
    finally:
        kafka.stop()
