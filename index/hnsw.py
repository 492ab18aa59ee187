"""Approximate inner-product search on hnswlib, with the external id <-> label map it needs.

Parameters (see hnswlib's ALGO_PARAMS.md):
* ``m``: links per node. Higher raises recall and memory (~ m * 2 * 4 bytes per item) and build time.
* ``ef_construction``: beam width while inserting. Higher builds a better graph, more slowly.
* ``ef``: beam width while searching, at least the number of candidates asked for. Higher raises recall
  and query time; this wrapper raises it per query when more candidates are needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Sequence
from pathlib import Path

import hnswlib
import numpy as np

from stream.errors import SearchError

# Up to this many excluded items, over-fetch k + excluded; above it, over-fetch OVERFETCH x k and fall back to a
# filter callable when too few allowed items come back.
FILTER_THRESHOLD = 100
OVERFETCH = 4


class HnswIndex:
    """HNSW over item vectors; thread-safe; grows as items arrive; deletes by marking."""

    def __init__(self, dim: int, m: int = 16, ef_construction: int = 200, ef: int = 100,
                 capacity: int = 1024, seed: int = 100, build_threads: int = 1) -> None:
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef = ef
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(max_elements=max(capacity, 16), M=m, ef_construction=ef_construction,
                               random_seed=seed, allow_replace_deleted=True)
        self._index.set_ef(ef)
        # One thread gives deterministic builds (workers and tests); benchmarks of big builds may use more.
        self._index.set_num_threads(build_threads)
        self._labels: dict[str, int] = {}  # external id -> hnsw label (live items only)
        self._ids: dict[int, str] = {}  # hnsw label -> external id (live items only)
        # The same as an array by label (None: a deleted label): a search turns its labels into ids in one
        # fancy index rather than a dict lookup per result.
        self._names = np.full(max(capacity, 16), None, dtype=object)
        self._next_label = 0
        self._lock = threading.Lock()

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace items; grows capacity by doubling when full."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._lock:
            labels = []
            for item in ids:
                label = self._labels.get(item)
                if label is None:
                    label = self._next_label
                    self._next_label += 1
                    self._labels[item] = label
                    self._ids[label] = item
                labels.append(label)
            self._name_labels(ids, labels)
            needed = self._index.get_current_count() + len(ids)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            self._index.add_items(vectors, np.asarray(labels, dtype=np.int64))

    def remove(self, ids: Sequence[str]) -> None:
        """Mark items deleted so no search returns them; unknown ids are ignored."""
        with self._lock:
            for item in ids:
                label = self._labels.pop(item, None)
                if label is not None:
                    del self._ids[label]
                    self._names[label] = None
                    self._index.mark_deleted(label)

    def search(self, query: np.ndarray, k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """Top-k by inner product, never an excluded id.

        Few exclusions: over-fetch k + excluded and drop them. Many (a long purchase history): over-fetch
        ``OVERFETCH`` x k first, which leaves k allowed items for nearly every user (the excluded items are
        rarely all among the nearest); only when it does not, search again with hnswlib's filter callable
        (a Python call per visited node, so slower; docs/benchmarks.md).
        """
        q = np.asarray(query, np.float32).reshape(1, self.dim)
        if not isinstance(exclude, (set, frozenset, dict)):
            exclude = set(exclude)  # membership is tested per result
        with self._lock:
            live = len(self._labels)
            if live == 0:
                return []
            many = len(exclude) > FILTER_THRESHOLD
            fetch = min(k * OVERFETCH if many else k + len(exclude), live)
            self._index.set_ef(max(self.ef, fetch))
            labels, distances = self._index.knn_query(q, k=fetch)
            out = self._allowed(labels[0], distances[0], exclude, k)
            if len(out) < k and many and fetch < live:
                blocked = {self._labels[item] for item in exclude if item in self._labels}
                fetch = min(k, live - len(blocked))
                if fetch <= 0:
                    return []
                labels, distances = self._filtered_query(q, fetch, blocked, live)
                out = self._allowed(labels[0], distances[0], exclude, k)
        return out

    def _allowed(self, labels: np.ndarray, distances: np.ndarray, exclude: Collection[str],
                 k: int) -> list[tuple[str, float]]:
        """The first k live, non-excluded results as (id, inner product)."""
        names = self._names[labels].tolist()
        scores = (1.0 - distances).tolist()  # hnswlib's ip distance is 1 - <q, v>
        if not exclude and None not in names:  # the common case: hnswlib returns no deleted label
            return list(zip(names[:k], scores[:k], strict=True))
        out: list[tuple[str, float]] = []
        for item, score in zip(names, scores, strict=True):
            if item is None or item in exclude:
                continue
            out.append((item, score))
            if len(out) == k:
                break
        return out

    def _name_labels(self, ids: Sequence[str], labels: list[int]) -> None:
        """Record the ids of these labels in the by-label array, growing it by doubling."""
        top = max(labels, default=-1)
        if top >= self._names.size:
            grown = np.full(max(top + 1, 2 * self._names.size), None, dtype=object)
            grown[:self._names.size] = self._names
            self._names = grown
        for item, label in zip(ids, labels, strict=True):
            self._names[label] = item

    def _filtered_query(self, q: np.ndarray, k: int, blocked: set[int],
                        live: int) -> tuple[np.ndarray, np.ndarray]:
        """knn_query with a filter; when the beam finds fewer than k allowed items, widen it to all."""
        for ef in (max(self.ef, k), live):
            self._index.set_ef(ef)
            try:
                labels, distances = self._index.knn_query(q, k=k, filter=lambda label: label not in blocked)
                return labels, distances
            except RuntimeError:  # "Cannot return the results in a contiguous 2D array": too few found
                continue
        raise SearchError(f"HNSW search found fewer than {k} allowed items among {live}")

    def save(self, path: Path) -> None:
        """Write index.bin and meta.json (parameters and the id map) into the folder."""
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._index.save_index(str(path / "index.bin"))
            meta = {"dim": self.dim, "m": self.m, "ef_construction": self.ef_construction, "ef": self.ef,
                    "next_label": self._next_label, "labels": self._labels}
        (path / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        """Read an index written by :meth:`save`."""
        meta = json.loads((path / "meta.json").read_text())
        index = cls(meta["dim"], meta["m"], meta["ef_construction"], meta["ef"])
        index._index.load_index(str(path / "index.bin"), allow_replace_deleted=True)
        index._index.set_ef(index.ef)
        index._labels = {str(k): int(v) for k, v in meta["labels"].items()}
        index._ids = {v: k for k, v in index._labels.items()}
        index._name_labels(list(index._labels), list(index._labels.values()))
        index._next_label = int(meta["next_label"])
        return index

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels
