"""Online evaluation: the held-out period replayed through the real broker and worker, scored from the
``recommendations`` topic with the same metrics as the offline evaluation (encoders/training/evaluation.py).

The events and targets are the offline ones: users in sorted order, each user's whole history in time order
(the training period too, so the worker's state is what the offline scorer sees), and as targets every
click/purchase at or after the artifact's temporal cutoff that has an event before it, until ``max_events``
targets. A target is a hit at rank r when its item is at rank r of the list the worker produced after the
user's previous event. Lists have 20 items (``top_k`` 20) and come from the serving path as deployed: HNSW,
repeat scores, the purchased-items filter; trending blending and diversity are off, as offline.

Each event type has its own topic, and the worker consumes topics independently. The replay packs minutes of
a session into milliseconds, so a user's purchase sent right after a click could be applied before it (and
its list would then exclude the bought item, and a session-aware model would see the wrong order): a user's
event on another topic than the user's previous event is sent only after the worker answered that event.

Each run uses its own app id and topics (a fresh consumer group and empty state) on the configured Kafka,
started locally when it is the local default and not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.training.events import DatasetEvent
from stream.config import Settings
from stream.core.schemas import Event, Recommendation
from stream.tools.datasets import load_events

LIST_SIZE = 20


@dataclass
class Plan:
    """What to replay and what to score."""

    events: list[tuple[str, DatasetEvent]]  # (event id, event) in replay order
    targets: list[tuple[str, str, str, int]]  # (id of the user's previous event, target item, user, position)
    popularity: Counter[str] = field(default_factory=Counter)  # training-period item counts (novelty)
    n_items: int = 0


def plan(events: list[DatasetEvent], cutoff: float, max_events: int) -> Plan:
    """Pick the offline evaluation's users and targets (``encoders.training.evaluation.held_out``, the same rule),
    and the events to replay for them."""
    from encoders.training.evaluation import held_out
    from encoders.training.sequences import build_sequences

    by_user: dict[str, list[DatasetEvent]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    sequences = build_sequences(events, [], 2, 1)  # target selection reads only times and event types
    popularity = Counter(e.item_id for e in events if e.ts < cutoff and e.item_id is not None)
    chosen: list[tuple[str, DatasetEvent]] = []
    targets: list[tuple[str, str, str, int]] = []
    for user, _, positions in held_out(sequences, cutoff, max_events):
        history = by_user[user]
        ids = [uuid.uuid4().hex for _ in history]
        chosen += list(zip(ids, history, strict=True))
        targets += [(ids[t - 1], str(history[t].item_id), user, t) for t in positions]
    chosen.sort(key=lambda pair: pair[1].ts)  # one stream in time order, as the data happened
    return Plan(chosen, targets, popularity, len(popularity))


def score(lists: dict[str, Recommendation], targets: list[tuple[str, str, str, int]], popularity: Counter[str],
          n_items: int) -> dict[str, dict[str, float]]:
    """Metrics per variant (and "all") from the lists answering each target's previous event."""
    total = sum(popularity.values())
    ranks: dict[str, list[int]] = defaultdict(list)
    covered: dict[str, set[str]] = defaultdict(set)
    novelty: dict[str, list[float]] = defaultdict(list)
    missing = 0
    for previous, item, _, _ in targets:
        rec = lists.get(previous)
        if rec is None:
            missing += 1
            continue
        listed = [it.item_id for it in rec.items[:LIST_SIZE]]
        rank = listed.index(item) if item in listed else n_items
        info = [-math.log2(max(popularity.get(i, 0) / max(total, 1), 1e-12)) for i in listed]
        for group in (rec.variant, "all"):
            ranks[group].append(rank)
            covered[group].update(listed)
            novelty[group].append(float(np.mean(info)) if info else 0.0)
    out = {}
    for group, r in ranks.items():
        a = np.asarray(r, dtype=np.float64)
        out[group] = {"recall@10": float(np.mean(a < 10)), "recall@20": float(np.mean(a < 20)),
                      "ndcg@10": float(np.mean(np.where(a < 10, 1.0 / np.log2(a + 2.0), 0.0))),
                      "mrr@20": float(np.mean(np.where(a < 20, 1.0 / (a + 1.0), 0.0))),
                      "coverage@20": len(covered[group]) / max(n_items, 1),
                      "novelty": float(np.mean(novelty[group])), "events": int(a.size)}
    out.setdefault("all", {})["unanswered"] = missing
    return out


async def _replay_and_collect(settings: Settings, the_plan: Plan, rate: float) -> dict[str, Recommendation]:
    from aiokafka import AIOKafkaProducer

    from stream.kafka.clients import client_options
    from stream.kafka.consume import RecommendationReader

    reader = RecommendationReader(settings, from_beginning=True)
    await reader.start()
    wanted = {previous for previous, *_ in the_plan.targets}
    lists: dict[str, Recommendation] = {}
    answered: set[str] = set()  # every event the worker has answered (a list per event)
    waiting: dict[str, asyncio.Future[None]] = {}
    sent_all = False

    async def collect() -> None:
        async for rec, _ in reader.records(timeout_s=30.0):
            answered.add(rec.event_id)
            waiter = waiting.pop(rec.event_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if rec.event_id in wanted:
                lists[rec.event_id] = rec
            if sent_all and len(lists) == len(wanted):
                return

    async def answered_to(event_id: str) -> None:
        """Until the worker has answered this event (at most 30 s: a lost list must not stall the replay)."""
        if event_id in answered:
            return
        waiter = waiting.setdefault(event_id, asyncio.get_running_loop().create_future())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), timeout=30.0)

    collector = asyncio.create_task(collect())
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=2)
    await producer.start()
    started = time.perf_counter()
    last: dict[str, tuple[str, str]] = {}  # user -> (topic, event id) of the user's previous event
    try:
        for n, (event_id, e) in enumerate(the_plan.events):
            if rate > 0:
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            topic = settings.input_topics[e.type]
            previous = last.get(e.user_id)
            if previous is not None and previous[0] != topic:
                # Another topic than the user's previous event: wait for that event's list (module docstring).
                await producer.flush()
                await answered_to(previous[1])
            wire = Event(e.type, e.user_id, time.time(), event_id, item_id=e.item_id, query=e.query,
                         quantity=e.quantity, price=e.price)
            await producer.send(topic, wire.to_json(), key=e.user_id.encode())
            last[e.user_id] = (topic, event_id)
        await producer.flush()
    finally:
        await producer.stop()
    sent_all = True
    if len(lists) == len(wanted):
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    else:
        await collector
    await reader.stop()
    return lists


