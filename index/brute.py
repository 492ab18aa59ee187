"""Exact inner-product search with numpy: the recall oracle, and fine for small catalogs."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np


class BruteForceIndex:
    """Scores every item for every query; O(N * dim) per search."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace items."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        new = [i for i in ids if i not in self._rows]
        if new:
            self._vectors = np.vstack([self._vectors, np.zeros((len(new), self.dim), np.float32)])
            for item in new:
                self._rows[item] = len(self._ids)
                self._ids.append(item)
        self._vectors[[self._rows[i] for i in ids]] = vectors

    def remove(self, ids: Sequence[str]) -> None:
        """Drop items; unknown ids are ignored."""
        gone = {i for i in ids if i in self._rows}
        if not gone:
            return
        keep = [n for n, item in enumerate(self._ids) if item not in gone]
        self._ids = [self._ids[n] for n in keep]
        self._vectors = self._vectors[keep]
        self._rows = {item: n for n, item in enumerate(self._ids)}

    def search(self, query: np.ndarray, k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """Exact top-k by inner product, skipping excluded ids."""
        if not self._ids:
            return []
        scores = self._vectors @ np.asarray(query, dtype=np.float32).reshape(self.dim)
        for item in exclude:
            row = self._rows.get(item)
            if row is not None:
                scores[row] = -np.inf
        take = min(k, len(self._ids))
        top = np.argpartition(-scores, take - 1)[:take]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self._ids[n], float(scores[n])) for n in top if np.isfinite(scores[n])]

    def save(self, path: Path) -> None:
        """Write vectors.npy and ids.json into the folder."""
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "vectors.npy", self._vectors)
        (path / "ids.json").write_text(json.dumps(self._ids))

    @classmethod
    def load(cls, path: Path) -> BruteForceIndex:
        """Read an index written by :meth:`save`."""
        vectors = np.load(path / "vectors.npy")
        index = cls(int(vectors.shape[1]))
        index.add(json.loads((path / "ids.json").read_text()), vectors)
        return index

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows
