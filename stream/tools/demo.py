"""``streamrec demo``: local Kafka, a trained model, a worker, a live replay, and what came out.

It replays the held-out later period of movielens (events the model never trained on), prints a few
users' events and lists, an item unseen at training that the stream brought into other users' lists (and how
many seconds after its first event), the measured event-to-recommendation latency, and then asks the HTTP
API for one user's list and one item's similar items. Everything it started is stopped on the way out,
Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from stream.config import Settings
from stream.core.schemas import Event, Recommendation
from stream.local.processes import start_worker, stop_worker
from stream.tools.newcomers import Newcomers

DATASET = "movielens"
SEARCH_QUERY = "space adventure"  # the one search the demo sends after the replay


def _say(label: str, text: str) -> None:
    print(f"  {label:<8} {text}", flush=True)


def _searchable(artifact: Path) -> bool:
    """A complete artifact with an item tower (text_dim > 0) and a fitted search blend: it answers searches by
    text (demo models from before the item tower have neither)."""
    from encoders.models.search_blend import FILE

    if not all((artifact / f).is_file() for f in ("model.safetensors", "config.json", "items.json", FILE)):
        return False
    try:
        config = json.loads((artifact / "config.json").read_text())
        return int(config["model_config"].get("text_dim", 0)) > 0
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _model(settings: Settings) -> Path:
    """Reuse the newest movielens GRU artifact that can answer searches by text, or train one (a few minutes)."""
    from encoders.artifact import save_artifact
    from encoders.training.train import TrainConfig, train
    from stream.tools.datasets import item_texts, load_events

    root = settings.home / "models"
    usable = [p for p in root.glob(f"gru-{DATASET}-*") if _searchable(p)] if root.is_dir() else []
    found = max(usable, key=lambda p: p.name.rsplit("-", 2)[-2]) if usable else None  # newest by creation stamp
    if found is not None:
        _say("model", f"reusing {found}")
        return found
    _say("model", "training a GRU with an item tower and a search blend on movielens_latest_small "
                  "(temporal split, seed 42) ...")
    started = time.perf_counter()
    result = train(load_events(DATASET, settings.data_dir), cell="gru", config=TrainConfig(),
                   item_texts=item_texts(DATASET, settings.data_dir))
    path = save_artifact(result.model, result.item_ids, result.metrics, DATASET, root, result.search_blend,
                         result.live)
    _say("model", f"trained in {time.perf_counter() - started:.0f} s -> {path}")
    return path


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no data"
    ms = np.asarray(values) * 1000
    return (f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
            f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms ({len(ms)} lists)")


async def _live(settings: Settings, worker: subprocess.Popen[bytes], model: Path, events: int, rate: float,
                users: int, titles: dict[str, str]) -> tuple[str, str] | None:
    """The replay and what came out; returns a user with a list and the list's first item (None: no list)."""
    from encoders.artifact import load_artifact
    from stream.kafka.consume import RecommendationReader, wait_until_serving
    from stream.tools.datasets import load_events
    from stream.tools.replay import replay

    seconds = await wait_until_serving(settings, timeout_s=120, alive=lambda: worker.poll() is None)
    _say("worker", f"serving after {seconds:.1f} s")
    artifact = load_artifact(model)
    cutoff = float(artifact.metrics["split"]["cutoff_ts"])
    newcomers = Newcomers(set(artifact.item_ids))
    held_out = [e for e in load_events(DATASET, settings.data_dir) if e.ts >= cutoff][:events]
    reader = RecommendationReader(settings)
    await reader.start()
    sent: dict[str, Event] = {}
    history: dict[str, list[Event]] = defaultdict(list)

    def on_sent(e: Event) -> None:
        sent[e.event_id] = e
        history[e.user_id].append(e)
        newcomers.sent(e, time.time())

    lists: dict[str, Recommendation] = {}
    received_lat: list[float] = []
    server_lat: list[float] = []

    async def collect() -> None:
        async for rec, received in reader.records(timeout_s=None):
            newcomers.listed(rec)
            if rec.event_id in sent:
                lists[rec.user_id] = rec
                received_lat.append(received - rec.event_ts)
                server_lat.append(rec.generated_at - rec.event_ts)
                if len(received_lat) >= len(held_out):
                    return

    _say("replay", f"{len(held_out)} held-out movielens events (after the training cutoff) at {rate:.0f}/s ...")
    collector = asyncio.create_task(collect())
    try:
        stats = await replay(settings, held_out, rate, on_sent=on_sent)
        await asyncio.wait_for(collector, timeout=15)  # the last lists; a timeout shows as missing lists
    except TimeoutError:
        pass
    finally:
        collector.cancel()
        await reader.stop()
    _say("replay", f"sent {stats.sent} events {dict(stats.by_type)} in {stats.seconds:.1f} s; "
                   f"{len(received_lat)} lists received")
    print()
    busiest = [u for u, _ in Counter(e.user_id for e in sent.values()).most_common() if u in lists][:users]
    for user in busiest:
        evs = history[user]
        print(f"user {user}: {len(evs)} events, the last ones:")
        for e in evs[-4:]:
            what = f'"{e.query}"' if e.query else titles.get(e.item_id or "", e.item_id or "")
            print(f"    {e.type:<8} {what}")
        _print_list("recommendations", lists[user], titles)
        print()
    _learned(newcomers, titles, settings.learning, artifact.live.weight if artifact.live is not None else None)
    print()
    if busiest:
        await _search(settings, busiest[0], lists[busiest[0]], SEARCH_QUERY, titles)
    else:
        _say("search", "skipped: no user got a list during the replay")
    print()
    print("event-to-recommendation latency, measured in this run:")
    _say("received", f"event ts -> list consumed: {_percentiles(received_lat)}")
    _say("worker", f"event ts -> list generated: {_percentiles(server_lat)}")
    return (busiest[0], lists[busiest[0]].items[0].item_id) if busiest and lists[busiest[0]].items else None