@dataclass
class OnlineRun:
    """What an online replay produced: the plan, the lists by event id, and how long the replay took."""

    artifact: Path
    dataset: str
    offline: dict[str, Any]
    plan: Plan
    lists: dict[str, Recommendation]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """Online metrics per variant next to the artifact's stored offline ones."""
        online = score(self.lists, self.plan.targets, self.plan.popularity, self.plan.n_items)
        return {"artifact": str(self.artifact), "dataset": self.dataset, "events_replayed": len(self.plan.events),
                "targets": len(self.plan.targets), "seconds": round(self.seconds, 1), "online": online,
                "offline": self.offline}


def evaluate_online(settings: Settings, artifact: Path, rate: float = 400.0,
                    max_events: int | None = None) -> dict[str, Any]:
    """Replay, collect, score; returns online metrics per variant next to the artifact's offline ones."""
    return run_online(settings, artifact, rate, max_events).summary()


def run_online(settings: Settings, artifact: Path, rate: float = 400.0, max_events: int | None = None) -> OnlineRun:
    """Replay the artifact's held-out period through a worker and collect the lists."""
    from encoders.artifact import load_artifact, resolve_artifact
    from stream.kafka.consume import wait_until_serving
    from stream.kafka.topics import ensure_topics
    from stream.local.broker import local_kafka
    from stream.local.processes import start_worker, stop_worker

    loaded = load_artifact(resolve_artifact(artifact))
    cutoff = float(loaded.metrics["split"]["cutoff_ts"])
    limit = max_events or int(loaded.metrics.get("train", {}).get("max_eval_events", 20_000))
    the_plan = plan(load_events(loaded.dataset, settings.data_dir), cutoff, limit)
    tag = f"online-{time.strftime('%Y%m%dT%H%M%S')}"
    run = settings.replace(
        app_id=tag, model_path=loaded.path, top_k=LIST_SIZE, cold_start_events=0, diversity=0.0,
        topic_clicks=f"{tag}-clicks", topic_searches=f"{tag}-searches", topic_purchases=f"{tag}-purchases",
        topic_recommendations=f"{tag}-recommendations", topic_dead_letters=f"{tag}-dead-letters",
        topic_erasures=f"{tag}-erasures", topic_items=f"{tag}-items", topic_models=f"{tag}-models",
        topic_co_views=f"{tag}-co-views", topic_item_neighbours=f"{tag}-item-neighbours").validate()
    kafka = local_kafka(run) if run.bootstrap_servers == Settings().bootstrap_servers else None
    started_broker = kafka is not None and not kafka.is_running()
    if kafka is not None:
        kafka.start()
    worker = None
    try:
        asyncio.run(ensure_topics(run))
        worker = start_worker(run, loaded.path, run.home / "logs" / f"{tag}.log")
        asyncio.run(wait_until_serving(run, timeout_s=120, alive=lambda: worker is not None and worker.poll() is None))
        began = time.perf_counter()
        lists = asyncio.run(_replay_and_collect(run, the_plan, rate))
        seconds = time.perf_counter() - began
    finally:
        if worker is not None:
            stop_worker(worker)
        if started_broker and kafka is not None:
            kafka.stop()
    return OnlineRun(loaded.path, loaded.dataset, loaded.metrics.get("eval", {}), the_plan, lists, seconds)


def write_online_report(runs: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Write online.json and online.md (online next to offline, per variant) into ``out``; returns a summary."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "online.json").write_text(json.dumps(runs, indent=2) + "\n")
    lines = ["# Online vs offline", "",
             "The held-out period replayed through the real broker and worker (`streamrec evaluate --online`);",
             "online metrics are read from the `recommendations` topic, offline ones from the artifact.", "",
             "| artifact | variant | events | online R@20 | offline R@20 | online MRR@20 | offline MRR@20 |",
             "|---|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for run in runs:
        offline = _offline_model_metrics(run["offline"])
        for variant, metrics in run["online"].items():
            if "recall@20" not in metrics:
                continue
            lines.append(f"| {Path(run['artifact']).name} | {variant} | {metrics['events']} | "
                         f"{metrics['recall@20']:.4f} | {offline.get('recall@20', float('nan')):.4f} | "
                         f"{metrics['mrr@20']:.4f} | {offline.get('mrr@20', float('nan')):.4f} |")
            summary[f"{Path(run['artifact']).name}/{variant}"] = {
                "online_recall@20": round(metrics["recall@20"], 4), "offline_recall@20": offline.get("recall@20"),
                "online_mrr@20": round(metrics["mrr@20"], 4), "offline_mrr@20": offline.get("mrr@20")}
    (out / "online.md").write_text("\n".join(lines) + "\n")
    return summary


def _offline_model_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """The model's own entry of an artifact's stored evaluation (not a baseline's)."""
    for name, metrics in evaluation.items():
        if name not in ("popularity", "item_knn") and isinstance(metrics, dict):
            return metrics
    return {}
