"""``streamrec bench ...``: the benchmark subcommands (each prints JSON lines) and their arguments."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from stream.config import Settings


def add_bench_parser(sub: Any) -> None:
    """Add ``bench`` and its subcommands to the CLI's subparsers."""
    bench = sub.add_parser("bench", help="benchmarks that print JSON lines")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    bi = bench_sub.add_parser("index", help="HNSW vs brute force: build time, bytes/item, recall@10, QPS")
    bi.add_argument("--items", type=int, default=100_000)
    bi.add_argument("--dim", type=int, default=64)
    bi.add_argument("--queries", type=int, default=500)
    bi.add_argument("--build-threads", type=int, default=1, help="threads for the HNSW build (queries: 1)")
    be = bench_sub.add_parser("encoders", help="CPU per user-event of the GRU/LSTM step; text-encoder queries/s")
    be.add_argument("--dataset", default="movielens", choices=["movielens"],
                    help="events stepped through the models; its tags are the text queries")
    be.add_argument("--events", type=int, default=2000, help="latest events of the dataset to step through")
    be.add_argument("--batch", type=int, default=256, help="users stepped per call in the batched measurement")
    be.add_argument("--queries", type=int, default=500, help="distinct tags encoded by the text encoder")
    bp = bench_sub.add_parser("pipeline", help="worker latency, saturation rate and CPU vs bare Faust and aiokafka")
    bp.add_argument("--rate", type=float, default=1000.0, help="events/s of the fixed-rate latency run")
    bp.add_argument("--duration", type=float, default=30.0, help="seconds of the fixed-rate run")
    bp.add_argument("--users", type=int, default=610, help="distinct user ids (movielens has 610)")
    bp.add_argument("--model", default="gru", choices=["gru", "lstm", "sasrec"], help="artifact type served")
    bp.add_argument("--search-share", type=float, default=0.1, help="share of search events (movielens tags)")
    bp.add_argument("--artifact", type=Path, default=None,
                    help="model artifact (default: newest of --model in <home>/models, else train one)")
    bp.add_argument("--step", type=float, default=6.0, help="seconds per step of the saturation ramp")
    bp.add_argument("--ramp", default=None, help="comma-separated rates of the ramp (default 250..12000)")
    bp.add_argument("--no-baselines", action="store_true", help="skip the bare Faust and aiokafka ramps")
    bp.add_argument("--profile", type=Path, default=None,
                    help="py-spy the worker during the fixed-rate run; collapsed stacks to this file")
    ba = bench_sub.add_parser("api", help="HTTP API latency while events flow, half the requests routed")
    ba.add_argument("--events-rate", type=float, default=300.0, help="events/s fed throughout")
    ba.add_argument("--http-rates", default="200,1000", help="comma-separated requests/s of the HTTP steps")
    ba.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    ba.add_argument("--artifact", type=Path, default=None,
                    help="model artifact (default: newest GRU in <home>/models, else train one)")
    bs = bench_sub.add_parser("state", help="bytes per user in the state store (memory and RocksDB)")
    bs.add_argument("--users", type=int, default=610, help="users replayed (movielens has 610; more rotate them)")
    bs.add_argument("--artifact", type=Path, default=None,
                    help="model artifact (default: newest GRU in <home>/models, else train one)")

    bl = bench_sub.add_parser("learning", help="seconds until a new item reaches other users' lists; bytes/item")
    bl.add_argument("--rate", type=float, default=200.0, help="events/s of the replayed period after the cutoff")
    bl.add_argument("--duration", type=float, default=60.0, help="seconds of replay")
    bl.add_argument("--artifact", type=Path, default=None, help="model artifact (default: newest in <home>/models)")
    br = bench_sub.add_parser("rerank", help="CPU per event of the data path with/without explanations, diversity")
    br.add_argument("--model", dest="model_path", type=Path, default=None, help="artifact (default: newest)")
    br.add_argument("--dataset", default="movielens", choices=["movielens", "yoochoose", "diginetica"])
    br.add_argument("--events", type=int, default=3000, help="latest events of the dataset to replay")


def run_bench_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen benchmark and print its rows."""
    if args.bench == "rerank":
        from stream.bench.rerank import bench_learning_cost, bench_rerank

        model = args.model_path or settings.home / "models"
        for row in bench_rerank(settings, model, args.dataset, args.events):
            print(json.dumps(row), flush=True)
        for row in bench_learning_cost(settings, model, args.dataset, args.events):
            print(json.dumps(row), flush=True)
        return 0
    if args.bench == "pipeline":
        return _bench_pipeline(settings, args)
    if args.bench == "api":
        return _bench_api(settings, args)
    if args.bench == "learning":
        return _bench_learning(settings, args)
    if args.bench == "state":
        from stream.bench.pipeline import BenchConfig, find_model
        from stream.bench.state import bench_state

        model = find_model(settings, BenchConfig(artifact=args.artifact))
        print(json.dumps(bench_state(settings, model, args.users)), flush=True)
        return 0
    if args.bench == "encoders":
        import torch

        from stream.bench.encoders import bench_encoders

        torch.set_num_threads(settings.torch_threads)  # as a worker runs: one thread unless configured

        for row in bench_encoders(args.dataset, settings.data_dir, events=args.events, batch=args.batch,
                                  queries=args.queries):
            print(json.dumps(row), flush=True)
        return 0
    if args.bench == "index":
        from stream.bench.index import bench_index

        for row in bench_index(args.items, args.dim, queries=args.queries, m=settings.hnsw_m,
                               ef_construction=settings.hnsw_ef_construction, ef=settings.hnsw_ef,
                               build_threads=args.build_threads):
            print(json.dumps(row), flush=True)
        return 0
    raise AssertionError(f"unknown bench {args.bench!r}")


def _bench_pipeline(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from stream.bench.pipeline import DEFAULT_RAMP, BenchConfig, run_bench

    ramp = tuple(float(r) for r in args.ramp.split(",")) if args.ramp else DEFAULT_RAMP
    config = BenchConfig(rate=args.rate, duration_s=args.duration, users=args.users, model=args.model,
                         search_share=args.search_share, step_s=args.step, ramp=ramp,
                         baselines=not args.no_baselines, artifact=args.artifact,
                         profile=args.profile)
    # Topics made a moment ago answer NotLeaderForPartition until their leaders settle; aiokafka retries, but
    # logs each try on stderr.
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)
    # Without a broker named on the command line or in the environment, the benchmark runs its own on free ports.
    own = args.bootstrap_servers is None and "STREAMREC_BOOTSTRAP_SERVERS" not in os.environ
    print(json.dumps(run_bench(settings, config, own_broker=own)), flush=True)
    return 0


def _bench_api(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from stream.bench.api import ApiBenchConfig, run_api_bench

    config = ApiBenchConfig(events_rate=args.events_rate, duration_s=args.duration, artifact=args.artifact,
                            http_rates=tuple(float(r) for r in args.http_rates.split(",")))
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)
    own = args.bootstrap_servers is None and "STREAMREC_BOOTSTRAP_SERVERS" not in os.environ
    for row in run_api_bench(settings, config, own_broker=own):
        print(json.dumps(row), flush=True)
    return 0


def _bench_learning(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from stream.bench.learning import LearningBenchConfig, bench_learning

    config = LearningBenchConfig(rate=args.rate, duration_s=args.duration, artifact=args.artifact)
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.ERROR)
    own = args.bootstrap_servers is None and "STREAMREC_BOOTSTRAP_SERVERS" not in os.environ
    print(json.dumps(bench_learning(settings, config, own_broker=own)), flush=True)
    return 0