def _learned(newcomers: Newcomers, titles: dict[str, str], learning: str, weight: float | None) -> None:
    """The item unseen at training that reached another user's list soonest after its first event."""
    first = newcomers.first()
    if first is None:
        _say("learning", f"{learning}: {len(newcomers.first_sent)} items unseen at training had events; none reached "
                         "another user's list in this replay")
        if weight == 0:
            _say("", "(this model's validation slice chose no live votes: on movielens, ratings are not sessions)")
        return
    item, seconds = first
    summary = newcomers.summary()
    _say("learning", f"{titles.get(item, item)} (item {item}), unseen at training, in another user's list "
                     f"{seconds:.1f} s after its first event")
    _say("", f"{summary['new_items_listed']} of {summary['new_items_seen']} items unseen at training reached "
             f"other users' lists, median {summary['seconds_to_first_list_p50']:.1f} s after their first event")


def _ask_the_api(settings: Settings, user: str, item: str, titles: dict[str, str]) -> None:
    """The HTTP API, as a web page would call it: the user's list now and an item's similar items, timed."""
    from urllib.request import Request, urlopen

    base = f"http://127.0.0.1:{settings.http_port}"
    headers = {"Authorization": f"Bearer {settings.http_token}"} if settings.http_token else {}
    print()
    print(f"the HTTP API at {base}:")
    for path, heading in ((f"/v1/users/{user}/recommendations?k=5", f"user {user}'s list now"),
                          (f"/v1/items/{item}/similar?k=5", f"items similar to {titles.get(item, item)}")):
        started = time.perf_counter()
        with urlopen(Request(base + path, headers=headers), timeout=5) as response:
            body = json.loads(response.read())
        elapsed = (time.perf_counter() - started) * 1000
        print(f"  GET {path}  ({response.status}, {elapsed:.1f} ms)")
        print(f"  {heading}:")
        for entry in body["items"]:
            print(f"    {entry['rank']:>2}. {titles.get(entry['item_id'], entry['item_id']):<60} {entry['score']:7.3f}")


