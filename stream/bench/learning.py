"""``streamrec bench learning``: how soon an item the model never saw reaches other users' lists, and what the
live co-occurrence table holds per item.

One ``streamrec worker`` with learning on serves a model on the bench's own broker. The dataset's events after
the model's temporal cutoff (the period in which new items are born) are replayed in time order at ``rate``
for ``duration_s``. For every item the model has no row for, the bench times the seconds from sending its first
event to the first list that names it for a user who has had no event on it. At the end the co-occurrence
table's changelog gives the bytes of its rows per item, and the worker's metrics the co-views per event.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.artifact import latest_artifact, load_artifact, resolve_artifact
from stream.bench.broker import bench_broker
from stream.bench.pipeline import phase_settings
from stream.config import Settings
from stream.core.schemas import Event
from stream.errors import ConfigError
from stream.kafka.consume import RecommendationReader, wait_until_serving
from stream.kafka.topics import COOCCURRENCE_TABLE, changelog_topic, ensure_topics
from stream.local.broker import free_port
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import read_topic
from stream.tools.datasets import load_events
from stream.tools.replay import replay

DRAIN_S = 5.0  # lists read after the last event is sent


@dataclass(frozen=True)
class LearningBenchConfig:
    """What one ``bench learning`` run does."""

    rate: float = 200.0  # events/s
    duration_s: float = 60.0
    artifact: Path | None = None  # default: the newest artifact in <home>/models


def bench_learning(settings: Settings, config: LearningBenchConfig, own_broker: bool = True) -> dict[str, Any]:
    """One JSON row: new items seen and listed, seconds to the first list (p50, p90, max), bytes per item of the
    live table, co-views per event."""
    path = resolve_artifact(config.artifact) if config.artifact is not None \
        else latest_artifact(settings.home / "models")
    if path is None:
        raise ConfigError("artifact", f"no model in {settings.home / 'models'}; train one or pass --artifact")
    artifact = load_artifact(path)
    cutoff = float(artifact.metrics["split"]["cutoff_ts"])
    known = set(artifact.item_ids)
    events = [e for e in load_events(artifact.dataset, settings.data_dir) if e.ts >= cutoff]
    events = events[:int(config.rate * config.duration_s)]
    with bench_broker(settings, own_broker) as on_broker:
        run = phase_settings(on_broker, f"bench-learning-{time.strftime('%Y%m%dT%H%M%S')}").replace(
            learning="on", model_path=path, metrics_port=free_port(), http_port=0, cold_start_events=0).validate()
        asyncio.run(ensure_topics(run))
        log = run.home / "bench-learning-worker.log"
        proc = start_worker(run, path, log)
        try:
            asyncio.run(wait_until_serving(run, timeout_s=180, alive=lambda: proc.poll() is None))
            timing = asyncio.run(_measure(run, events, known, config.rate))
            timing |= {"co_views_per_event": round(_metric(run.metrics_port, "streamrec_worker_co_views_total")
                                                   / max(_metric(run.metrics_port, "streamrec_worker_events_total"),
                                                         1.0), 3),
                       "lists_published": _metric(run.metrics_port, "streamrec_cooccurrence_lists_published_total"),
                       "live_items_indexed": _metric(run.metrics_port, "streamrec_worker_live_items_indexed_total")}
        finally:
            stop_worker(proc)
        rows = {key: len(key) + len(value) for _, _, _, key, value in
                asyncio.run(read_topic(run, changelog_topic(run, COOCCURRENCE_TABLE)))
                if key is not None and value is not None}
    sizes = np.array(list(rows.values()) or [0])
    return {"bench": "learning", "model": artifact.version, "dataset": artifact.dataset, "rate": config.rate,
            **timing, "cooccurrence_items": len(rows), "bytes_per_item_mean": round(float(sizes.mean()), 1),
            "bytes_per_item_p99": round(float(np.percentile(sizes, 99)), 1),
            "neighbours_per_item": run.cooccurrence_neighbours}


async def _measure(settings: Settings, events: list[Any], known: set[str], rate: float) -> dict[str, Any]:
    """Replay the events while reading the lists; the seconds from each new item's first event to its first
    list for another user."""
    first_sent: dict[str, float] = {}
    actors: dict[str, set[str]] = defaultdict(set)  # new item -> users who had an event on it
    listed: dict[str, float] = {}

    def sent(event: Event) -> None:
        item = event.item_id
        if item is not None and item not in known:
            first_sent.setdefault(item, time.time())
            actors[item].add(event.user_id)

    reader = RecommendationReader(settings)
    await reader.start()
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            async for rec, _ in reader.records(timeout_s=0.2):
                for it in rec.items:
                    item = it.item_id
                    if item in first_sent and item not in listed and rec.user_id not in actors[item]:
                        listed[item] = rec.generated_at - first_sent[item]

    reading = asyncio.create_task(read())
    stats = await replay(settings, events, rate, on_sent=sent)
    await asyncio.sleep(DRAIN_S)
    done.set()
    await reading
    await reader.stop()
    seconds = np.array(list(listed.values()) or [np.nan])
    return {"events": stats.sent, "new_items_seen": len(first_sent), "new_items_listed": len(listed),
            "seconds_to_first_list_p50": round(float(np.nanpercentile(seconds, 50)), 2),
            "seconds_to_first_list_p90": round(float(np.nanpercentile(seconds, 90)), 2),
            "seconds_to_first_list_max": round(float(np.nanmax(seconds)), 2)}


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on the worker's metrics port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))
