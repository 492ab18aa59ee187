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
from encoders.models.live_neighbours import VOTE_DECAY, LiveConfig, knn_scale
from encoders.models.ranker import Extra
from encoders.models.session_head import NEIGHBOUR_HISTORY
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
    # Items first seen in the stream, indexed by the vector their live successors give them (blended with their
    # text's where they have one): item -> vector.
    live_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    # The live neighbour lists applied (stream/core/cooccurrence.py): item -> (successors' scoring rows, their
    # normalised weights), and the weight the votes get against the session head's kNN votes.
    live_lists: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rows = {item: n for n, item in enumerate(self.encoder.item_ids)}
        # The model's item vectors plus a zero row at the end (row -1: an item the model does not know), raw
        # and unit length: lookups for explanations and diversity are then one fancy-index each.
        vectors = self.encoder.item_vectors()
        padded = np.vstack([vectors, np.zeros((1, vectors.shape[1]), np.float32)])
        norms = np.linalg.norm(padded, axis=1, keepdims=True)
        self._padded = padded
        self._unit = (padded / np.maximum(norms, 1e-9)).astype(np.float32)
        # What one live vote is worth: the weight fitted on the validation slice (the default one for a model
        # trained without it) times the mix's kNN weight, as offline; and the new items' offset likewise.
        live = self.encoder.live_config or LiveConfig()
        head = self.encoder.session_head
        scale = knn_scale(head) if head is not None else 0.0
        self.live_weight, self.new_item_offset = live.weight * scale, live.new_item_offset * scale

    @property
    def version(self) -> str:
        """The model version lists carry."""
        return self.encoder.version

    def vectors_of(self, item_ids: list[str], unit: bool = False, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) vectors of these items as the index holds them (``unit``: scaled to length 1); zeros for
        an item the index does not know. ``rows``: their model rows, when the caller has them already."""
        rows = self.encoder.rows_of(item_ids) if rows is None else rows
        out: np.ndarray = (self._unit if unit else self._padded)[rows - 1]  # row 0 (unknown) -> the zero row
        if self.text_vectors or self.live_vectors:  # catalog items known by their text, items seen in the stream
            for n in np.flatnonzero(rows == 0).tolist():
                vector = self._own_vector(item_ids[n])
                if vector is not None:
                    out[n] = vector / max(float(np.linalg.norm(vector)), 1e-9) if unit else vector
        return out

    def _own_vector(self, item_id: str) -> np.ndarray | None:
        """The index vector of an item the model has no row for (None: it has none)."""
        live = self.live_vectors.get(item_id)
        if live is not None:
            return live
        cached = self.text_vectors.get(item_id)
        return cached[1] if cached is not None else None

    def apply_neighbours(self, item_id: str, neighbours: list[tuple[str, float]], catalog: Catalog,
                         filters: Filters) -> int:
        """Take an item's live neighbour list: its successors' votes from now on and, for an item the model has
        not trained on, a vector from them. Every item named gets a scoring row, so the session head ranks it
        like any other, and the items first seen in the stream enter the index. Returns how many entered it."""
        encoder = self.encoder
        if encoder.session_head is None:
            return 0  # nothing to score the votes with
        rows = np.fromiter((encoder.scoring_row(item) for item, _ in neighbours), dtype=np.int64,
                           count=len(neighbours))
        weights = np.fromiter((weight for _, weight in neighbours), dtype=np.float64, count=len(neighbours))
        self.live_lists[item_id] = (rows, weights / max(float(weights.sum()), 1e-12))
        entered = 0
        if not encoder.knows(item_id):
            entered += self._index_live(item_id, encoder.live_vector(*self.live_lists[item_id]), catalog, filters)
        for item, _ in neighbours:  # seen in the stream for the first time: rankable from now on, by the votes
            if not encoder.knows(item) and item not in self.live_vectors:
                entered += self._index_live(item, None, catalog, filters)
        return entered

    def _index_live(self, item_id: str, behaviour: np.ndarray | None, catalog: Catalog, filters: Filters) -> bool:
        """Index an item first seen in the stream, and score it, by the vector its successors give it, blended
        with its text's where it has one (zeros with neither: until it has successors, only the votes rank it).
        Returns whether it entered the index just now."""
        cached = self.text_vectors.get(item_id)
        if behaviour is None:
            vector = cached[1] if cached is not None else np.zeros(self.encoder.dim, np.float32)
        else:
            vector = 0.5 * (behaviour + cached[1]) if cached is not None else behaviour
        row = self.encoder.scoring_row(item_id)
        if vector.any():
            self.encoder.set_live_vector(row, vector)
        self.live_vectors[item_id] = vector
        if not filters.admits(catalog.get(item_id), catalog.was_deleted(item_id)):
            return False
        new = item_id not in self.index
        self.index.add([item_id], vector.reshape(1, -1))
        return new

    def neighbour_lists(self) -> list[tuple[str, list[tuple[str, float]]]]:
        """The live neighbour lists applied, by item id (for a model swapped in after this one)."""
        ids = self.encoder.ids_of_rows
        return [(item, list(zip(ids(rows), weights.tolist(), strict=True)))
                for item, (rows, weights) in self.live_lists.items()]

    def live_votes(self, recent: list[tuple[str, str]]) -> Extra | None:
        """The live neighbours' votes after a user's item events (oldest first), as the offline streaming
        evaluation casts them (encoders/training/streaming_eval.py): each of the last 10 events votes
        ``0.8 ** rank`` times each successor's normalised weight, scaled by the fitted weight; the items
        first seen in the stream get the fitted new-item offset. None: no votes."""
        if not self.live_lists or not (self.live_weight or self.new_item_offset):
            return None
        rows: list[np.ndarray] = []
        votes: list[np.ndarray] = []
        for rank, (_, item) in enumerate(reversed(recent[-NEIGHBOUR_HISTORY:])):
            found = self.live_lists.get(item)
            if found is not None:
                rows.append(found[0])
                votes.append(found[1] * (self.live_weight * VOTE_DECAY ** rank))
        if not rows:
            return None
        unique, inverse = np.unique(np.concatenate(rows), return_inverse=True)
        total: np.ndarray = np.bincount(inverse, weights=np.concatenate(votes), minlength=unique.size)
        if self.new_item_offset:
            total[unique > len(self.encoder.item_ids)] += self.new_item_offset
        return unique, total

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
            live = self.live_vectors.get(item_id)
            if text is None and live is not None:  # an item seen in the stream: its behaviour's vector
                if item_id not in self.index:
                    add_ids.append(item_id)
                    add_vectors.append(live)
            elif text is None:
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