def _print_list(heading: str, rec: Recommendation, titles: dict[str, str], note: str = "") -> None:
    print(f"  {heading} ({rec.model_version}, after {rec.event_type} {rec.event_id[:8]}{note}):")
    for n, item in enumerate(rec.items, 1):
        print(f"    {n:>2}. {titles.get(item.item_id, item.item_id):<60} {item.score:7.3f}")
        if item.because:
            print(f"        because: {'; '.join(_reason(b, titles) for b in item.because)}")


async def _search(settings: Settings, user: str, before: Recommendation, query: str, titles: dict[str, str],
                  timeout_s: float = 15.0) -> None:
    """Send one search for a user with history and print the user's list before it and the list it got."""
    from aiokafka import AIOKafkaProducer

    from stream.kafka.clients import client_options
    from stream.kafka.consume import RecommendationReader

    print(f'search as intent: user {user} searches "{query}"')
    _print_list("before", before, titles)
    event = Event("search", user, time.time(), uuid.uuid4().hex, query=query)
    reader = RecommendationReader(settings)
    await reader.start()  # from the topic's end: the list for this search comes after it

    async def answer() -> tuple[Recommendation, float]:
        async for rec, received in reader.records(timeout_s=None):
            if rec.event_id == event.event_id:
                return rec, received
        raise TimeoutError  # records() without a timeout does not end

    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        waiting = asyncio.create_task(answer())
        try:
            await producer.send_and_wait(settings.topic_searches, event.to_json(), key=user.encode())
            after, received = await asyncio.wait_for(waiting, timeout=timeout_s)
        except TimeoutError:
            _say("search", f"no list for the search within {timeout_s:.0f} s (see the worker's log)")
            return
        finally:
            waiting.cancel()
    finally:
        await producer.stop()
        await reader.stop()
    _print_list("after", after, titles, f", list in {(received - after.event_ts) * 1000:.0f} ms")


def _reason(because: str, titles: dict[str, str]) -> str:
    """One ``because`` entry for people: "click:318" -> "viewed The Shawshank Redemption (1994)"."""
    kind, _, what = because.partition(":")
    if kind == "search":
        return f'searched "{what}"'
    verbs = {"click": "viewed", "purchase": "liked"}
    return f"{verbs.get(kind, kind)} {titles.get(what, what)}".strip()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, events: int = 2000, rate: float = 200.0, users: int = 3) -> int:
    """Run the whole product locally and print what it does; returns an exit code."""
    from stream.kafka.publish import publish_items
    from stream.kafka.topics import ensure_topics
    from stream.local.broker import local_kafka
    from stream.tools.datasets import item_titles, load_catalog

    # Ctrl-C and `kill` both end the demo through the finally below, even when the shell started it with
    # SIGINT ignored (as non-interactive shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    print("streamrec demo", flush=True)
    kafka = local_kafka(settings, 1)
    started_broker = not kafka.is_running()
    worker: subprocess.Popen[bytes] | None = None
    try:
        seconds = kafka.start()
        _say("broker", f"Apache Kafka (KRaft) at {kafka.bootstrap_servers}, "
                       + (f"ready in {seconds:.1f} s" if started_broker else "already running"))
        counts = asyncio.run(ensure_topics(settings))
        _say("topics", ", ".join(f"{name}({n})" for name, n in counts.items()))
        model = _model(settings)
        sent = asyncio.run(publish_items(settings, load_catalog(DATASET, settings.data_dir)))
        _say("catalog", f"{sent} movielens items (title, first genre) on {settings.topic_items}; every worker reads "
                        "them whole")
        worker = start_worker(settings, model, settings.home / "logs" / "worker.log")
        _say("worker", f"pid {worker.pid}, log {settings.home / 'logs' / 'worker.log'}, "
                       f"metrics http://{settings.metrics_host}:{settings.metrics_port}/metrics, "
                       f"API http://{settings.http_host}:{settings.http_port}")
        titles = item_titles(DATASET, settings.data_dir)
        found = asyncio.run(_live(settings, worker, model, events, rate, users, titles))
        if found is not None and settings.http_port:
            _ask_the_api(settings, *found, titles)
        return 0
    finally:
        if worker is not None:
            stop_worker(worker)
            _say("stopped", "worker")
        if started_broker:
            kafka.stop()
            _say("stopped", "broker")
