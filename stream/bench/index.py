"""`streamrec bench index`: build time, memory, recall@10 against exact search, and single-thread QPS.

Vectors are structured (Gaussian clusters around shared centres), closer to learned embeddings than
uniform noise; queries come from the same distribution. Bytes per item are the saved index files
divided by the items (hnswlib keeps the same layout in memory).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from index.base import ItemIndex
from index.brute import BruteForceIndex
from index.hnsw import HnswIndex


def clustered_vectors(n: int, dim: int, seed: int = 0, clusters: int = 32) -> np.ndarray:
    """n vectors around ``clusters`` centres that are the same for every seed (so queries match the data)."""
    centres = np.random.default_rng(0).normal(size=(clusters, dim))
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def bench_index(items: int, dim: int, queries: int = 500, k: int = 10, seed: int = 1,
                m: int = 16, ef_construction: int = 200, ef: int = 100, build_threads: int = 1) -> list[dict[str, Any]]:
    """One result dict per implementation (hnsw, brute), measured on the same data and queries."""
    data = clustered_vectors(items, dim, seed=seed)
    ids = [str(n) for n in range(items)]
    probes = clustered_vectors(queries, dim, seed=seed + 1)
    indexes: list[tuple[str, ItemIndex]] = [
        ("brute", BruteForceIndex(dim)),
        ("hnsw", HnswIndex(dim, m=m, ef_construction=ef_construction, ef=ef, capacity=items,
                           build_threads=build_threads)),
    ]
    exact: list[set[str]] = []
    results = []
    for name, index in indexes:
        started = time.perf_counter()
        index.add(ids, data)
        build_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp))
            size = _folder_bytes(Path(tmp))
        started = time.perf_counter()
        found = [{i for i, _ in index.search(q, k)} for q in probes]
        seconds = time.perf_counter() - started
        if name == "brute":
            exact = found
        recall = sum(len(f & e) for f, e in zip(found, exact, strict=True)) / (k * queries)
        results.append({"impl": name, "items": items, "dim": dim, "build_s": round(build_s, 3),
                        "bytes_per_item": round(size / items, 1), "recall_at_10": round(recall, 4),
                        "qps": round(queries / seconds, 1)})
    return results
