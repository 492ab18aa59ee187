"""A model and the index of its item vectors, served as one unit: loaded, built and swapped together.

The index holds the model's items plus the catalog's items the model does not know (by their text vector,
when the model has a text path), minus whatever the catalog-wide filters leave out. A hot reload builds a
new IndexedModel from a copy of the catalog in a background thread, swaps it in between two events, and
then replays the catalog changes that arrived during the build.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from encoders.artifact import ModelArtifact
from encoders.models.live_neighbours import LiveConfig, knn_scale
from encoders.models.ranker import Extra
from encoders.serving import UserEncoder
from index.base import ItemIndex
from stream.core.catalog import Catalog
from stream.core.cooccurrence import CoView
from stream.core.live_lists import LiveList, LiveLists
from stream.core.rerank import Filters
from stream.core.text_pools import TextPool, TextPools

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
    # Those without a vector yet: listed by the votes alone, so not in the index (an insert costs more than
    # the event that brought the item, and a zero vector is never found by a search).
    votable: set[str] = field(default_factory=set)
    # The recent search queries' best items by text (stream/core/text_pools.py), dropped when the text index
    # changes.
    text_pools: TextPools = field(default_factory=TextPools)

    def __post_init__(self) -> None:
        self._rows = {item: n for n, item in enumerate(self.encoder.item_ids)}
        # The model's item vectors plus a zero row at the end (row -1: an item the model does not know), raw
        # and unit length: lookups for explanations and diversity are then one fancy-index each.
        vectors = self.encoder.item_vectors()
        padded = np.vstack([vectors, np.zeros((1, vectors.shape[1]), np.float32)])
        norms = np.linalg.norm(padded, axis=1, keepdims=True)
        self._padded = padded
        self._unit = (padded / np.maximum(norms, 1e-9)).astype(np.float32)
        # The live neighbour lists applied (stream/core/cooccurrence.py). One vote is worth the weight fitted on the
        # validation slice (the default one for a model trained without it) times the mix's kNN weight, as
        # offline; the new items' offset likewise.
        live = self.encoder.live_config or LiveConfig()
        head = self.encoder.session_head
        scale = knn_scale(head) if head is not None else 0.0
        self.live_lists = LiveLists(live.weight * scale, live.new_item_offset * scale, len(self.encoder.item_ids) + 1,
                                    live.half_life_s)

    @property
    def listable(self) -> Container[str]:
        """What a list may hold: the indexed items, and the items first seen in the stream without a vector yet."""
        return _Either(self.index, self.votable) if self.votable else self.index

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
                         filters: Filters, mass: float = 1.0, ts: float = 0.0) -> int:
        """Take an item's live neighbour list: its successors' votes from now on and, for an item the model has
        not trained on, a vector from them. Every item named gets a scoring row, so the session head ranks it
        like any other, and the items first seen in the stream enter the index. ``mass``: the row's raw weight
        at event time ``ts``. Returns how many entered it."""
        encoder = self.encoder
        if encoder.session_head is None:
            return 0  # nothing to score the votes with
        rows = np.fromiter((encoder.scoring_row(item) for item, _ in neighbours), dtype=np.int64,
                           count=len(neighbours))
        weights = np.fromiter((weight for _, weight in neighbours), dtype=np.float64, count=len(neighbours))
        weights = weights / max(float(weights.sum()), 1e-12)
        self.live_lists.lists[item_id] = LiveList(rows, weights, mass, ts)
        entered = 0
        if not encoder.knows(item_id):
            entered += self._index_live(item_id, encoder.live_vector(rows, weights), catalog, filters)
        for item, _ in neighbours:  # seen in the stream for the first time: rankable from now on, by the votes
            if not encoder.knows(item) and item not in self.live_vectors:
                entered += self._index_live(item, None, catalog, filters)
        return entered

    def see_live(self, item_id: str, catalog: Catalog, filters: Filters) -> bool:
        """An item the model has not trained on had its first event here: rankable from now on (a scoring row,
        and in the index, until its neighbour list gives it a vector), as the offline evaluation has it.
        Returns whether it entered the index just now."""
        if self.encoder.session_head is None or self.encoder.knows(item_id) or item_id in self.live_vectors:
            return False
        return self._index_live(item_id, None, catalog, filters)

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
        self.live_vectors[item_id] = vector
        if not filters.admits(catalog.get(item_id), catalog.was_deleted(item_id)):
            return False
        new = item_id not in self.index and item_id not in self.votable
        if vector.any():
            self.encoder.set_live_vector(row, vector)
            self.index.add([item_id], vector.reshape(1, -1))
            self.votable.discard(item_id)
        else:
            self.votable.add(item_id)
        return new

    def neighbour_lists(self) -> list[tuple[str, list[tuple[str, float]], float, float]]:
        """The live neighbour lists applied, by item id, with their mass and time (for a model swapped in)."""
        ids = self.encoder.ids_of_rows
        return [(item, list(zip(ids(lst.rows), lst.weights.tolist(), strict=True)), lst.mass, lst.ts)
                for item, lst in self.live_lists.lists.items()]

    def live_votes(self, recent: list[tuple[str, str]], pending: Sequence[CoView] = ()) -> Extra | None:
        """The live neighbour lists' votes after a user's item events (oldest first), counting ``pending``, the
        co-views of the event being answered (stream/core/live_lists.py). None: no votes."""
        if self.encoder.session_head is None:
            return None
        return self.live_lists.votes(recent, pending, self.encoder.scoring_row)

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

    def text_pool(self, query_text: np.ndarray, size: int, query: str | None) -> TextPool:
        """The best ``size`` items by text for a search's query (its MiniLM vector ``query_text``), kept per
        ``query`` until the text index changes."""
        assert self.text_index is not None

        def build() -> TextPool:
            # No exclusions here: the list's filter drops them, and a long purchase history would make the text
            # index over-fetch (as offline, the pool is the query's best items, whoever bought them).
            found = self.text_index.search(query_text, size)  # type: ignore[union-attr]
            ids = [item for item, _ in found]
            # The index's inner products are the cosines: the query's and the items' text vectors are unit length.
            text = np.fromiter((score for _, score in found), dtype=np.float64, count=len(found))
            return TextPool(ids, self.encoder.rows_of(ids), text)

        return self.text_pools.get(query, size, build)

    def model_vectors(self, rows: np.ndarray) -> np.ndarray:
        """(n, dim) the model's vectors of these model rows (each > 0), as the index holds them."""
        out: np.ndarray = self._padded[rows - 1]
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
                if not live.any():
                    self.votable.add(item_id)
                elif item_id not in self.index:
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
            self.votable.difference_update(remove)
            if self.text_index is not None:
                self.text_index.remove(remove)
                self.text_pools.clear()
        if add_ids:
            self.index.add(add_ids, np.stack(add_vectors))
        if text_ids and self.text_index is not None:
            self.text_index.add(text_ids, np.stack(text_add))
            self.text_pools.clear()
        return len(add_ids)


class _Either:
    """Membership in either of two containers."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self.first, self.second = first, second

    def __contains__(self, item: object) -> bool:
        return item in self.first or item in self.second
