"""The serving face of a trained model: numpy in, numpy out, one event at a time.

The worker never calls torch: the model's weights are copied into a numpy step (encoders/models/gru.py,
encoders/models/transformer.py), and this adapter owns the id -> row map, the query tokeniser and the repeat head
(the same numpy code that scores the offline evaluation), so the data path stays model-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoders.artifact import ModelArtifact
from encoders.models.gru import NumpyRecurrentStep
from encoders.models.inputs import TYPE_IDS, query_tokens
from encoders.models.item_tower import item_text_vectors
from encoders.models.live_neighbours import LiveRows
from encoders.models.ranker import Extra, NumpyRanker, session_scores
from encoders.models.search_blend import NumpyBlend
from encoders.models.session_head import NumpyRepeatHead
from encoders.models.transformer import NumpySasrecStep, SasrecModel
from encoders.text import TextEncoder

QUERY_GATES = 4096  # searches' input gates kept (768 bytes each for a GRU of 64)


@dataclass(frozen=True)
class Scored:
    """A user's candidates as the model scores them: scoring rows and their scores, and the items without a
    scoring row (new catalog items known by their text) with a score below them all."""

    rows: np.ndarray
    scores: np.ndarray
    unknown: list[tuple[str, float]]
    recent: np.ndarray | None = None  # the model rows of the user's recent items (0: unknown to the model)


class UserEncoder:
    """Steps a user's state (recurrent state or event window) and turns it into a query vector for the index."""

    def __init__(self, artifact: ModelArtifact) -> None:
        model = artifact.model.eval()
        self._step = NumpySasrecStep(model) if isinstance(model, SasrecModel) else NumpyRecurrentStep(model)
        # A recurrent model steps an event without text from its tabled input gates (decided once, not per event).
        self._plain_step = self._step.step_plain if isinstance(self._step, NumpyRecurrentStep) else None
        self._repeat = NumpyRepeatHead(model.repeat) if model.repeat is not None else None
        self._ranker = NumpyRanker(model.ranker, model.config.ranker_candidates) \
            if model.ranker is not None and self._repeat is not None else None
        self.version = artifact.version
        self.model_type = model.config.cell  # "gru", "lstm" or "sasrec"
        self.item_ids = artifact.item_ids
        self.live_config = artifact.live  # how the live neighbours' votes join the session head's (None: they do not)
        self._rows = {item: n for n, item in enumerate(artifact.item_ids, 1)}
        # Scoring rows: the model's own, then the items first seen in the stream (LiveRows), which the session head
        # and the re-ranker score like any other; the model's step knows only its own (``_rows``).
        self._scoring_rows = self._rows
        self._live: LiveRows | None = None
        self._ids_by_row = np.array(["", *artifact.item_ids], dtype=object)  # row -> id, for vectorised lookups
        config = artifact.model.config
        self.dim = config.dim
        self.state_size = config.state_size
        self._buckets = config.query_buckets
        self._max_tokens = config.max_query_tokens
        self._no_text = np.zeros(config.max_query_tokens, dtype=np.int64)
        self._query_gates: dict[str, np.ndarray] = {}  # a search's input gates by query, least recent first
        self._text_proj: np.ndarray | None = None
        self._text: TextEncoder | None = None
        self.item_text: np.ndarray | None = None  # (n_items + 1, text_dim) the items' MiniLM vectors, row 0 zero
        self.blend: NumpyBlend | None = None  # hybrid retrieval for searches (a model with an item tower)
        if isinstance(self._step, NumpyRecurrentStep) and self._step.text_proj is not None:
            self._text_proj = self._step.text_proj  # (text_dim, dim): the item tower's text projection
            self._text = TextEncoder()  # MiniLM, for search queries and new catalog items
            self.item_text = item_text_vectors(model)
            if artifact.search_blend is not None:
                self.blend = NumpyBlend(artifact.search_blend)

    def knows(self, item_id: str) -> bool:
        """Whether the model has an embedding for this item."""
        return item_id in self._rows

    def scoring_row(self, item_id: str) -> int:
        """The row the session head scores an item at: the model's own, or a live row given on first sight to an
        item the model has not trained on (0: the model has no session head to score one with)."""
        row = self._scoring_rows.get(item_id)
        if row is not None:
            return row
        if self._repeat is None:
            return 0
        if self._live is None:
            self._live = LiveRows(self._repeat, self._ranker, self._step.item_emb)
            self._scoring_rows = dict(self._rows)
        row = self._scoring_rows[item_id] = self._live.row(item_id)
        if row >= self._ids_by_row.size:
            grown = np.full(self._live.first + self._live.capacity, "", dtype=object)
            grown[:self._ids_by_row.size] = self._ids_by_row
            self._ids_by_row = grown
        self._ids_by_row[row] = item_id
        return row

    @property
    def session_head(self) -> NumpyRepeatHead | None:
        """The session head (repeat and neighbour bonus), None for a model without one."""
        return self._repeat

    def ids_of_rows(self, rows: np.ndarray) -> list[str]:
        """The item ids of scoring rows."""
        out: list[str] = self._ids_by_row[rows].tolist()
        return out

    def is_live(self, row: int) -> bool:
        """Whether a scoring row is an item first seen in the stream."""
        return row > len(self.item_ids)

    def live_vector(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
        """The weighted mean of these scoring rows' vectors (rows without a vector are skipped): the vector of an
        item first seen in the stream, from its live successors; None when none of them has one."""
        table = self._live.vectors if self._live is not None else self._step.item_emb
        vectors = table[rows]
        has = vectors.any(axis=1)
        if not has.any():
            return None
        w = weights[has]
        out: np.ndarray = (vectors[has] * (w / w.sum())[:, None]).sum(axis=0).astype(np.float32)
        return out

    def set_live_vector(self, row: int, vector: np.ndarray) -> None:
        """Score a live row with this vector from now on."""
        assert self._live is not None and self.is_live(row)
        self._live.set_vector(row, vector)

    def rows_of(self, item_ids: list[str]) -> np.ndarray:
        """The model rows of these items (0: an item the model does not know)."""
        get = self._rows.get
        return np.fromiter((get(item, 0) for item in item_ids), dtype=np.int64, count=len(item_ids))

    def query_text(self, text: np.ndarray) -> np.ndarray | None:
        """The query's MiniLM vector (unit length) out of :meth:`encode_text`'s form; None without a text path."""
        if self._text is None:
            return None
        out: np.ndarray = text[self._max_tokens:]
        return out

    def text_vector(self, text: str) -> np.ndarray | None:
        """An item text's MiniLM vector (unit length); None when the model has no text path."""
        return self._text.encode_one(text) if self._text is not None else None

    def initial_state(self) -> np.ndarray:
        """The state of a user with no events."""
        return np.zeros(self.state_size, dtype=np.float32)

    def encode_text(self, query: str) -> np.ndarray:
        """The model's input form of a search query: hashed token ids, followed by the query's MiniLM vector
        for a model with an item tower (then as float32)."""
        tokens = np.asarray(query_tokens(query, self._buckets, self._max_tokens), dtype=np.int64)
        if self._text is None:
            return tokens
        return np.concatenate([tokens.astype(np.float32), self._text.encode_one(query)])

    def text_pending(self, query: str) -> bool:
        """Whether :meth:`encode_text` would run the text model for this query (a model with a text path, and
        a query not in its cache): milliseconds of CPU that the worker spends off its event loop."""
        return self._text is not None and not self._text.is_cached(query)

    def encode_texts(self, queries: list[str]) -> int:
        """Run the text model once for the queries not in its cache (batched); returns how many it encoded."""
        return self._text.encode_many(queries) if self._text is not None else 0

    def step(self, state: np.ndarray, event_type: str, item_id: str | None,
             text: np.ndarray | None = None, query: str | None = None) -> np.ndarray:
        """The state after one more event; ``text`` comes from :meth:`encode_text` (unknown items step
        with the type alone). ``query``: the search's query, whose input gates a recurrent model keeps."""
        row = self._rows.get(item_id, 0) if item_id is not None else 0
        if text is None and self._plain_step is not None:
            return self._plain_step(state, row, TYPE_IDS[event_type])
        if query is not None and row == 0 and isinstance(self._step, NumpyRecurrentStep):
            # A search's input gates depend on its query alone (no item): kept per query, as searches repeat.
            gates = self._query_gates.pop(query, None)
            if gates is None:
                gates = self._step.input_gates(*self._step_inputs(event_type, 0, text))
                if len(self._query_gates) >= QUERY_GATES:
                    del self._query_gates[next(iter(self._query_gates))]
            self._query_gates[query] = gates  # most recently used last
            out_q: np.ndarray = self._step.cell_step(state.reshape(1, -1), gates)[0]
            return out_q
        rows, types, tokens, vector = self._step_inputs(event_type, row, text)
        if vector is not None:
            assert isinstance(self._step, NumpyRecurrentStep)  # the item tower's text path is recurrent
            new = self._step.step(state.reshape(1, -1), rows, types, tokens, vector)
        else:
            new = self._step.step(state.reshape(1, -1), rows, types, tokens)
        out: np.ndarray = new[0]
        return out

    def _step_inputs(self, event_type: str, row: int, text: np.ndarray | None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """One event's step inputs as the numpy step takes them: rows, types, tokens (a batch of one) and the
        query's MiniLM vector (None without a text path or a query)."""
        tokens = self._no_text if text is None else text[:self._max_tokens].astype(np.int64)
        vector = text[self._max_tokens:].reshape(1, -1) if self._text is not None and text is not None else None
        return np.array([row]), np.array([TYPE_IDS[event_type]]), tokens.reshape(1, -1), vector

    def query_vector(self, state: np.ndarray) -> np.ndarray:
        """The vector searched in the item index (inner product)."""
        out: np.ndarray = self._step.query(state.reshape(1, -1))[0]
        return out

    def text_item_vector(self, text: str) -> np.ndarray | None:
        """The vector of an item known only by its text (a new catalog item): the item tower's projection of
        its MiniLM vector (its id embedding is zero). None when the model has no text path, and such an item
        then stays out of the index until a model that knows it is published."""
        vector = self.text_vector(text)
        if vector is None or self._text_proj is None:
            return None
        out: np.ndarray = (vector @ self._text_proj).astype(np.float32)
        return out

    @property
    def search_depth(self) -> int:
        """Items the index should return at least, for the re-ranker to choose from (0 without one)."""
        return self._ranker.candidates if self._ranker is not None else 0

    def rescore(self, query: np.ndarray, recent: list[tuple[str, str]], candidates: list[tuple[str, float]],
                limit: int | None = None, extra: Extra | None = None) -> list[tuple[str, float]]:
        """The index's candidates (item, inner product) with the user's recent items and their neighbours
        added and every score replaced by the model's final one (inner product, session head bonus, re-ranker),
        exactly as the offline evaluation scores them (encoders/models/ranker.py ``session_scores``). Unchanged for a
        model without a session head. Items the model has no row for (new catalog items known by their text)
        keep their inner product, below the re-ordered candidates when there is a re-ranker. Without a
        re-ranker only the items with a bonus are rescored (the index's inner product stands for the rest: 20-30
        us less per event). With a re-ranker and ``limit`` only that many of the best items come back (the
        caller needs no more). ``extra`` (scoring rows, bonus): the live neighbours' votes, added to the
        session head's neighbour part."""
        if self._repeat is None:
            return candidates
        live = self._live
        head, ranker = (live.head, live.ranker) if live is not None else (self._repeat, self._ranker)
        item_emb = live.vectors if live is not None else self._step.item_emb
        get, type_id = self._scoring_rows.get, TYPE_IDS.__getitem__
        recent_rows = [get(item, 0) for _, item in recent]
        recent_types = [type_id(kind) for kind, _ in recent]
        if ranker is None:  # inner product + bonus: the index's score stands for items without a bonus
            rows_u, bonus = head.bonus(query, recent_rows, recent_types)
            if extra is not None and extra[0].size:
                rows_u, inverse = np.unique(np.concatenate([rows_u, extra[0]]), return_inverse=True)
                bonus = np.bincount(inverse, weights=np.concatenate([bonus, extra[1]]), minlength=rows_u.size)
            scores_u = item_emb[rows_u] @ query + bonus
            bonused = dict(zip(self._ids_by_row[rows_u].tolist(), scores_u.tolist(), strict=True))
            return [(item, bonused.pop(item, score)) for item, score in candidates] + list(bonused.items())
        rows, scores, unknown = self._ranked_rows(head, ranker, item_emb, query, recent_rows, recent_types,
                                                  candidates, extra)
        if limit is not None and rows.size > limit:  # turning ~1,000 rows into tuples costs more than the math
            best = np.argpartition(-scores, limit)[:limit]
            rows, scores = rows[best], scores[best]
        return list(zip(self._ids_by_row[rows].tolist(), scores.tolist(), strict=True)) + unknown

    def rescore_rows(self, query: np.ndarray, recent: list[tuple[str, str]], candidates: list[tuple[str, float]],
                     extra: Extra | None = None) -> Scored | None:
        """:meth:`rescore` for a model with a re-ranker, as arrays for a caller that goes on scoring by row (a
        search's hybrid retrieval); None for any other model (:meth:`rescore`'s pairs are then the scores)."""
        live = self._live
        head, ranker = (live.head, live.ranker) if live is not None else (self._repeat, self._ranker)
        if head is None or ranker is None:
            return None
        get, type_id = self._scoring_rows.get, TYPE_IDS.__getitem__
        recent_rows = [get(item, 0) for _, item in recent]
        rows, scores, unknown = self._ranked_rows(
            head, ranker, live.vectors if live is not None else self._step.item_emb, query, recent_rows,
            [type_id(kind) for kind, _ in recent], candidates, extra)
        model_rows = np.array(recent_rows, dtype=np.int64)
        model_rows[model_rows > len(self.item_ids)] = 0  # items first seen in the stream: no model row
        return Scored(rows, scores, unknown, model_rows)

    def _ranked_rows(self, head: NumpyRepeatHead, ranker: NumpyRanker, item_emb: np.ndarray, query: np.ndarray,
                     recent_rows: list[int], recent_types: list[int], candidates: list[tuple[str, float]],
                     extra: Extra | None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float]]]:
        """The re-ranker's scores of the candidates with a scoring row (and the recent items and neighbours the
        session head adds), and the items without one, below them all in the index's order."""
        get = self._scoring_rows.get
        known = np.fromiter((get(item, 0) for item, _ in candidates), dtype=np.int64, count=len(candidates))
        unknown: list[tuple[str, float]] = []
        if not known.all():  # rare: the index's items without a scoring row keep their order, below the rest
            unknown = [pair for pair, row in zip(candidates, known.tolist(), strict=True) if not row]
            known = known[known > 0]
        rows, scores = session_scores(head, ranker, query, item_emb, recent_rows, recent_types, known, extra)
        if unknown and scores.size:
            floor = float(scores.min()) - 1.0
            unknown = [(item, floor - n) for n, (item, _) in enumerate(unknown)]
        return rows, scores, unknown

    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) item embeddings in ``item_ids`` order."""
        return self._step.item_emb[1:]
