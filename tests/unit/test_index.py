"""HnswIndex against the brute-force oracle: recall, exclusions, deletes, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.brute import BruteForceIndex
from index.hnsw import HnswIndex
from stream.bench.index import bench_index, clustered_vectors


def test_hnsw_recall_at_10_vs_brute_force() -> None:
    vectors = clustered_vectors(5000, 32)
    ids = [f"i{n}" for n in range(len(vectors))]
    hnsw, brute = HnswIndex(32, capacity=100), BruteForceIndex(32)  # capacity 100 forces growth
    hnsw.add(ids, vectors)
    brute.add(ids, vectors)
    queries = clustered_vectors(200, 32, seed=1)
    hits = sum(len({i for i, _ in hnsw.search(q, 10)} & {i for i, _ in brute.search(q, 10)}) for q in queries)
    assert hits / (10 * len(queries)) >= 0.98


def test_exclusions_still_fill_k() -> None:
    vectors = clustered_vectors(500, 16)
    ids = [str(n) for n in range(500)]
    index = HnswIndex(16)
    index.add(ids, vectors)
    top = [i for i, _ in index.search(vectors[0], 50)]
    got = index.search(vectors[0], 10, exclude=set(top[:40]))
    assert len(got) == 10 and not {i for i, _ in got} & set(top[:40])
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    many = {i for i, _ in index.search(vectors[0], 400)[:300]}  # past the threshold: the filter-callable path
    got = index.search(vectors[0], 10, exclude=many)
    assert len(got) == 10 and not {i for i, _ in got} & many
    assert len(index.search(vectors[0], 10, exclude=set(ids[5:]))) == 5  # only five items left
    far = {i for i, _ in index.search(vectors[0], 500)[-150:]}  # many, but none near: the over-fetch suffices
    assert index.search(vectors[0], 10, exclude=far) == index.search(vectors[0], 10)
    brute = BruteForceIndex(16)
    brute.add(ids, vectors)
    expected = [i for i, _ in brute.search(vectors[0], 10, exclude=many)]
    assert len({i for i, _ in index.search(vectors[0], 10, exclude=many)} & set(expected)) >= 9


def test_remove_replace_and_round_trip(tmp_path: Path) -> None:
    vectors = clustered_vectors(300, 8)
    ids = [str(n) for n in range(300)]
    for index in (HnswIndex(8), BruteForceIndex(8)):
        index.add(ids, vectors)
        index.remove(["0", "1", "missing"])
        assert len(index) == 298
        assert "0" not in {i for i, _ in index.search(vectors[0], 20)}
        index.add(["2"], np.full((1, 8), 100, np.float32))  # replace: now the best match for positive queries
        assert index.search(np.ones(8, np.float32), 1)[0][0] == "2"
    hnsw = HnswIndex(8)
    hnsw.add(ids, vectors)
    hnsw.remove(["5"])
    hnsw.save(tmp_path / "h")
    loaded = HnswIndex.load(tmp_path / "h")
    assert len(loaded) == 299
    assert loaded.search(vectors[7], 5) == hnsw.search(vectors[7], 5)
    brute = BruteForceIndex(8)
    brute.add(ids, vectors)
    brute.save(tmp_path / "b")
    assert BruteForceIndex.load(tmp_path / "b").search(vectors[3], 5) == brute.search(vectors[3], 5)


def test_bench_index_reports_both_implementations() -> None:
    rows = bench_index(items=2000, dim=16, queries=50)
    assert [r["impl"] for r in rows] == ["brute", "hnsw"]
    brute, hnsw = rows
    assert brute["recall_at_10"] == 1.0 and hnsw["recall_at_10"] >= 0.95
    assert all(r["qps"] > 0 and r["bytes_per_item"] > 16 * 4 for r in rows)
