"""The item index protocol: exact (brute force) and approximate (HNSW) implementations share it.

Scores are inner products (higher is better). Items are keyed by their external string id; each
implementation owns its id <-> row mapping.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class ItemIndex(Protocol):
    """What the pipeline needs from an item index."""

    dim: int

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace items; vectors is (N, dim) float32."""

    def remove(self, ids: Sequence[str]) -> None:
        """Drop items; unknown ids are ignored."""

    def search(self, query: np.ndarray, k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """Up to k (id, score) pairs, best first, never an excluded id."""

    def save(self, path: Path) -> None:
        """Write the index (and its id map) into the folder ``path``."""

    def __len__(self) -> int:
        """Items currently searchable."""

    def __contains__(self, item_id: object) -> bool:
        """Whether an item is currently searchable."""
