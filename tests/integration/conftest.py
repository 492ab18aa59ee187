"""The real-broker tier: one Apache Kafka for the session, a fresh topic set and app id per test.

The broker fixture fails the run if Kafka cannot start; nothing here skips.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import Settings
from stream.kafka.topics import ensure_topics
from stream.local.broker import LocalKafka, free_port
from stream.local.broker_config import BrokerNode
from stream.local.kafka_jars import KafkaJars

REPO = Path(__file__).resolve().parents[2]
JARS = Path(os.environ.get("STREAMREC_JARS_DIR", REPO / ".streamrec" / "kafka-jars"))
_counter = itertools.count()
SASL_PASSWORD = "shop-secret"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A single-node KRaft Apache Kafka on free loopback ports, stopped at the end of the session; it also
    has a SASL_PLAINTEXT listener (user ``shop``) for the security test."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), KafkaJars(JARS),
                        [BrokerNode(node_id=1, port=free_port(), controller_port=free_port(), sasl_port=free_port(),
                                    sasl_users=(("shop", SASL_PASSWORD),))])
    seconds = broker.start(timeout=120)
    print(f"\nKafka ready at {broker.bootstrap_servers} in {seconds:.1f} s")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture()
def settings(kafka: LocalKafka, tmp_path: Path, data_dir: Path, artifact_dir: Path) -> Settings:
    """Settings for one test: its own topics, consumer group and state, on the session broker."""
    tag = f"t{next(_counter)}-{os.getpid()}"
    s = Settings(
        bootstrap_servers=kafka.bootstrap_servers, app_id=f"streamrec-{tag}", home=tmp_path / "home",
        data_dir=data_dir, model_path=artifact_dir, partitions=2, metrics_port=free_port(), http_port=free_port(),
        topic_clicks=f"{tag}-clicks", topic_searches=f"{tag}-searches", topic_purchases=f"{tag}-purchases",
        topic_items=f"{tag}-items", topic_recommendations=f"{tag}-recommendations",
        topic_dead_letters=f"{tag}-dead-letters", topic_erasures=f"{tag}-erasures", topic_models=f"{tag}-models",
        topic_co_views=f"{tag}-co-views", topic_item_neighbours=f"{tag}-item-neighbours",
        session_timeout_s=6.0, rebalance_timeout_s=6.0,
        # Lists compared with a single-process reference or with each other over time: no trending blend and no
        # learning from the stream (each has its own tests).
        cold_start_events=0, learning="off",
    ).validate()
    asyncio.run(ensure_topics(s))
    return s
