"""`streamrec bench encoders`: CPU cost of the serving step of each user encoder, and text-encoder throughput.

The models are untrained (default configs, seeded weights): the cost of a step does not depend on what the
weights learned. The batched states are first filled with a window of events, so SASRec recomputes full
windows (its worst case). Their inputs are a real dataset's events in time order, so searches
(hashed query tokens) come in their real proportion. ``us_per_event`` is CPU time (``time.process_time``, all
threads of the process) per user-event of ``step`` + ``query``; ``wall_us_per_event`` is the elapsed time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.models.gru import NumpyRecurrentStep, RecurrentConfig, RecurrentModel
from encoders.models.inputs import TYPE_IDS, query_tokens
from encoders.models.registry import build_model
from encoders.models.transformer import NumpySasrecStep, SasrecModel
from encoders.text import TextEncoder
from encoders.training.events import DatasetEvent
from stream.errors import ConfigError
from stream.tools.datasets import load_events

TARGET_US = 50.0  # the serving budget: a GRU or SASRec step costs at most this much CPU per user at batch 256
N_ITEMS = 10_000  # vocabulary of the benchmarked models (movielens_latest_small has ~9.7k movies)


class StepInputs:
    """A dataset's events as model inputs: rows (N,), types (N,), hashed query tokens (N, Q)."""

    def __init__(self, events: Sequence[DatasetEvent], config: RecurrentConfig) -> None:
        rows: dict[str, int] = {}
        for e in events:  # items in order of first appearance; those past the vocabulary are unknown (row 0)
            if e.item_id is not None and e.item_id not in rows and len(rows) < config.n_items:
                rows[e.item_id] = len(rows) + 1
        self.rows = np.array([rows.get(e.item_id, 0) if e.item_id else 0 for e in events], dtype=np.int64)
        self.types = np.array([TYPE_IDS[e.type] for e in events], dtype=np.int64)
        self.tokens = np.array([query_tokens(e.query or "", config.query_buckets, config.max_query_tokens)
                                for e in events], dtype=np.int64).reshape(len(events), config.max_query_tokens)

    def __len__(self) -> int:
        return len(self.rows)


