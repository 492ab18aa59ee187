"""Kafka security settings reach every client: a worker, the topic setup and the test's own clients
authenticate with SASL/PLAIN against the session broker's SASL listener; a wrong password is refused."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.kafka.clients import client_options
from stream.kafka.consume import wait_until_serving
from stream.kafka.topics import ensure_topics
from stream.local.broker import LocalKafka
from stream.local.processes import start_worker, stop_worker
from tests.integration.conftest import SASL_PASSWORD


def test_worker_and_clients_authenticate_with_sasl(settings: Settings, kafka: LocalKafka) -> None:
    assert settings.model_path is not None
    port = kafka.nodes[0].sasl_port
    secure = settings.replace(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_PLAINTEXT",
                              sasl_mechanism="PLAIN", sasl_username="shop", sasl_password=SASL_PASSWORD).validate()
    assert asyncio.run(ensure_topics(secure))[secure.topic_clicks] == secure.partitions
    log = secure.home / "worker.log"
    proc = start_worker(secure, settings.model_path, log)
    try:
        seconds = asyncio.run(wait_until_serving(secure, timeout_s=90, alive=lambda: proc.poll() is None))
        assert seconds < 90
    finally:
        stop_worker(proc)
    assert SASL_PASSWORD not in log.read_text()  # credentials never reach the log

    async def wrong_password() -> None:
        producer = AIOKafkaProducer(**client_options(secure.replace(sasl_password="not-the-password")),
                                    request_timeout_ms=5000)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaError):
        asyncio.run(wrong_password())
