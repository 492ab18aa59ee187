"""Chaos: a three-node KRaft cluster, topics with replication factor 3 and min.insync.replicas 2; one broker
is SIGKILLed mid-stream. The audit must find no lost event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import Settings
from stream.kafka.consume import wait_until_serving
from stream.kafka.topics import ensure_topics
from stream.local.broker import LocalKafka, free_port
from stream.local.broker_config import BrokerNode
from stream.local.kafka_jars import KafkaJars
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import audit
from stream.tools.datasets import load_events
from stream.tools.replay import replay
from tests.integration.conftest import JARS

RATE = 200.0
EVENTS = 3000
KILL_AT_S = 5.0


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalKafka]:
    """Three brokers (each also a KRaft controller) on free loopback ports."""
    nodes = [BrokerNode(n, free_port(), free_port()) for n in (1, 2, 3)]
    kafka = LocalKafka(tmp_path / "kafka3", KafkaJars(JARS), nodes, heap_mb=512)
    seconds = kafka.start(timeout=180)
    print(f"\nthree-node Kafka ready at {kafka.bootstrap_servers} in {seconds:.1f} s")
    try:
        yield kafka
    finally:
        kafka.stop()


def test_a_broker_killed_mid_stream_loses_nothing(cluster: LocalKafka, tmp_path: Path, data_dir: Path,
                                                   artifact_dir: Path) -> None:
    settings = Settings(bootstrap_servers=cluster.bootstrap_servers, app_id="failover", home=tmp_path / "home",
                        data_dir=data_dir, model_path=artifact_dir, partitions=2, replication_factor=3,
                        metrics_port=free_port(), http_port=free_port(), session_timeout_s=6.0,
                        rebalance_timeout_s=6.0).validate()
    asyncio.run(ensure_topics(settings))
    proc = start_worker(settings, artifact_dir, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=120, alive=lambda: proc.poll() is None))

        async def traffic() -> None:
            task = asyncio.create_task(replay(settings, load_events("diginetica", data_dir)[:EVENTS], RATE))
            await asyncio.sleep(KILL_AT_S)
            cluster.kill_node(2)
            await task

        asyncio.run(traffic())
        time.sleep(20)  # leader elections, retries, then the backlog
        assert proc.poll() is None, "the worker died with the broker"
    finally:
        stop_worker(proc)
    survivors = settings.replace(bootstrap_servers=",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes
                                                              if n.node_id != 2))
    report = asyncio.run(audit(survivors)).summary()
    print("broker failover audit:", json.dumps(report))
    assert report["events"] >= EVENTS
    assert report["lost"] == 0, report
