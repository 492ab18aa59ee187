"""Plain Kafka tools just work: events produced with kcat (as the README shows) get lists that kcat reads back,
on the partitions the worker's own clients would have chosen, in the format schemas/ documents."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
from aiokafka.partitioner import DefaultPartitioner

from encoders.artifact import load_artifact
from stream.config import Settings
from stream.kafka.consume import wait_until_serving
from stream.local.processes import start_worker, stop_worker

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "recommendation.schema.json").read_text())
KCAT = shutil.which("kcat") or "/usr/bin/kcat"


def kcat(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([KCAT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_events_produced_with_kcat_get_lists_kcat_reads_back(settings: Settings) -> None:
    assert Path(KCAT).is_file(), "kcat not found (apt-get install kcat)"
    assert settings.model_path is not None
    items = load_artifact(settings.model_path).item_ids
    users = [f"kcat-user-{n}" for n in range(6)]
    proc = start_worker(settings, settings.model_path, settings.home / "worker.log")
    try:
        asyncio.run(wait_until_serving(settings, timeout_s=120, alive=lambda: proc.poll() is None))
        lines = "".join(f'{u}|{{"schema_version": 1, "user_id": "{u}", "item_id": "{items[n]}", "ts": {time.time()}, '
                        f'"event_id": "kcat-{n}"}}\n' for n, u in enumerate(users))
        kcat("-P", "-b", settings.bootstrap_servers, "-t", settings.topic_clicks, "-K", "|",
             "-X", "topic.partitioner=murmur2_random", stdin=lines)
        lists: dict[str, dict[str, object]] = {}
        deadline = time.time() + 60
        while len(lists) < len(users) and time.time() < deadline:
            out = kcat("-C", "-b", settings.bootstrap_servers, "-t", settings.topic_recommendations, "-o", "beginning",
                       "-e", "-q", "-f", "%k\t%s\n")
            for line in out.splitlines():
                key, _, value = line.partition("\t")
                body = json.loads(value)
                event = body["event"]
                if isinstance(event, dict) and str(event["event_id"]).startswith("kcat-"):
                    lists[key] = body
            time.sleep(0.5)
        placed = kcat("-C", "-b", settings.bootstrap_servers, "-t", settings.topic_clicks, "-o", "beginning", "-e",
                      "-q", "-f", "%k %p\n")
    finally:
        stop_worker(proc)
    assert set(lists) == set(users), f"lists for {sorted(lists)} of {users}"
    for user, body in lists.items():
        jsonschema.validate(body, SCHEMA)
        assert body["user_id"] == user and len(body["items"]) == settings.top_k  # type: ignore[arg-type]
    # murmur2_random is the Java client's partitioner, so a user's events share the state's partition.
    partitioner, partitions = DefaultPartitioner(), list(range(settings.partitions))
    for line in placed.splitlines():
        key, partition = line.rsplit(" ", 1)
        if key in users:
            assert int(partition) == partitioner(key.encode(), partitions, partitions)
