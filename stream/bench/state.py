"""``streamrec bench state``: bytes per user in the state store, after a real dataset went through the data path.

Each user's movielens events are replayed in time order through :class:`stream.core.pipeline.Recommender` (the
worker's own data path, with the served model and its HNSW index) into a plain dict, so every state carries a
real vector, full history windows, event ids, input offsets and the last list. More users than the dataset has
replay real users' histories rotated, so no two states are copies. The states are then measured as the two
Faust stores keep them: ``memory://`` (a dict of bytes, measured with tracemalloc) and ``rocksdb://`` (rocksdict
with Faust's own options, measured as the SST bytes on disk after a flush and a full compaction).
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
import uuid
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from encoders.training.events import DatasetEvent
from stream.config import Settings
from stream.core.schemas import Event, Source
from stream.errors import InvalidEvent
from stream.tools.datasets import load_events

DATASET = "movielens"


def user_histories(events: list[DatasetEvent], users: int) -> dict[str, list[DatasetEvent]]:
    """``users`` event sequences: the dataset's users, then their histories rotated under new ids."""
    by_user: dict[str, list[DatasetEvent]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    real = list(by_user.values())
    out: dict[str, list[DatasetEvent]] = {}
    for n in range(users):
        history, cycle = real[n % len(real)], n // len(real)
        shift = (cycle * 7) % len(history)
        out[f"u{n}"] = history[shift:] + history[:shift]
    return out


def replay_states(settings: Settings, artifact: Path, users: int) -> tuple[dict[str, bytes], int]:
    """The stored state of every user after the replay, and the number of events replayed."""
    from prometheus_client import CollectorRegistry

    from encoders.artifact import load_artifact
    from encoders.serving import UserEncoder
    from index.hnsw import HnswIndex
    from stream.core.catalog import Catalog
    from stream.core.indexed_model import IndexedModel
    from stream.core.metrics import Metrics
    from stream.core.pipeline import Arm, Recommender
    from stream.core.trending import Trending
    from stream.core.variants import DEFAULT, Assignment
    from stream.kafka.loading import rules_for

    encoder = UserEncoder(load_artifact(artifact))
    index = HnswIndex(encoder.dim, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                      ef=settings.hnsw_ef, capacity=len(encoder.item_ids))  # as the worker serves
    index.add(encoder.item_ids, encoder.item_vectors())
    recommender = Recommender([Arm(DEFAULT, IndexedModel(encoder, index), rules_for(settings))],
                              Assignment.everyone(), Catalog(), Trending(3600.0),
                              Metrics(CollectorRegistry()))
    states: dict[str, bytes] = {}
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    replayed = 0
    for user, history in user_histories(load_events(DATASET, settings.data_dir), users).items():
        partition = zlib.crc32(user.encode()) % settings.partitions
        for e in history:
            topic = settings.input_topics[e.type]
            offset = offsets[topic, partition]
            offsets[topic, partition] += 1
            wire = Event(e.type, user, e.ts, uuid.uuid4().hex, item_id=e.item_id, query=e.query,
                         quantity=e.quantity, price=e.price)  # a fresh 32-hex event id, as replay sends
            outcome = recommender.process(e.type, wire.to_json(), user.encode(), Source(topic, partition, offset),
                                         states)
            if outcome.dead_letter:
                raise InvalidEvent(outcome.reason or "", "the replay produced a dead letter")
            replayed += 1
    return states, replayed


def memory_bytes(states: dict[str, bytes]) -> int:
    """Bytes the ``memory://`` store holds for these states: a dict of key bytes -> value bytes."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = {k.encode(): bytes(bytearray(v)) for k, v in states.items()}
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del store
    return used


def rocksdb_bytes(states: dict[str, bytes]) -> int:
    """SST bytes of a RocksDB holding these states, opened with Faust's options, after a full compaction."""
    from faust.stores.rocksdb import RocksDBOptions
    from rocksdict import Rdict

    with tempfile.TemporaryDirectory(prefix="streamrec-bench-state-") as folder:
        db = Rdict(folder, options=RocksDBOptions().as_options())
        for key, value in states.items():
            db[key.encode()] = value
        db.flush()
        db.compact_range(None, None)
        db.close()
        return sum(p.stat().st_size for p in Path(folder).glob("*.sst"))


def bench_state(settings: Settings, artifact: Path, users: int) -> dict[str, Any]:
    """Replay, then measure; the one JSON object ``bench state`` prints."""
    started = time.perf_counter()
    states, replayed = replay_states(settings, artifact, users)
    sizes = np.array([len(k.encode()) + len(v) for k, v in states.items()])
    values = np.array([len(v) for v in states.values()])
    n = len(states)
    return {
        "users": n, "events_replayed": replayed, "model": artifact.name,
        "state_value_bytes_mean": round(float(values.mean()), 1),
        "state_value_bytes_p50": int(np.percentile(values, 50)),
        "state_value_bytes_p95": int(np.percentile(values, 95)),
        "state_value_bytes_max": int(values.max()),
        "key_plus_value_bytes_per_user": round(float(sizes.mean()), 1),
        "memory_bytes_per_user": round(memory_bytes(states) / n, 1),
        "rocksdb_bytes_per_user": round(rocksdb_bytes(states) / n, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
