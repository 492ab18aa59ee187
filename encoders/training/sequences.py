"""Turn time-ordered dataset events into per-user integer sequences the models train and evaluate on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from encoders.models.inputs import TYPE_IDS, query_tokens
from encoders.training.events import DatasetEvent
from stream.errors import ConfigError, TrainingError


@dataclass
class UserSequence:
    """One user's events as arrays: item index (0 = none/unknown), type id, query tokens (T, Q), ts, and the
    row of each event's query in a query text table (0 = none; None without a table)."""

    items: np.ndarray
    types: np.ndarray
    tokens: np.ndarray
    ts: np.ndarray
    queries: np.ndarray | None = None
    search_targets: np.ndarray | None = None  # per event: the row a search was for (0 = none or unknown)
    # ``items`` with each item outside the vocabulary numbered too (rows after the vocabulary's, in order of
    # first appearance): what a worker learning from the stream tells apart (streaming_eval.py).
    live_items: np.ndarray | None = None


def temporal_cutoff(events: Sequence[DatasetEvent], test_fraction: float) -> float:
    """The timestamp from which on events are held out: the latest ``test_fraction`` of all events."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError("test_fraction", "must be in (0, 1)")
    stamps = np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events))
    return float(np.quantile(stamps, 1.0 - test_fraction))


def build_vocabulary(events: Sequence[DatasetEvent], cutoff: float, min_count: int = 1) -> list[str]:
    """Item ids seen before the cutoff, most frequent first; index i in the list is model row i + 1."""
    counts = Counter(e.item_id for e in events if e.ts < cutoff and e.item_id is not None)
    return [item for item, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


def build_sequences(events: Sequence[DatasetEvent], vocabulary: Sequence[str], query_buckets: int,
                    max_query_tokens: int, query_rows: dict[str, int] | None = None) -> dict[str, UserSequence]:
    """Group events by user (keeping time order) and encode them with the vocabulary (and the query rows of
    a text table)."""
    index = {item: n for n, item in enumerate(vocabulary, 1)}
    live = dict(index)
    for e in events:  # time order: later rows for later newcomers
        if e.item_id and e.item_id not in live:
            live[e.item_id] = len(live) + 1
    rows: dict[str, list[DatasetEvent]] = {}
    for e in events:
        rows.setdefault(e.user_id, []).append(e)
    no_tokens = [0] * max_query_tokens
    out: dict[str, UserSequence] = {}
    for user, evs in rows.items():
        out[user] = UserSequence(
            items=np.array([index.get(e.item_id, 0) if e.item_id else 0 for e in evs], dtype=np.int64),
            types=np.array([TYPE_IDS[e.type] for e in evs], dtype=np.int64),
            tokens=np.array([query_tokens(e.query, query_buckets, max_query_tokens) if e.query else no_tokens
                             for e in evs], dtype=np.int64).reshape(len(evs), max_query_tokens),
            ts=np.array([e.ts for e in evs], dtype=np.float64),
            queries=None if query_rows is None else np.array(
                [query_rows.get(e.query, 0) if e.query else 0 for e in evs], dtype=np.int64),
            search_targets=np.array([index.get(e.target, 0) if e.target else 0 for e in evs], dtype=np.int64),
            live_items=np.array([live[e.item_id] if e.item_id else 0 for e in evs], dtype=np.int64),
        )
    return out


def training_windows(sequences: dict[str, UserSequence], cutoff: float, window: int,
                     since: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-length windows of the pre-cutoff events: inputs (N, W), types, tokens (N, W, Q), targets (N, W),
    query rows (N, W).

    The target at step t is the item of event t + 1 (0 where that event is a search or unknown, or, with
    ``since``, earlier than ``since``: the earlier events are then history only; windows without a target
    are left out).
    """
    items, types, tokens, targets, queries = [], [], [], [], []
    for seq in sequences.values():
        n = int(np.searchsorted(seq.ts, cutoff, side="left"))  # events before the cutoff
        for start in range(0, max(n - 1, 0), window):
            stop = min(start + window, n - 1)
            length = stop - start
            pad = window - length
            target = seq.items[start + 1:stop + 1]
            if since is not None:
                target = np.where(seq.ts[start + 1:stop + 1] >= since, target, 0)
                if not target.any():
                    continue
            items.append(np.pad(seq.items[start:stop], (0, pad)))
            types.append(np.pad(seq.types[start:stop], (0, pad)))
            tokens.append(np.pad(seq.tokens[start:stop], ((0, pad), (0, 0))))
            targets.append(np.pad(target, (0, pad)))
            rows = seq.queries[start:stop] if seq.queries is not None else np.zeros(length, np.int64)
            queries.append(np.pad(rows, (0, pad)))
    if not items:
        raise TrainingError("no training windows: every user has fewer than two events before the cutoff")
    return np.stack(items), np.stack(types), np.stack(tokens), np.stack(targets), np.stack(queries)
