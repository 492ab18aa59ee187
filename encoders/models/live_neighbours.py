"""Live item co-occurrence: what the stream teaches about items after training, in bounded memory.

Each applied item event b of a user sends one transition from each of the user's last ``history`` distinct
items a into b, weighted ``type_weight / gap`` (a purchase counts more; the item just before counts most).
A transition is keyed by its source a, so a table partitioned by item keeps, per item, its successors:
at most ``neighbours`` of them, chosen by space-saving (a newcomer replaces the lightest entry and inherits
its weight, so heavy hitters are never lost) and decayed in event time with ``half_life_s``.

Scoring reads it as the session head reads the training-time kNN table: each of the user's last 10 item
events votes ``0.8 ** rank`` times the normalised weight of each of its successors. An item first seen
after training is scored like any other: its vector is the weighted mean of its successors' vectors (it
has none of its own), and it gets the session head's repeat bonus. The worker and the offline streaming
evaluation (encoders/training/streaming_eval.py) use this one implementation.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.models.inputs import PURCHASE_TYPE
from encoders.models.ranker import NumpyRanker
from encoders.models.session_head import NEIGHBOUR_HISTORY, NumpyRepeatHead
from stream.errors import ArtifactError

FILE = "live.json"  # in an artifact folder: the live table's settings and its fitted weight
VOTE_DECAY = 0.8  # as item-kNN's votes (encoders/training/baselines.py)


@dataclass(frozen=True)
class LiveConfig:
    """The live table's shape and the weight its votes get; saved with the artifact."""

    history: int = 3  # the user's last items that each send a transition into a new item (records per event)
    neighbours: int = 50  # successors kept per item (space-saving)
    half_life_s: float = 2 * 86400.0  # event-time decay of the counts
    purchase_weight: float = 2.0  # a transition into a purchase counts this many clicks
    weight: float = 1.0  # the live votes' weight, relative to the training-time kNN votes (fitted on validation)
    # Added to a new item's score, in units of the kNN weight: a prior that an item the model has not seen is
    # less certain than one it has (fitted on validation; 0 = none).
    new_item_offset: float = 0.0

    def __post_init__(self) -> None:
        if (self.history < 1 or self.neighbours < 1 or self.half_life_s <= 0 or self.weight < 0
                or self.new_item_offset > 0):
            raise ArtifactError(f"bad live-neighbour settings: {self}")

    def save(self, folder: Path) -> None:
        """Write it into an artifact folder."""
        (folder / FILE).write_text(json.dumps(asdict(self)))

    @staticmethod
    def load(folder: Path) -> LiveConfig | None:
        """The settings saved in an artifact folder (None: the model has none)."""
        path = folder / FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return LiveConfig(history=int(raw["history"]), neighbours=int(raw["neighbours"]),
                              half_life_s=float(raw["half_life_s"]), purchase_weight=float(raw["purchase_weight"]),
                              weight=float(raw["weight"]), new_item_offset=float(raw.get("new_item_offset", 0.0)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: unreadable live-neighbour settings ({exc})") from None


def transitions(recent: Sequence[Hashable], item: Hashable, event_type: int,
                config: LiveConfig) -> list[tuple[Any, float]]:
    """(source, weight) of the transitions one item event sends into ``item``, given the user's earlier item
    events (oldest first): one per distinct earlier item among the last ``history``, never from itself."""
    weight = config.purchase_weight if event_type == PURCHASE_TYPE else 1.0
    out: list[tuple[Any, float]] = []
    seen = {item}
    gap = 0
    for source in reversed(recent):
        if source in seen:
            continue
        seen.add(source)
        gap += 1
        out.append((source, weight / gap))
        if gap == config.history:
            break
    return out


class Successors:
    """One item's successors: ids (rows offline, item ids in the stream) and weights as of ``ts`` (decayed in
    event time), at most ``neighbours``."""

    __slots__ = ("items", "ts", "weights")

    def __init__(self, items: list[Any] | None = None, weights: list[float] | None = None,
                 ts: float = -math.inf) -> None:
        self.items: list[Any] = items if items is not None else []
        self.weights: list[float] = weights if weights is not None else []
        self.ts = ts

    def add(self, item: Hashable, weight: float, ts: float, config: LiveConfig) -> None:
        """Count one transition into ``item`` at event time ``ts`` (a late one decays into the present)."""
        if ts > self.ts:
            if self.weights and math.isfinite(self.ts):
                factor = 0.5 ** ((ts - self.ts) / config.half_life_s)
                self.weights = [w * factor for w in self.weights]
            self.ts = ts
        else:
            weight *= 0.5 ** ((self.ts - ts) / config.half_life_s)
        try:
            self.weights[self.items.index(item)] += weight
            return
        except ValueError:
            pass
        if len(self.items) < config.neighbours:
            self.items.append(item)
            self.weights.append(weight)
            return
        lightest = min(range(len(self.weights)), key=self.weights.__getitem__)  # space-saving
        self.items[lightest] = item
        self.weights[lightest] += weight

    def normalised(self) -> tuple[np.ndarray, np.ndarray]:
        """(items, weights summing to 1): the decay of the whole row cancels."""
        weights = np.asarray(self.weights, dtype=np.float64)
        return np.asarray(self.items, dtype=np.int64), weights / max(float(weights.sum()), 1e-12)


class LiveNeighbours:
    """The live successor table of every item seen in the stream, keyed by item row (or any integer id)."""

    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.rows: dict[int, Successors] = {}

    def observe(self, recent: Sequence[int], item: int, event_type: int, ts: float) -> list[int]:
        """Apply the transitions of one item event; returns the source items whose rows changed."""
        changed = []
        for source, weight in transitions(recent, item, event_type, self.config):
            self.rows.setdefault(source, Successors()).add(item, weight, ts, self.config)
            changed.append(source)
        return changed

    def votes(self, recent: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(items, votes) from the user's last item events (oldest first): each of the last 10 distinct-or-not
        events votes ``0.8 ** rank`` times each successor's normalised weight, as the kNN votes do."""
        items: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for rank, source in enumerate(reversed(recent[-NEIGHBOUR_HISTORY:])):
            row = self.rows.get(source)
            if row is None or not row.items:
                continue
            successors, weights = row.normalised()
            items.append(successors)
            values.append(weights * VOTE_DECAY ** rank)
        if not items:
            return np.zeros(0, np.int64), np.zeros(0)
        unique, inverse = np.unique(np.concatenate(items), return_inverse=True)
        return unique, np.bincount(inverse, weights=np.concatenate(values), minlength=unique.size)

    def vector(self, item: int, vectors: np.ndarray) -> np.ndarray | None:
        """A vector for an item without one of its own: the weighted mean of its successors' ``vectors``
        (rows of the model's item table; rows beyond it or without a vector are skipped); None without any."""
        row = self.rows.get(item)
        if row is None or not row.items:
            return None
        successors, weights = row.normalised()
        known = successors < vectors.shape[0]
        if not known.any():
            return None
        w = weights[known]
        out: np.ndarray = (vectors[successors[known]] * (w / w.sum())[:, None]).sum(axis=0)
        return out

    def __len__(self) -> int:
        return len(self.rows)


def _pad_rows(table: np.ndarray, rows: int) -> np.ndarray:
    """``table`` with zero rows appended up to ``rows`` rows (items after the model's, with nothing known)."""
    extra = rows - table.shape[0]
    if extra <= 0:
        return table
    out: np.ndarray = np.concatenate([table, np.zeros((extra, *table.shape[1:]), dtype=table.dtype)])
    return out


def padded_head(head: NumpyRepeatHead, rows: int) -> NumpyRepeatHead:
    """The session head with neighbour tables for ``rows`` rows (new rows have no training-time neighbours)."""
    out = copy.copy(head)
    out.nbr_idx, out.nbr_sim = _pad_rows(head.nbr_idx, rows), _pad_rows(head.nbr_sim, rows)
    return out


def padded_ranker(ranker: NumpyRanker, rows: int) -> NumpyRanker:
    """The re-ranker with its rule and popularity tables for ``rows`` rows (new rows: no rules, no counts)."""
    out = copy.copy(ranker)
    for name in ("follow_idx", "follow_w", "precede_idx", "precede_w", "popularity", "recent_popularity"):
        setattr(out, name, _pad_rows(getattr(ranker, name), rows))
    return out


def padded_vectors(vectors: np.ndarray, rows: int) -> np.ndarray:
    """The item vectors (row 0 first) with zero rows up to ``rows``: a new item has no vector until its
    successors give it one."""
    return _pad_rows(vectors, rows)


def knn_scale(head: NumpyRepeatHead) -> float:
    """The mix's kNN weight (the vote of the latest item), which the live votes are scaled by; 1 without one."""
    first = float(head.nbr_weight[0]) if head.neighbours and head.nbr_weight.size else 0.0
    return first if first > 0 else 1.0


class LiveRows:
    """Rows after a model's own, for the items first seen in the stream, so they score as any item does: the
    session head's, the re-ranker's and the item vectors' tables grown to hold them (zero rows: no
    training-time neighbours, rules or counts, no vector until one is set). The capacity doubles as items
    arrive, so a new item costs a copy of the tables only every so often."""

    def __init__(self, head: NumpyRepeatHead, ranker: NumpyRanker | None, vectors: np.ndarray,
                 capacity: int = 1024) -> None:
        self._base = (head, ranker, vectors)
        self.first = vectors.shape[0]  # the first live row (vectors has row 0 and the model's rows)
        self.ids: dict[Hashable, int] = {}
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        head, ranker, vectors = self._base
        rows = self.first + capacity
        self.capacity = capacity
        old = getattr(self, "vectors", None)
        self.head = padded_head(head, rows)
        self.ranker = padded_ranker(ranker, rows) if ranker is not None else None
        self.vectors = padded_vectors(vectors, rows)
        if old is not None:
            self.vectors[:old.shape[0]] = old  # the live rows' vectors set so far

    def row(self, item: Hashable) -> int:
        """The item's live row, given on first sight."""
        row = self.ids.get(item)
        if row is None:
            if len(self.ids) == self.capacity:
                self._grow(self.capacity * 2)
            row = self.ids[item] = self.first + len(self.ids)
        return row

    def set_vector(self, row: int, vector: np.ndarray) -> None:
        """A live item's vector (its successors' weighted mean), refreshed as they change."""
        self.vectors[row] = vector
