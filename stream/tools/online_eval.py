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

With learning on, the worker learns from the stream as deployed at the cutoff would: the replay holds every
click and purchase of the period, of every user (the offline streaming evaluation's stream,
encoders/training/streaming_eval.py), stamped with their dataset times (the live table decays in event time).
The target users' events before the cutoff are replayed first to a worker with learning off, whose states a
worker with learning on then recovers from the changelog: their history shapes their state, not the live table.
The replay packs hours into seconds, so a changed neighbour list is republished every ``REPLAY_PUBLISH_S``
rather than every second.

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
REPLAY_PUBLISH_S = 0.05  # neighbours_publish_interval_s of a replay with learning on (see the module docstring)


@dataclass
class Plan:
    """What to replay and what to score."""

    events: list[tuple[str, DatasetEvent]]  # (event id, event) in replay order
    targets: list[tuple[str, str, str, int]]  # (id of the user's previous event, target item, user, position)
    popularity: Counter[str] = field(default_factory=Counter)  # training-period item counts (novelty)
    n_items: int = 0
    fresh: set[str] = field(default_factory=set)  # items first seen at or after the cutoff
    cutoff: float = 0.0


def plan(events: list[DatasetEvent], cutoff: float, max_events: int, learning: bool = False) -> Plan:
    """Pick the offline evaluation's users and targets (``encoders.training.evaluation.held_out``, the same rule),
    and the events to replay for them (with ``learning``, every other user's clicks and purchases of the
    period too)."""
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
    if learning:
        users = {user for _, _, user, _ in targets}
        chosen += [(uuid.uuid4().hex, e) for e in events
                   if e.user_id not in users and e.ts >= cutoff and e.type != "search" and e.item_id is not None]
    chosen.sort(key=lambda pair: pair[1].ts)  # one stream in time order, as the data happened
    first: dict[str, float] = {}
    for e in events:
        if e.item_id is not None:
            first[e.item_id] = min(first.get(e.item_id, math.inf), e.ts)
    fresh = {item for item, ts in first.items() if ts >= cutoff}
    return Plan(chosen, targets, popularity, len(popularity), fresh, cutoff)


def score_slices(lists: dict[str, Recommendation], the_plan: Plan) -> dict[str, dict[str, float]]:
    """Recall@20, MRR@20 and NDCG@10 with their target counts, overall and on the targets whose item was first
    seen after the cutoff (``new_items``) or before it (``old_items``), as learning.json has them."""
    slices = {"overall": the_plan.targets,
              "new_items": [t for t in the_plan.targets if t[1] in the_plan.fresh],
              "old_items": [t for t in the_plan.targets if t[1] not in the_plan.fresh]}
    out = {}
    for name, targets in slices.items():
        metrics = score(lists, targets, the_plan.popularity, the_plan.n_items).get("all", {})
        out[name] = {k: metrics.get(k, 0.0) for k in ("recall@20", "mrr@20", "ndcg@10")} | {"targets": len(targets)}
    return out


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


async def _replay_and_collect(settings: Settings, the_plan: Plan, rate: float,
                              events: list[tuple[str, DatasetEvent]] | None = None,
                              dataset_time: bool = False) -> dict[str, Recommendation]:
    """Replay ``events`` (default: the plan's) and collect the lists of the plan's targets among them, stamped
    now or (``dataset_time``) with their dataset times."""
    from aiokafka import AIOKafkaProducer

    from stream.kafka.clients import client_options
    from stream.kafka.consume import RecommendationReader

    events = the_plan.events if events is None else events
    reader = RecommendationReader(settings, from_beginning=True)
    await reader.start()
    replayed = {event_id for event_id, _ in events}
    wanted = {previous for previous, *_ in the_plan.targets if previous in replayed}
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
        for n, (event_id, e) in enumerate(events):
            if rate > 0:
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            topic = settings.input_topics[e.type]
            previous = last.get(e.user_id)
            if previous is not None and previous[0] != topic:
                # Another topic than the user's previous event: wait for that event's list (module docstring).
                await producer.flush()
                await answered_to(previous[1])
            wire = Event(e.type, e.user_id, e.ts if dataset_time else time.time(), event_id, item_id=e.item_id,
                         query=e.query, quantity=e.quantity, price=e.price)
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
    learning: bool = False

    def summary(self) -> dict[str, Any]:
        """Online metrics per variant next to the offline ones (with learning on, the streaming evaluation's)."""
        online = score(self.lists, self.plan.targets, self.plan.popularity, self.plan.n_items)
        return {"artifact": str(self.artifact), "dataset": self.dataset, "events_replayed": len(self.plan.events),
                "targets": len(self.plan.targets), "seconds": round(self.seconds, 1), "online": online,
                "offline": self.offline, "learning": "on" if self.learning else "off",
                "slices": score_slices(self.lists, self.plan)}


