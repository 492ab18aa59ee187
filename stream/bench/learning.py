"""``streamrec bench learning``: how soon an item the model never saw reaches other users' lists, and what the
live co-occurrence table holds per item.

One ``streamrec worker`` with learning on serves a model on the bench's own broker. The dataset's events after
the model's temporal cutoff (the period in which new items are born) are replayed in time order at ``rate``
for ``duration_s``. For every item the model has no row for, the bench times the seconds from sending its first
event to the first list that names it for a user who has had no event on it (``seconds_to_first_list_*``).
That figure is bound by the traffic: another shopper must come by an item the new one followed.

So the bench also probes the system's own delay under that load. Every ``PROBE_EVERY_S`` a watcher clicks a
known item A; three shoppers then go from A to a brand-new item; the watcher clicks A again every 100 ms until
a list of the watcher's names the new item (``probe_seconds_*``: from the new item's first event to that
list; a probe that takes over ``PROBE_TIMEOUT_S`` counts as missed). At the end the co-occurrence table's
changelog gives the bytes of its rows per item, and the worker's metrics the co-views per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.artifact import latest_artifact, load_artifact, resolve_artifact
from stream.bench.broker import bench_broker
from stream.bench.pipeline import phase_settings
from stream.config import Settings
from stream.errors import ConfigError
from stream.kafka.consume import RecommendationReader, wait_until_serving
from stream.kafka.topics import COOCCURRENCE_TABLE, changelog_topic, ensure_topics
from stream.local.broker import free_port
from stream.local.processes import start_worker, stop_worker
from stream.tools.audit import read_topic
from stream.tools.datasets import load_events
from stream.tools.newcomers import Newcomers
from stream.tools.replay import replay

DRAIN_S = 5.0  # lists read after the last event is sent
PROBE_EVERY_S, PROBE_TIMEOUT_S, PROBE_START_S = 3.0, 10.0, 5.0


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
    """Replay the events while reading the lists and probing (see the module docstring)."""
    newcomers = Newcomers(known)
    reader = RecommendationReader(settings)
    await reader.start()
    done = asyncio.Event()
    watched: dict[str, tuple[str, asyncio.Future[float]]] = {}  # watcher -> (new item, when a list named it)

    async def read() -> None:
        while not done.is_set():
            async for rec, _ in reader.records(timeout_s=0.2):
                newcomers.listed(rec)
                probe = watched.get(rec.user_id)
                if probe is not None and not probe[1].done() and probe[0] in {it.item_id for it in rec.items}:
                    probe[1].set_result(rec.generated_at)

    sources = list(dict.fromkeys(e.item_id for e in events if e.item_id in known))
    reading = asyncio.create_task(read())
    probing = asyncio.create_task(_probes(settings, sources, watched, len(events) / rate))
    stats = await replay(settings, events, rate, on_sent=lambda event: newcomers.sent(event, time.time()))
    delays = await probing
    await asyncio.sleep(DRAIN_S)
    done.set()
    await reading
    await reader.stop()
    found = np.array([d for d in delays if d is not None] or [np.nan])
    return {"events": stats.sent, **newcomers.summary(), "probes": len(delays),
            "probes_listed": int(np.isfinite(found).sum()),
            "probe_seconds_p50": round(float(np.nanpercentile(found, 50)), 2),
            "probe_seconds_p90": round(float(np.nanpercentile(found, 90)), 2),
            "probe_seconds_max": round(float(np.nanmax(found)), 2)}


async def _probes(settings: Settings, sources: list[str], watched: dict[str, tuple[str, asyncio.Future[float]]],
                  seconds: float) -> list[float | None]:
    """Probe every ``PROBE_EVERY_S`` while the replay runs; each probe's seconds (None: missed)."""
    from aiokafka import AIOKafkaProducer

    from stream.core.schemas import Event
    from stream.kafka.clients import client_options

    producer = AIOKafkaProducer(**client_options(settings), linger_ms=0)
    await producer.start()
    topic = settings.topic_clicks
    loop = asyncio.get_running_loop()

    async def click(user: str, item: str) -> float:
        at = time.time()
        event = Event("click", user, at, f"{user}-{item}-{at}", item_id=item)
        await producer.send_and_wait(topic, event.to_json(), key=user.encode())
        return at

    async def probe(n: int) -> float | None:
        source, new, watcher = sources[n * 7919 % len(sources)], f"bench-new-item-{n}", f"bench-watcher-{n}"
        listed: asyncio.Future[float] = loop.create_future()
        watched[watcher] = (new, listed)
        await click(watcher, source)
        await asyncio.sleep(0.5)
        born = 0.0
        for shopper in range(3):
            await click(f"bench-shopper-{n}-{shopper}", source)
            at = await click(f"bench-shopper-{n}-{shopper}", new)
            born = born or at
        while not listed.done() and time.time() - born < PROBE_TIMEOUT_S:
            await click(watcher, source)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(listed), timeout=0.1)
        return listed.result() - born if listed.done() else None

    try:
        await asyncio.sleep(PROBE_START_S)
        tasks = []
        for n in range(max(int((seconds - PROBE_START_S - PROBE_TIMEOUT_S) / PROBE_EVERY_S), 1)):
            tasks.append(asyncio.create_task(probe(n)))
            await asyncio.sleep(PROBE_EVERY_S)
        return list(await asyncio.gather(*tasks))
    finally:
        await producer.stop()


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on the worker's metrics port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))
