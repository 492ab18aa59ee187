"""The ``streamrec`` command line: broker, topics, train, evaluate, worker, publish, items, replay, tail, demo.

Global flags override ``STREAMREC_*`` environment variables; both end in one validated Settings object.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS starts a thread per core for larger products. On a machine whose cores are busy (the broker,
# other workers, training) those threads spin against each other (docs/benchmarks.md has the figures). One
# thread per process, as for torch (``torch_threads``), unless the environment says otherwise; set before numpy
# is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.bench.commands import add_bench_parser, run_bench_command
from stream.config import Settings, load_settings
from stream.errors import StreamrecError

log = logging.getLogger("streamrec")

# Global flags -> setting names (None when the flag is not given, so env/defaults apply).
_GLOBAL_FLAGS = {
    "bootstrap_servers": "--bootstrap-servers",
    "home": "--home",
    "data_dir": "--data-dir",
    "partitions": "--partitions",
    "app_id": "--app-id",
    "metrics_port": "--metrics-port",
    "store": "--store",
    "log_level": "--log-level",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrec", description="Streaming real-time recommendations on Kafka.")
    for name, flag in _GLOBAL_FLAGS.items():
        p.add_argument(flag, dest=name, default=None, help=f"setting {name} (env STREAMREC_{name.upper()})")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="run a local Apache Kafka (KRaft) from the official jars")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.add_argument("--nodes", type=int, default=1, help="brokers in the local cluster (1 or 3)")

    sub.add_parser("topics", help="create the topics (idempotent) and check their partition counts")

    t = sub.add_parser("train", help="train a next-item model and write a versioned artifact")
    t.add_argument("--dataset", default="movielens", choices=["movielens", "yoochoose", "diginetica"])
    t.add_argument("--model", default="gru", choices=["gru", "lstm", "sasrec"])
    t.add_argument("--epochs", type=int, default=None,
                   help="most epochs; the count is chosen on the validation slice (default: TrainConfig's)")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: TrainConfig's)")
    t.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a field of the model's config dataclass, e.g. dim=128 (repeatable)")
    t.add_argument("--head-fraction", type=float, default=0.0,
                   help="latest share of training events held back to fit the session head (stacking; 0 = off; "
                        "needs --mix-fraction 0)")
    t.add_argument("--mix-fraction", type=float, default=None,
                   help="latest share of training events (the validation slice) that chooses the epochs and the "
                        "item-kNN mix, and on which the model must not lose to item-kNN (default: TrainConfig's; "
                        "0 = no slice: the bare model, unchecked)")
    t.add_argument("--no-ranker", dest="ranker", action="store_false",
                   help="no learned re-ranker (by default it is fitted on the validation slice and kept where it "
                        "beats the mix there)")
    t.add_argument("--no-searches", dest="searches", action="store_false",
                   help="drop search events (the with/without-searches comparison)")
    t.add_argument("--no-item-text", dest="item_text", action="store_false",
                   help="no item tower text half even where the dataset has item texts (movielens)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")

    ev = sub.add_parser("evaluate", help="full-ranking metrics of artifacts and baselines: report.md, PNG, JSON")
    ev.add_argument("artifacts", nargs="+", type=Path, help="artifact folders (one dataset per run)")
    ev.add_argument("--out", type=Path, required=True, help="folder for report.md, metrics.png, metrics.json")
    ev.add_argument("--max-events", type=int, default=20_000, help="test events scored (users in sorted order)")
    ev.add_argument("--online", action="store_true",
                    help="also replay the test period through the real broker and worker and score the lists")
    ev.add_argument("--rate", type=float, default=400.0, help="events per second of the online replay")
    ev.add_argument("--diversity", default=None, help="MMR strengths to compare, e.g. 0,0.3,0.6 (diversity.md)")
    ev.add_argument("--learning", default=None, metavar="on,off",
                    help="score the test period walked in time order with learning from the stream on and/or off "
                         "(learning.json)")
    ev.add_argument("--search", action="store_true",
                    help="also measure search quality (movielens, a model with an item tower): search.json")
    t.add_argument("--out", type=Path, default=None, help="artifact root (default <home>/models)")

    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--model", dest="model_path", type=Path, default=None, help="artifact folder (setting model_path)")

    pub = sub.add_parser("publish", help="make a trained artifact the current model of every worker (hot reload)")
    pub.add_argument("artifact", type=Path, help="an artifact folder, or a folder of artifacts (newest)")
    pub.add_argument("--variant", default="default", help="the A/B variant whose model it replaces")

    it = sub.add_parser("items", help="catalog changes on the items topic")
    it_sub = it.add_subparsers(dest="items_action", required=True)
    il = it_sub.add_parser("load", help="publish a dataset's items (titles, categories) as the catalog")
    il.add_argument("dataset", choices=["movielens", "yoochoose", "diginetica"])
    iset = it_sub.add_parser("set", help="upsert one item")
    iset.add_argument("item_id")
    iset.add_argument("--title", default=None)
    iset.add_argument("--category", default=None)
    iset.add_argument("--price", type=float, default=None)
    iset.add_argument("--unavailable", action="store_true", help="keep it out of every list")
    idel = it_sub.add_parser("delete", help="delete one item from the catalog and the index")
    idel.add_argument("item_id")

    r = sub.add_parser("replay", help="produce a real dataset's events in time order")
    r.add_argument("dataset", choices=["movielens", "yoochoose", "diginetica"])
    r.add_argument("--rate", type=float, default=100.0, help="events per second (0 = as fast as possible)")
    r.add_argument("--limit", type=int, default=1000, help="events to send")
    r.add_argument("--skip", type=int, default=0, help="events to skip from the start of the dataset")

    a = sub.add_parser("audit", help="lost, duplicated and state-mismatched events, as one JSON line")
    a.add_argument("--since", type=float, default=0.0, help="only events with ts >= this Unix time")
    a.add_argument("--model", dest="model_path", type=Path, default=None, help="the artifact the workers served")

    f = sub.add_parser("forget", help="erase a user (GDPR): state deleted, list tombstoned")
    f.add_argument("user_id")

    tl = sub.add_parser("tail", help="print recommendation lists as they arrive")
    tl.add_argument("--user", default=None, help="only this user id")
    tl.add_argument("--from-beginning", action="store_true")
    tl.add_argument("--idle", type=float, default=None, help="exit after this many idle seconds")

    add_bench_parser(sub)

    d = sub.add_parser("demo", help="broker + model + worker + replay, printing live lists and latency")
    d.add_argument("--events", type=int, default=2000, help="events to replay")
    d.add_argument("--rate", type=float, default=200.0, help="events per second")
    d.add_argument("--users", type=int, default=3, help="users whose lists are printed")
    return p


def _settings(args: argparse.Namespace, **more: Any) -> Settings:
    overrides = {name: getattr(args, name) for name in _GLOBAL_FLAGS} | more
    return load_settings(overrides)


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    action, nodes = args.action, args.nodes
    from stream.local.broker import local_kafka

    kafka = local_kafka(settings, nodes)
    if action == "start":
        seconds = kafka.start()
        print(f"Kafka ready at {kafka.bootstrap_servers} ({seconds:.1f} s)")
    elif action == "stop":
        kafka.stop()
        print("Kafka stopped")
    else:
        state = kafka.status()
        running = kafka.is_running()
        print(json.dumps({"running": running, "bootstrap_servers": kafka.bootstrap_servers,
                          "nodes": {str(k): v for k, v in state.items()}}))
        return 0 if running else 3
    return 0


def _options(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` flags as model-config fields; values are JSON (numbers) or else plain strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise StreamrecError(f"--option expects NAME=VALUE, got {pair!r}")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def _train(settings: Settings, args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from encoders.artifact import save_artifact
    from encoders.training.train import TrainConfig, train
    from stream.tools.datasets import item_texts, load_events

    torch.set_num_threads(args.threads)
    given = {"epochs": args.epochs, "lr": args.lr, "mix_fraction": args.mix_fraction}
    config = dataclasses.replace(TrainConfig(seed=args.seed, searches=args.searches, head_fraction=args.head_fraction,
                                             ranker=args.ranker), **{k: v for k, v in given.items() if v is not None})
    events = load_events(args.dataset, settings.data_dir)
    try:
        texts = item_texts(args.dataset, settings.data_dir) if args.item_text else {}
        result = train(events, cell=args.model, config=config, options=_options(args.option), item_texts=texts)
    except TypeError as exc:  # an --option that is not a field of the model's config
        raise StreamrecError(f"bad --option: {exc}") from None
    path = save_artifact(result.model, result.item_ids, result.metrics, args.dataset,
                         args.out or settings.home / "models", result.search_blend, result.live)
    validation = result.metrics["train"].get("mix", {}).get("validation")  # the mix, the model, item-kNN
    print(json.dumps({"artifact": str(path), "eval": result.metrics["eval"], "validation": validation}))
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import gc

    import faust
    from prometheus_client import CollectorRegistry, start_http_server

    from stream.kafka.app import create_app
    from stream.kafka.faust_options import freeze_heap
    from stream.kafka.topics import ensure_topics

    registry = CollectorRegistry()
    if settings.metrics_port:  # first: while Kafka, the model and the index load, a probe reads "not ready"
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    asyncio.run(ensure_topics(settings, timeout_s=None))  # a worker waits for Kafka rather than crash-looping
    worker = create_app(settings, registry)
    gc.callbacks.append(worker.metrics.gc_callback())
    log.info("%d objects moved out of the garbage collector's reach", freeze_heap())
    faust.Worker(worker.app, loglevel=settings.log_level.upper()).execute_from_commandline()
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from itertools import islice

    from stream.tools.datasets import load_events
    from stream.tools.replay import replay

    events = islice(load_events(args.dataset, settings.data_dir), args.skip, None)
    stats = asyncio.run(replay(settings, events, args.rate, args.limit))
    print(json.dumps({"sent": stats.sent, "by_type": stats.by_type, "seconds": round(stats.seconds, 2)}))
    return 0


def _items(settings: Settings, args: argparse.Namespace) -> int:
    from stream.core.schemas import ItemRecord
    from stream.kafka.publish import publish_items
    from stream.tools.datasets import load_catalog

    if args.items_action == "load":
        records = load_catalog(args.dataset, settings.data_dir)
    elif args.items_action == "set":
        records = [ItemRecord(args.item_id, title=args.title, category=args.category, price=args.price,
                              available=not args.unavailable)]
    else:
        records = [ItemRecord(args.item_id, deleted=True)]
    sent = asyncio.run(publish_items(settings, records))
    print(json.dumps({"items_sent": sent, "topic": settings.topic_items}))
    return 0


async def _tail(settings: Settings, user: str | None, from_beginning: bool, idle: float | None) -> None:
    from stream.kafka.consume import RecommendationReader

    reader = RecommendationReader(settings, from_beginning=from_beginning)
    await reader.start()
    try:
        async for rec, received in reader.records(idle):
            if user is None or rec.user_id == user:
                line = json.loads(rec.to_json())
                line["received_latency_ms"] = round((received - rec.event_ts) * 1000, 2)
                print(json.dumps(line), flush=True)
    finally:
        await reader.stop()


async def _forget(settings: Settings, user_id: str) -> int:
    import time
    import uuid

    from aiokafka import AIOKafkaProducer

    from stream.core.schemas import Erasure
    from stream.kafka.clients import client_options

    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        erasure = Erasure(user_id, time.time(), uuid.uuid4().hex)
        await producer.send_and_wait(settings.topic_erasures, erasure.to_json(), key=user_id.encode())
    finally:
        await producer.stop()
    print(json.dumps({"erasure_sent": erasure.event_id, "topic": settings.topic_erasures}))
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from stream.kafka.topics import ensure_topics

    print(json.dumps(asyncio.run(ensure_topics(settings))))
    return 0


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from stream.tools.report import evaluate_artifacts

    table = evaluate_artifacts(args.artifacts, settings.data_dir, args.out, max_events=args.max_events)
    print(json.dumps({"out": str(args.out), "metrics": table}))
    if args.diversity:
        from stream.tools.diversity_report import write_diversity_report

        strengths = [float(x) for x in args.diversity.split(",")]
        for path in args.artifacts:
            print(json.dumps({"diversity": write_diversity_report(path, settings.data_dir, strengths, args.out,
                                                                  max_events=args.max_events)}))
    if args.search:
        from stream.tools.search_report import evaluate_search

        for path in args.artifacts:
            result = evaluate_search(path, settings.data_dir, args.out)
            print(json.dumps({"search": {k: v for k, v in result.items() if k != "run"}}))
    if args.learning:
        from stream.tools.learning_report import add_online, evaluate_learning, learning_modes

        modes = learning_modes(args.learning)
        for path in args.artifacts:
            result = evaluate_learning(path, settings.data_dir, args.out, modes, max_events=args.max_events)
            if args.online:  # the same period through the broker and a worker, per mode, beside the offline one
                result = add_online(settings, path, args.out, modes, rate=args.rate, max_events=args.max_events)
            print(json.dumps({"learning": {k: v for k, v in result.items() if k != "run"}}))
        if args.online:
            return 0
    if args.online:
        from stream.tools.online_eval import evaluate_online, write_online_report

        runs = [evaluate_online(settings, path, rate=args.rate, max_events=args.max_events)
                for path in args.artifacts]
        print(json.dumps({"online": write_online_report(runs, args.out)}))
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from stream.tools.audit import audit

    print(json.dumps(asyncio.run(audit(settings, since=args.since)).summary()))
    return 0


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from stream.kafka.publish import publish_model

    release = asyncio.run(publish_model(settings, args.artifact, variant=args.variant))
    print(json.dumps({"published": release.version, "variant": release.variant, "path": release.path,
                      "topic": settings.topic_models}))
    return 0


def _forget_command(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_forget(settings, args.user_id))


def _tail_command(settings: Settings, args: argparse.Namespace) -> int:
    asyncio.run(_tail(settings, args.user, args.from_beginning, args.idle))
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from stream.tools.demo import run_demo

    return run_demo(settings, events=args.events, rate=args.rate, users=args.users)


# Each command's handler: (settings, parsed arguments) -> exit code. The heavy imports stay inside them, so
# `streamrec --help` and the client commands start without loading torch.
COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "broker": _broker,
    "topics": _topics,
    "train": _train,
    "evaluate": _evaluate,
    "worker": _worker,
    "publish": _publish,
    "items": _items,
    "replay": _replay,
    "audit": _audit,
    "forget": _forget_command,
    "tail": _tail_command,
    "bench": run_bench_command,
    "demo": _demo,
}
SERVICES = ("worker", "broker")  # commands that log at the configured level; the others print their results


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamrec`` console script."""
    args = _parser().parse_args(argv)
    try:
        extra = {"model_path": args.model_path} if args.command in ("worker", "audit") else {}
        settings = _settings(args, **extra)
        # The demo and the client commands print their own results; library chatter would drown them.
        logging.basicConfig(level=settings.log_level.upper() if args.command in SERVICES else "WARNING",
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return COMMANDS[args.command](settings, args)
    except StreamrecError as exc:
        print(f"streamrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
