"""Helpers for tests that talk to the real broker: produce records, wait for lists."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaProducer

from stream.config import Settings
from stream.core.schemas import Event, Recommendation
from stream.kafka.consume import RecommendationReader


async def send(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """Produce (topic, key, value) records in order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def collect(reader: RecommendationReader, wanted: set[str], timeout_s: float) -> dict[str, Recommendation]:
    """Lists by event id until every wanted event id has one or the time is up."""
    got: dict[str, Recommendation] = {}
    deadline = time.time() + timeout_s
    while wanted - got.keys() and time.time() < deadline:
        async for rec, _ in reader.records(timeout_s=0.5):
            if rec.event_id in wanted:
                got[rec.event_id] = rec
            if not wanted - got.keys():
                break
    return got


def click(user: str, item: str, event_id: str) -> bytes:
    """A valid click, stamped now."""
    return Event("click", user, time.time(), event_id, item_id=item).to_json()


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a worker's metrics port."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")
              or line.startswith(name + "{")]
    return sum(values)


def wait_for_workers(workers: list[tuple[subprocess.Popen[bytes], int, Path]], input_partitions: int,
                     timeout_s: float = 180.0) -> float:
    """Wait until every worker (process, metrics port, log) reports ready and the input partitions are all
    assigned, each worker holding some: readiness, not a sleep, so a slow machine only waits longer. Fails at
    once, with the log's end, when a worker exits. Returns the seconds waited."""
    started = time.monotonic()
    while True:
        for proc, _, log in workers:
            assert proc.poll() is None, f"a worker exited ({proc.returncode}): {log.read_text()[-3000:]}"
        try:
            ready = [metric(port, "streamrec_worker_ready") for _, port, _ in workers]
            assigned = [metric(port, "streamrec_worker_assigned_partitions") for _, port, _ in workers]
        except (urllib.error.URLError, ConnectionError):
            ready, assigned = [0.0], [0.0]  # the metrics server is not up yet
        if all(r == 1 for r in ready) and all(a > 0 for a in assigned) and sum(assigned) == input_partitions:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"workers not ready in {timeout_s:.0f} s: ready {ready}, " \
                                                       f"assigned {assigned} of {input_partitions}"
        time.sleep(0.2)


def wait_for_metric(port: int, names: list[str], at_least: float, timeout_s: float = 180.0) -> float:
    """Wait until the summed samples of ``names`` on a worker's metrics port reach ``at_least`` (a swap done,
    every event answered): the event itself, not a sleep. Returns the seconds waited."""
    started = time.monotonic()
    while True:
        total = sum(metric(port, name) for name in names)
        if total >= at_least:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"{' + '.join(names)} = {total} < {at_least} " \
                                                       f"after {timeout_s:.0f} s"
        time.sleep(0.1)