def _timed(run: Callable[[], None]) -> tuple[float, float]:
    """CPU and wall seconds of one call of ``run``."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def _row(model: str, impl: str, batch: int, user_events: int, cpu: float, wall: float) -> dict[str, Any]:
    return {"bench": "encoders", "model": model, "impl": impl, "batch": batch, "events": user_events,
            "us_per_event": round(cpu / user_events * 1e6, 2),
            "wall_us_per_event": round(wall / user_events * 1e6, 2)}


def bench_recurrent(cell: str, inputs: StepInputs, batch: int = 256, n_items: int = N_ITEMS,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Per user-event cost of step + query: numpy at batch 1 (one call per event) and at ``batch`` (one call
    stepping ``batch`` users, repeated over the events), and, for recurrent models only, the worker's step of
    an event without text at batch 1 (tabled input gates, all events taken as text-free) and torch's
    ``RecurrentModel.step`` at batch 1."""
    torch.manual_seed(seed)
    model = build_model(cell, n_items).eval()
    fast = NumpySasrecStep(model) if isinstance(model, SasrecModel) else NumpyRecurrentStep(model)
    n = len(inputs)
    rows, types, tokens = inputs.rows, inputs.types, inputs.tokens

    # Each runner takes how many of its calls to make: all of them measured, a few as warm-up.
    def numpy_single(count: int) -> None:
        state = np.zeros((1, fast.state_size), dtype=np.float32)
        for i in range(count):
            state = fast.step(state, rows[i:i + 1], types[i:i + 1], tokens[i:i + 1])
            fast.query(state)

    # Each batched call steps `batch` users by one event: consecutive events, cycling through the stream.
    calls = max(1, -(-n // batch))
    picks = [np.arange(c * batch, (c + 1) * batch) % n for c in range(calls)]
    batches = [(rows[p], types[p], tokens[p]) for p in picks]
    states = np.zeros((batch, fast.state_size), dtype=np.float32)
    for b_rows, b_types, b_tokens in (batches * 64)[:64]:  # full windows for SASRec
        states = fast.step(states, b_rows, b_types, b_tokens)

    def numpy_batched(count: int) -> None:
        for b_rows, b_types, b_tokens in batches[:count]:
            fast.query(fast.step(states, b_rows, b_types, b_tokens))

    plain = [(int(r), int(t)) for r, t in zip(rows.tolist(), types.tolist(), strict=True)]

    def numpy_tabled(count: int) -> None:  # the worker's step for an event without text (clicks, purchases)
        assert isinstance(fast, NumpyRecurrentStep)
        state = np.zeros(fast.state_size, dtype=np.float32)
        for row, type_id in plain[:count]:
            state = fast.step_plain(state, row, type_id)
            fast.query(state[None])

    items_t, types_t, tokens_t = torch.from_numpy(rows), torch.from_numpy(types), torch.from_numpy(tokens)

    def torch_single(count: int) -> None:
        assert isinstance(model, RecurrentModel)
        with torch.inference_mode():
            state = model.initial_state(1)
            for i in range(count):
                state = model.step(state, items_t[i:i + 1], types_t[i:i + 1], tokens_t[i:i + 1])
                model.query(state)

    results = []
    runs: list[tuple[str, int, Callable[[int], None], int]] = [
        ("numpy", 1, numpy_single, n), ("numpy", batch, numpy_batched, calls)]
    if isinstance(model, RecurrentModel):
        runs.append(("numpy_tabled_gates", 1, numpy_tabled, n))
        runs.append(("torch", 1, torch_single, n))
    for impl, size, run, count in runs:
        run(min(count, 10))  # warm-up: first-call allocations and lazy initialisation are not the steady state
        cpu, wall = _timed(functools.partial(run, count))
        row = _row(cell, impl, size, count * size, cpu, wall)
        if impl == "torch":
            row["torch_threads"] = torch.get_num_threads()
        if cell in ("gru", "sasrec") and impl == "numpy" and size > 1:
            row["target_us_per_event"] = TARGET_US
            row["target_met"] = row["us_per_event"] <= TARGET_US
        results.append(row)
    return results


def unique_queries(events: Sequence[DatasetEvent], limit: int) -> list[str]:
    """The first ``limit`` distinct search queries of a dataset, in time order."""
    seen: dict[str, None] = {}
    for e in events:
        if e.query and e.query not in seen:
            seen[e.query] = None
            if len(seen) == limit:
                break
    return list(seen)


def bench_text(encoder: TextEncoder, queries: Sequence[str], repeats: int = 10) -> list[dict[str, Any]]:
    """Queries per second of the text encoder: unique queries batched (``encode``) and one at a time through
    an empty cache (``encode_one``, all misses), then repeated queries answered from the cache (all hits)."""
    n = len(queries)
    encoder.encode(list(queries[:encoder.batch_size]))  # warm-up

    def batched() -> None:
        encoder.encode(queries)

    def uncached() -> None:
        for q in queries:
            encoder.encode_one(q)

    def cached() -> None:
        for _ in range(repeats):
            for q in queries:
                encoder.encode_one(q)

    results = []
    encoder.cache_clear()
    for mode, run, count in (("batched", batched, n), ("single_uncached", uncached, n),
                             ("single_cached", cached, n * repeats)):
        cpu, wall = _timed(run)
        results.append({"bench": "encoders", "model": "text", "mode": mode, "queries": count,
                        "queries_per_s": round(count / wall, 1), "queries_per_cpu_s": round(count / cpu, 1),
                        "torch_threads": torch.get_num_threads()})
    info = encoder.cache_info()
    results[-1] |= {"cache_hits": info.hits, "cache_misses": info.misses}
    return results


def bench_encoders(dataset: str, data_dir: Path, events: int = 2000, batch: int = 256,
                   queries: int = 500) -> Iterator[dict[str, Any]]:
    """Every measurement of ``streamrec bench encoders``, one dict each, as they finish.

    The recurrent models step through the latest ``events`` events (the later period, where MovieLens users
    tag and so search); the text encoder gets the first ``queries`` distinct tags.
    """
    for name, value in (("events", events), ("batch", batch), ("queries", queries)):
        if value < 1:
            raise ConfigError(name, f"must be >= 1, got {value}")
    stream = load_events(dataset, data_dir)
    inputs = StepInputs(stream[-events:], RecurrentConfig(n_items=N_ITEMS))
    for cell in ("gru", "lstm", "sasrec"):
        yield from bench_recurrent(cell, inputs, batch=batch)
    started = time.perf_counter()
    encoder = TextEncoder()
    yield {"bench": "encoders", "model": "text", "mode": "load", "seconds": round(time.perf_counter() - started, 2)}
    yield from bench_text(encoder, unique_queries(stream, queries))