def evaluate_online(settings: Settings, artifact: Path, rate: float = 400.0,
                    max_events: int | None = None, learning: bool | None = None) -> dict[str, Any]:
    """Replay, collect, score; returns online metrics per variant next to the offline ones. ``learning``: the
    setting's when None."""
    return run_online(settings, artifact, rate, max_events, learning).summary()


def run_online(settings: Settings, artifact: Path, rate: float = 400.0, max_events: int | None = None,
               learning: bool | None = None) -> OnlineRun:
    """Replay the artifact's held-out period through a worker and collect the lists (see the module docstring
    for learning on)."""
    from encoders.artifact import load_artifact, resolve_artifact
    from stream.kafka.consume import wait_until_serving
    from stream.kafka.topics import ensure_topics
    from stream.local.broker import local_kafka
    from stream.local.processes import start_worker, stop_worker

    learning = settings.learning == "on" if learning is None else learning
    loaded = load_artifact(resolve_artifact(artifact))
    cutoff = float(loaded.metrics["split"]["cutoff_ts"])
    limit = max_events or int(loaded.metrics.get("train", {}).get("max_eval_events", 20_000))
    the_plan = plan(load_events(loaded.dataset, settings.data_dir), cutoff, limit, learning)
    tag = f"online-{time.strftime('%Y%m%dT%H%M%S')}"
    run = settings.replace(
        app_id=tag, model_path=loaded.path, top_k=LIST_SIZE, cold_start_events=0, diversity=0.0,
        topic_clicks=f"{tag}-clicks", topic_searches=f"{tag}-searches", topic_purchases=f"{tag}-purchases",
        topic_recommendations=f"{tag}-recommendations", topic_dead_letters=f"{tag}-dead-letters",
        topic_erasures=f"{tag}-erasures", topic_items=f"{tag}-items", topic_models=f"{tag}-models",
        topic_co_views=f"{tag}-co-views", topic_item_neighbours=f"{tag}-item-neighbours",
        learning="on" if learning else "off", neighbours_publish_interval_s=REPLAY_PUBLISH_S).validate()
    # With learning on: the history before the cutoff to a worker without it, then the period to one with it.
    phases = [(run, the_plan.events)]
    if learning:
        history = [pair for pair in the_plan.events if pair[1].ts < cutoff]
        phases = [(run.replace(learning="off"), history), (run, [p for p in the_plan.events if p[1].ts >= cutoff])]
    kafka = local_kafka(run) if run.bootstrap_servers == Settings().bootstrap_servers else None
    started_broker = kafka is not None and not kafka.is_running()
    if kafka is not None:
        kafka.start()
    lists: dict[str, Recommendation] = {}
    seconds = 0.0
    try:
        asyncio.run(ensure_topics(run))
        for n, (phase, events) in enumerate(phases):
            if not events:
                continue
            worker = start_worker(phase, loaded.path, run.home / "logs" / f"{tag}-{n}.log")
            try:
                asyncio.run(wait_until_serving(phase, timeout_s=120, alive=_running(worker)))
                began = time.perf_counter()
                lists |= asyncio.run(_replay_and_collect(phase, the_plan, rate, events, dataset_time=learning))
                seconds += time.perf_counter() - began
            finally:
                stop_worker(worker)
    finally:
        if started_broker and kafka is not None:
            kafka.stop()
    offline = loaded.metrics.get("eval", {})
    if learning:
        offline = {"streaming": _offline_learning(loaded, settings.data_dir, limit)}
    return OnlineRun(loaded.path, loaded.dataset, offline, the_plan, lists, seconds, learning)


def _running(proc: Any) -> Any:
    """A check that the worker process is still running."""
    return lambda: proc.poll() is None


def _offline_learning(artifact: Any, data_dir: Path, max_events: int) -> dict[str, float]:
    """The offline streaming evaluation's overall metrics with learning on (encoders/training/streaming_eval.py)."""
    from encoders.models.live_neighbours import LiveConfig
    from encoders.training.streaming_eval import streaming_metrics
    from stream.tools.report import artifact_sequences

    sequences, cutoff, vectors = artifact_sequences(artifact, data_dir)
    measured = streaming_metrics(artifact.model, sequences, cutoff, float("inf"), max_events,
                                 artifact.live or LiveConfig(), vectors)
    return {k: float(v) for k, v in measured["overall"].items()}


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
