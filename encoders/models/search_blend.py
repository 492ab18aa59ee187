"""Hybrid retrieval for a search: a small learned blend of text relevance and the user's own scores.

A search retrieves candidates twice: the query's MiniLM vector against the items' text vectors (title and
genres, the item tower's), and the user's state against the model's item vectors. The union is scored by a
linear blend of :data:`FEATURES`, fitted (softmax over the union, the searched-for item as the label) on the
training period's searches with a known target (encoders/training/search_fit.py); the pool size is chosen
on a validation slice. The same numpy code (:class:`NumpyBlend`) scores offline and in the worker.

Features are scale-free where the raw score is not: the model's inner products differ in scale between
users, so the personal score enters as a z-score and a reciprocal rank within the union. Popularity and
"recently seen" count in proportion to the item's text relevance: ungated, a user's recent items and the
most popular titles outranked what the user searched for (genre-query precision@10 with history 0.48
against 0.78 gated, on a small GRU; docs/models.md), since tag searches are often for a movie just rated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stream.errors import ArtifactError

FEATURES = (
    "text",  # cosine of the query's and the item's MiniLM vectors
    "text_rank",  # 1 / (1 + rank by text among the candidates)
    "personal",  # the model's score, as a z-score among the candidates
    "personal_rank",  # 1 / (1 + rank by the model's score among the candidates)
    "popularity",  # log1p training-period count / log1p of the largest, times the text cosine (if > 0)
    "recent",  # the item is among the user's recent item events, times the text cosine (if > 0)
)
FILE = "search_blend.json"  # beside the model in its artifact folder
TEXT_PART = [0, 1, 4, 5]  # the features that come from the query's text
MIN_INTENT = 0.05  # a carried query weighing less than this is dropped


@dataclass(frozen=True)
class SearchBlend:
    """The fitted blend: pool size per retrieval, one weight per feature, and item popularity by model row."""

    pool: int = 100  # candidates the text retrieval contributes to the union (chosen on the validation slice)
    weights: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # unfitted: text relevance alone
    popularity: tuple[float, ...] = field(default=(), repr=False)  # (n_items + 1,), row 0 unused
    # The carried intent: after a search, the next item events' lists still weigh the query's text features
    # by carry_events ** (item events since) * 0.5 ** (seconds since / carry_half_life_s); 0 = not carried.
    # Both chosen on the validation slice by the next click's Recall@20.
    carry_events: float = 0.0
    carry_half_life_s: float = 3600.0
    personal_pool: int = 0  # candidates the user's retrieval contributes (0: as many as ``pool``)

    @property
    def user_pool(self) -> int:
        """Candidates the user's retrieval contributes."""
        return self.personal_pool or self.pool

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ArtifactError(f"a search blend needs {len(FEATURES)} weights, got {len(self.weights)}")

    def save(self, folder: Path) -> None:
        """Write it into an artifact folder."""
        (folder / FILE).write_text(json.dumps(asdict(self)))

    @staticmethod
    def load(folder: Path) -> SearchBlend | None:
        """The blend saved in an artifact folder (None: the model has none)."""
        path = folder / FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return SearchBlend(pool=int(raw["pool"]), weights=tuple(float(w) for w in raw["weights"]),
                               popularity=tuple(float(p) for p in raw["popularity"]),
                               carry_events=float(raw.get("carry_events", 0.0)),
                               carry_half_life_s=float(raw.get("carry_half_life_s", 3600.0)),
                               personal_pool=int(raw.get("personal_pool", 0)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: unreadable search blend ({exc})") from None


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """The popularity feature of item counts (n_items + 1,): log1p(count) / log1p(max count)."""
    out: np.ndarray = np.log1p(counts) / max(float(np.log1p(counts.max())), 1e-9)
    out[0] = 0.0  # row 0 stands for items the model does not know
    return out


_RECIPROCALS = 1.0 / np.arange(1, 4097)  # 1 / (1 + rank) for the ranks of most unions


def _reciprocal_ranks(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    out = np.empty(scores.size)
    out[order] = _RECIPROCALS[:scores.size] if scores.size <= _RECIPROCALS.size \
        else 1.0 / np.arange(1, scores.size + 1)
    return out


def features(text: np.ndarray, personal: np.ndarray, popularity: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """(C, len(FEATURES)) for C candidates given their text cosines, model scores, popularity features and
    whether each is among the user's recent items."""
    f = np.zeros((text.size, len(FEATURES)))
    if text.size == 0:
        return f
    spread = personal.std()
    f[:, 0] = text
    f[:, 1] = _reciprocal_ranks(text)
    f[:, 2] = (personal - personal.mean()) / spread if spread > 1e-9 else 0.0
    f[:, 3] = _reciprocal_ranks(personal)
    relevance = np.maximum(text, 0.0)
    f[:, 4] = popularity * relevance
    f[:, 5] = recent * relevance
    return f


def union(text_rows: np.ndarray, personal_rows: np.ndarray) -> np.ndarray:
    """The candidate rows of both retrievals, each once, in a fixed order (text first)."""
    rows, first = np.unique(np.concatenate([text_rows, personal_rows]), return_index=True)
    out: np.ndarray = rows[np.argsort(first, kind="stable")]
    return out


class NumpyBlend:
    """The blend as arrays, the one scorer used offline and in the worker."""

    def __init__(self, blend: SearchBlend) -> None:
        self.pool = blend.pool
        self.user_pool = blend.user_pool
        self.weights = np.asarray(blend.weights, dtype=np.float64)
        self.popularity = np.asarray(blend.popularity, dtype=np.float64) if blend.popularity else None
        self.carry_events = blend.carry_events
        self.carry_half_life_s = blend.carry_half_life_s

    def scores(self, rows: np.ndarray, text: np.ndarray, personal: np.ndarray,
               recent_rows: np.ndarray | list[int], intent: float = 1.0) -> np.ndarray:
        """The blend's score of each candidate (the union of both retrievals; model ``rows``, 0 for an item the
        model does not know) given their text cosines and model scores and the user's recent item rows;
        ``intent`` weighs the query's part (1 for the search itself, less for the events after it).

        ``candidate_features(...) @ weights`` with the text part times ``intent``, summed feature by feature
        and skipping the unweighted ones: a search's union of ~300 candidates costs half as much this way."""
        w = self.weights
        out = np.zeros(text.size)
        if text.size == 0:
            return out
        relevance = np.maximum(text, 0.0)
        if w[0]:
            out += w[0] * text
        if w[1]:
            out += w[1] * _reciprocal_ranks(text)
        if w[4] and self.popularity is not None:
            out += w[4] * self.popularity[rows] * relevance
        if w[5]:
            out += w[5] * (_recent(rows, recent_rows) * relevance)
        if intent != 1.0:
            out *= intent
        if w[2]:
            centred = personal - personal.mean()
            spread = float(np.sqrt(centred @ centred / centred.size))
            if spread > 1e-9:
                out += (w[2] / spread) * centred
        if w[3]:
            out += w[3] * _reciprocal_ranks(personal)
        return out

    def intent(self, events: int, seconds: float) -> float:
        """The weight of a search's query ``events`` item events and ``seconds`` after it."""
        if events == 0:
            return 1.0
        return float(self.carry_events ** events * 0.5 ** (max(seconds, 0.0) / self.carry_half_life_s))


def candidate_features(rows: np.ndarray, text: np.ndarray, personal: np.ndarray, popularity: np.ndarray | None,
                       recent_rows: np.ndarray | list[int]) -> np.ndarray:
    """:func:`features` of candidate model ``rows`` (0: unknown to the model) from the popularity by row and
    the user's recent item rows."""
    pop = popularity[rows] if popularity is not None else np.zeros(rows.size)
    return features(text, personal, pop, _recent(rows, recent_rows))


def _recent(rows: np.ndarray, recent_rows: np.ndarray | list[int]) -> np.ndarray:
    """1.0 where a candidate row (0: unknown to the model, never recent) is among the user's recent rows."""
    recent = np.asarray(recent_rows, dtype=np.int64)
    if recent.size == 0 or rows.size == 0:
        return np.zeros(rows.size)
    # A mask over the rows up to the largest: cheaper than np.isin's sort for a few hundred candidates.
    mask = np.zeros(int(max(rows.max(), recent.max())) + 1, dtype=np.float64)
    mask[recent] = 1.0
    mask[0] = 0.0
    out: np.ndarray = mask[rows]
    return out
