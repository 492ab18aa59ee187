"""A model and the index of its item vectors, served as one unit: loaded, built and swapped together.

The index holds the model's items plus the catalog's items the model does not know (by their text vector,
when the model has a text path), minus whatever the catalog-wide filters leave out. A hot reload builds a
new IndexedModel from a copy of the catalog in a background thread, swaps it in between two events, and
then replays the catalog changes that arrived during the build.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from encoders.artifact import ModelArtifact
from encoders.serving import UserEncoder
from index.base import ItemIndex
from stream.core.catalog import Catalog
from stream.core.rerank import Filters

log = logging.getLogger(__name__)


@dataclass
class IndexedModel:
    """The encoder, its index, and the text vectors of catalog items the model has no embedding for."""

    encoder: UserEncoder
    index: ItemIndex
    artifact: ModelArtifact | None = None  # None: built in memory (tests, the audit)
    # Catalog items known by their text only: item -> (text, model vector, MiniLM vector when there is a
    # text index).
    text_vectors: dict[str, tuple[str, np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    # The items' MiniLM text vectors, searched by a search's query (hybrid retrieval): kept beside the item
    # index, item for item, for a model with an item tower and a search blend (None: searches use the model).
    text_index: ItemIndex | None = None

    def __post_init__(self) -> None:
        self._rows = {item: n for n, item in enumerate(self.encoder.item_ids)}
        # The model's item vectors plus a zero row at the end (row -1: an item the model does not know), raw
        # and unit length: lookups for explanations and diversity are then one fancy-index each.
        vectors = self.encoder.item_vectors()
        padded = np.vstack([vectors, np.zeros((1, vectors.shape[1]), np.float32)])
        norms = np.linalg.norm(padded, axis=1, keepdims=True)
        self._padded = padded
        self._unit = (padded / np.maximum(norms, 1e-9)).astype(np.float32)

    @property
    def version(self) -> str:
        """The model version lists carry."""
        return self.encoder.version

    def vectors_of(self, item_ids: list[str], unit: bool = False, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) vectors of these items as the index holds them (``unit``: scaled to length 1); zeros for
        an item the index does not know. ``rows``: their model rows, when the caller has them already."""
        rows = self.encoder.rows_of(item_ids) if rows is None else rows
        out: np.ndarray = (self._unit if unit else self._padded)[rows - 1]  # row 0 (unknown) -> the zero row
        if self.text_vectors:  # catalog items known by their text only
            for n in np.flatnonzero(rows == 0).tolist():
                cached = self.text_vectors.get(item_ids[n])
                if cached is not None:
                    vector = cached[1]
                    out[n] = vector / max(float(np.linalg.norm(vector)), 1e-9) if unit else vector
        return out

    def text_vectors_of(self, item_ids: list[str], rows: np.ndarray | None = None) -> np.ndarray:
        """(n, text_dim) MiniLM vectors of these items' texts; zeros for an item without one. ``rows``: their
        model rows, when the caller has them already."""
        table = self.encoder.item_text
        assert table is not None, "a model without an item tower has no item texts"
        rows = self.encoder.rows_of(item_ids) if rows is None else rows
        out: np.ndarray = table[rows]  # row 0 is zero: items the model does not know, unless the catalog's
        if self.text_vectors:
            for n in np.flatnonzero(rows == 0).tolist():
                cached = self.text_vectors.get(item_ids[n])
                if cached is not None and cached[2] is not None:
                    out[n] = cached[2]
        return out

    def unit_vectors_of(self, item_ids: list[str]) -> np.ndarray:
        """:meth:`vectors_of` scaled to unit length (cosine similarities are then inner products)."""
        return self.vectors_of(item_ids, unit=True)

    def info(self) -> dict[str, str]:
        """The labels of the ``streamrec_model`` info metric."""
        return {"version": self.version, "dataset": self.artifact.dataset if self.artifact else "",
                "cell": self.encoder.model_type}

    def sync(self, item_ids: Iterable[str], catalog: Catalog, filters: Filters) -> int:
        """Bring the index in line with the catalog for these items; returns how many were added."""
        add_ids: list[str] = []
        add_vectors: list[np.ndarray] = []
        remove: list[str] = []
        texts = self.encoder.item_text if self.text_index is not None else None
        text_ids: list[str] = []
        text_add: list[np.ndarray] = []
        for item_id in item_ids:
            entry = catalog.get(item_id)
            if not filters.admits(entry, catalog.was_deleted(item_id)):
                remove.append(item_id)
                continue
            row = self._rows.get(item_id)
            if row is not None:
                if item_id not in self.index:
                    add_ids.append(item_id)
                    add_vectors.append(self._padded[row])
                    if texts is not None and texts[row + 1].any():  # an item without a title has no text vector
                        text_ids.append(item_id)
                        text_add.append(texts[row + 1])
                continue
            text = entry.text if entry is not None else None
            cached = self.text_vectors.get(item_id)
            if text is None:
                remove.append(item_id)
            elif cached is not None and cached[0] == text:
                if item_id not in self.index:
                    add_ids.append(item_id)
                    add_vectors.append(cached[1])
                    if cached[2] is not None and texts is not None:
                        text_ids.append(item_id)
                        text_add.append(cached[2])
            else:
                vector = self.encoder.text_item_vector(text)
                if vector is None:  # the model has no text path: the item waits for a model that knows it
                    remove.append(item_id)
                    continue
                raw = self.encoder.text_vector(text) if texts is not None else None  # cached: no second forward
                self.text_vectors[item_id] = (text, vector, raw)
                add_ids.append(item_id)
                add_vectors.append(vector)
                if raw is not None:
                    text_ids.append(item_id)
                    text_add.append(raw)
        if remove:
            self.index.remove(remove)
            if self.text_index is not None:
                self.text_index.remove(remove)
        if add_ids:
            self.index.add(add_ids, np.stack(add_vectors))
        if text_ids and self.text_index is not None:
            self.text_index.add(text_ids, np.stack(text_add))
        return len(add_ids)
