"""Chaos: 100,000 hostile records through the real broker and worker, with valid events among them. The
worker must not crash, every invalid record must be in dead-letters with a reason and counted, and every
valid event must get its list."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request

import orjson
from aiokafka import AIOKafkaProducer

from stream.config import Settings
from stream.core.schemas import REASONS
from stream.kafka.consume import wait_until_serving
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import read_topic
from stream.tools.datasets import load_events
from stream.tools.replay import to_wire

HOSTILE = 100_000
VALID = 1_000


def hostile_record(rng: random.Random, n: int) -> tuple[bytes | None, bytes]:
    """One invalid record (key, value); the kinds cycle so every reason shows up."""
    user = f"h{n % 500}"
    now = time.time()
    kind = n % 12
    body: object
    if kind == 0:
        return user.encode(), rng.randbytes(rng.randint(1, 64))  # random bytes, mostly invalid UTF-8
    if kind == 1:
        return user.encode(), b'{"schema_version": 1, "user_id": "%s", "item_id": "1", "ts": NaN}' % user.encode()
    if kind == 2:
        body = {"schema_version": 1, "user_id": user, "item_id": "1", "ts": -rng.random() * 1e9}
    elif kind == 3:
        body = {"schema_version": 1, "user_id": user, "item_id": "1", "ts": now + 1e7}
    elif kind == 4:
        body = {"schema_version": 1, "user_id": user, "ts": now}  # missing item_id
    elif kind == 5:
        body = {"schema_version": 1, "user_id": user, "item_id": {"id": 1}, "ts": now}
    elif kind == 6:
        body = {"schema_version": 9, "user_id": user, "item_id": "1", "ts": now}
    elif kind == 7:
        body = {"schema_version": 1, "user_id": "", "item_id": "1", "ts": now}
    elif kind == 8:
        body = [1, 2, 3]
    elif kind == 9:
        body = {"schema_version": 1, "user_id": user, "item_id": "x" * 70_000, "ts": now}  # > max_event_bytes
    elif kind == 10:
        body = {"schema_version": 1, "user_id": user, "item_id": "1", "ts": now}
        return b"someone-else", orjson.dumps(body)  # key is not the user
    else:
        body = {"schema_version": 1, "user_id": user, "query": "refund please", "ts": now}  # a search on clicks
    return user.encode(), orjson.dumps(body)


def test_hundred_thousand_hostile_records(settings: Settings) -> None:
    assert settings.model_path is not None
    rng = random.Random(7)
    valid = [to_wire(e, time.time()) for e in load_events("diginetica", settings.data_dir)[:VALID]]
    proc = start_worker(settings, settings.model_path, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=90, alive=lambda: proc.poll() is None))

        async def flood() -> float:
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5,
                                        max_request_size=2_000_000)
            await producer.start()
            started = time.time()
            try:
                every = HOSTILE // VALID
                for n in range(HOSTILE):
                    key, value = hostile_record(rng, n)
                    await producer.send(settings.topic_clicks, value, key=key)
                    if n % every == 0:
                        e = valid[n // every]
                        await producer.send(settings.input_topics[e.type], e.to_json(), key=e.user_id.encode())
                await producer.flush()
            finally:
                await producer.stop()
            return time.time() - started

        sent_in = asyncio.run(flood())
        deadline = time.time() + 240
        metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        invalid = 0.0
        while time.time() < deadline:
            assert proc.poll() is None, "the worker died"
            with urllib.request.urlopen(metrics_url, timeout=5) as response:
                text = response.read().decode()
            invalid = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("streamrec_worker_invalid_events_total{"))
            if invalid >= HOSTILE:
                break
            time.sleep(2)
        assert proc.poll() is None, "the worker died"
    finally:
        stop_worker(proc)
    letters = [orjson.loads(v) for *_, v in asyncio.run(read_topic(settings, settings.topic_dead_letters)) if v]
    answered = {orjson.loads(v)["event"]["event_id"]
                for *_, v in asyncio.run(read_topic(settings, settings.topic_recommendations)) if v}
    reasons: dict[str, int] = {}
    for letter in letters:
        reasons[letter["reason"]] = reasons.get(letter["reason"], 0) + 1
    summary = {"hostile_sent": HOSTILE, "valid_sent": VALID, "sent_in_s": round(sent_in, 1),
               "invalid_counted": int(invalid), "dead_letters": len(letters), "by_reason": reasons,
               "valid_answered": len({e.event_id for e in valid} & answered)}
    print("\nhostile flood:", json.dumps(summary))
    assert invalid == HOSTILE
    assert len(letters) == HOSTILE and set(reasons) <= set(REASONS)
    assert all(letter["value_b64"] is not None and letter["source"]["topic"] == settings.topic_clicks
               for letter in letters)
    assert summary["valid_answered"] == VALID
