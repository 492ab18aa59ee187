"""A real single-node Kafka starts, serves a topic round trip through aiokafka, and stops."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.local.broker import LocalKafka, free_port
from stream.local.broker_config import BrokerNode
from stream.local.kafka_jars import KafkaJars

JARS_DIR = Path(os.environ.get("STREAMREC_JARS_DIR", Path(__file__).resolve().parents[2] / ".streamrec" / "kafka-jars"))
TOPIC = "it-broker-roundtrip"

pytestmark = pytest.mark.integration


async def _round_trip(bootstrap: str) -> bytes:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
        for _ in range(50):  # the new topic's metadata reaches the broker's cache a moment after the create
            [described] = await admin.describe_topics([TOPIC])
            if len(described["partitions"]) == 3:
                break
            await asyncio.sleep(0.1)
        assert len(described["partitions"]) == 3
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"hello", key=b"user-1", partition=2)
    finally:
        await producer.stop()

    # A consumer group, so the group coordinator (__consumer_offsets) is exercised too.
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id="it-broker", auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert msg.partition == 2 and msg.key == b"user-1"
    return bytes(msg.value)


def test_local_kafka_round_trip(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "kafka", KafkaJars(JARS_DIR), [BrokerNode(1, free_port(), free_port())])
    try:
        took = kafka.start(timeout=60)  # raises BrokerError (a failure, not a skip)
        assert 0 < took < 60
        assert kafka.status() == {1: True}
        pid = kafka.pid(1)
        assert pid is not None
        assert kafka.start() == 0.0  # already running

        began = time.monotonic()
        assert asyncio.run(_round_trip(kafka.bootstrap_servers)) == b"hello"
        print(f"broker start {took:.1f} s, round trip {time.monotonic() - began:.1f} s")
    finally:
        kafka.stop()

    assert not kafka.is_running()
    assert not Path(f"/proc/{pid}").exists()
    kafka.stop()  # stopping a stopped cluster is a no-op


def test_a_worker_started_before_kafka_waits_for_it_then_serves(tmp_path: Path, artifact_dir: Path,
                                                                  data_dir: Path) -> None:
    from stream.config import Settings
    from stream.kafka.consume import wait_until_serving
    from stream.kafka.topics import ensure_topics
    from stream.local.processes import start_worker, stop_worker

    port = free_port()
    settings = Settings(bootstrap_servers=f"127.0.0.1:{port}", app_id="early-worker", home=tmp_path / "home",
                        data_dir=data_dir, partitions=1, metrics_port=free_port(), http_port=free_port(),
                        session_timeout_s=6.0, rebalance_timeout_s=6.0)
    log = settings.home / "worker.log"
    proc = start_worker(settings, artifact_dir, log)
    kafka = LocalKafka(tmp_path / "kafka", KafkaJars(JARS_DIR), [BrokerNode(1, port, free_port())])
    try:
        # Kafka stays down until the worker has tried and retried (two warnings), however long its start takes.
        deadline = time.monotonic() + 180
        while (not log.exists() or log.read_text().count("not reachable yet") < 2) and time.monotonic() < deadline:
            assert proc.poll() is None, "the worker gave up while Kafka was down"
            time.sleep(0.2)
        assert log.read_text().count("not reachable yet") >= 2, log.read_text()[-3000:]
        assert proc.poll() is None, "the worker gave up while Kafka was down"
        kafka.start(timeout=120)
        asyncio.run(ensure_topics(settings))
        seconds = asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))
        print(f"\nserving {seconds:.1f} s after Kafka came up")
    finally:
        stop_worker(proc)
        kafka.stop()
