"""Fit the search blend (encoders/models/search_blend.py) on the training period's searches with a target.

A search with a target (movielens: a tag event names the movie it was applied to) is one example: the union
of the query's best items by text and the user's best items by the model, after the events before it, and
the target's position in that union (examples whose target is not in it cannot train the blend). The
weights are fitted by softmax cross-entropy over each union. The pool size is chosen on the latest share of
those searches (the validation slice) by Recall@20, with weights fitted on the earlier ones; the final
weights are then fitted on all of them with the chosen pool. The carried intent (how much a search's query
still counts at the item events after it) is chosen on the item events that follow the validation slice's
searches, by their Recall@20. The test period is never read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from encoders.models.inputs import SEARCH_TYPE
from encoders.models.item_tower import item_text_vectors
from encoders.models.registry import SequenceModel
from encoders.models.search_blend import (
    FEATURES,
    MIN_INTENT,
    NumpyBlend,
    SearchBlend,
    candidate_features,
    log_popularity,
    union,
)
from encoders.training.evaluation import Scorer, model_scorer
from encoders.training.sequences import UserSequence
from stream.errors import TrainingError

# (text, user) candidates per retrieval, chosen on the validation slice: the cheapest within TOLERANCE of the
# best Recall@20 there, since each retrieval's k is most of a search's CPU in the worker.
POOLS = ((50, 50), (100, 50), (200, 50), (100, 100), (200, 200))
TOLERANCE = 0.005
RECENT = 50  # recent item events that count as "recent" (the worker's default history_size)
VALIDATION_SHARE = 0.2  # latest share of the training period's targeted searches that chooses the pool


@dataclass
class SearchCase:
    """One search to score: the full-ranking text and model scores of every item row, and what is known."""

    user: str
    ts: float
    target: int  # model row of the searched-for item (0: unknown to the model)
    text: np.ndarray  # (n_items + 1,) cosine of the query and each item's text vector; row 0 -inf
    personal: np.ndarray  # (n_items + 1,) the model's scores after the search; row 0 -inf
    recent: np.ndarray  # item rows of the user's last RECENT item events before the search


@dataclass
class _UserSearches:
    """One user's searches with a query in a period, and what scores every item for them."""

    user: str
    seq: UserSequence
    positions: list[int]
    scorer: Scorer  # the model's scores after the events before a position
    item_text: np.ndarray  # (n_items + 1, text_dim)
    query_vectors: np.ndarray  # the MiniLM vectors of the sequences' query rows

    def scores(self, searches: list[int], ends: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the model's scores after the first ``ends`` events, the text cosines of the ``searches``' queries),
        each (P, n_items + 1) with row 0 at -inf."""
        personal = np.asarray(self.scorer(self.seq, ends), dtype=np.float64)
        assert self.seq.queries is not None
        text = self.query_vectors[self.seq.queries[searches]].astype(np.float64) @ self.item_text.T.astype(np.float64)
        personal[:, 0] = text[:, 0] = -math.inf
        return personal, text

    def recent(self, before: int) -> np.ndarray:
        """The item rows of the user's last RECENT item events before a position."""
        seq = self.seq
        item_events = np.flatnonzero((seq.types[:before] != 0) & (seq.types[:before] != SEARCH_TYPE))
        out: np.ndarray = seq.items[item_events][-RECENT:]
        return out


def _user_searches(model: SequenceModel, sequences: dict[str, UserSequence], query_vectors: np.ndarray,
                   since: float, until: float) -> Iterator[_UserSearches]:
    """Per user (sorted), the searches with a query and ``since <= ts < until``."""
    item_text = item_text_vectors(model)
    if item_text is None:
        raise TrainingError("searches by text need a model with an item tower (item texts)")
    scorer = model_scorer(model, query_vectors)
    for user in sorted(sequences):
        seq = sequences[user]
        if seq.queries is None:
            continue
        lo, hi = int(np.searchsorted(seq.ts, since, side="left")), int(np.searchsorted(seq.ts, until, side="left"))
        positions = [t for t in range(lo, hi) if seq.types[t] == SEARCH_TYPE and seq.queries[t] != 0]
        if positions:
            yield _UserSearches(user, seq, positions, scorer, item_text, query_vectors)


def search_cases(model: SequenceModel, sequences: dict[str, UserSequence], query_vectors: np.ndarray,
                 since: float, until: float = math.inf) -> Iterator[SearchCase]:
    """The searches with ``since <= ts < until``, users in sorted order, with both scores over all items."""
    for found in _user_searches(model, sequences, query_vectors, since, until):
        seq, positions = found.seq, found.positions
        personal, text = found.scores(positions, [t + 1 for t in positions])  # the model's after the search
        targets = seq.search_targets if seq.search_targets is not None else np.zeros(len(seq.ts), np.int64)
        for p, t in enumerate(positions):
            yield SearchCase(found.user, float(seq.ts[t]), int(targets[t]), text[p], personal[p], found.recent(t))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k)[:k] if scores.size > k else np.arange(scores.size)
    out: np.ndarray = top[np.argsort(-scores[top], kind="stable")]
    return out


def candidates(case: SearchCase, pool: int, user_pool: int) -> np.ndarray:
    """The union of the case's best ``pool`` rows by text and best ``user_pool`` by the model."""
    return union(_top(case.text, pool), _top(case.personal, user_pool))


def case_features(case: SearchCase, rows: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """The blend's features of candidate ``rows`` for one case."""
    return candidate_features(rows, case.text[rows], case.personal[rows], popularity, case.recent)


def fit_weights(examples: list[tuple[np.ndarray, int]], seed: int, epochs: int = 200,
                lr: float = 0.05) -> tuple[float, ...]:
    """Weights of the linear blend from (features (C, F), target position) examples: softmax cross-entropy
    over each example's candidates, full-batch Adam with a little weight decay."""
    usable = [(f, y) for f, y in examples if y >= 0]
    if not usable:
        raise TrainingError("no training-period search had its target among the blend's candidates")
    torch.manual_seed(seed)
    width = max(f.shape[0] for f, _ in usable)  # unions differ in size: pad, and mask the padding out
    x = torch.zeros(len(usable), width, len(FEATURES), dtype=torch.float64)  # (N, C, F)
    pad = torch.ones(len(usable), width, dtype=torch.bool)
    for n, (f, _) in enumerate(usable):
        x[n, : f.shape[0]] = torch.from_numpy(f)
        pad[n, : f.shape[0]] = False
    y = torch.tensor([target for _, target in usable])
    weights = nn.Parameter(torch.tensor([1.0] + [0.0] * (len(FEATURES) - 1), dtype=torch.float64))
    optimiser = torch.optim.Adam([weights], lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        optimiser.zero_grad()
        logits = (x @ weights).masked_fill(pad, -math.inf)  # (N, C)
        loss = nn.functional.cross_entropy(logits, y)
        torch.autograd.backward(loss)
        optimiser.step()
    return tuple(float(w) for w in weights.detach())


def _examples(cases: list[SearchCase], pools: tuple[int, int],
              popularity: np.ndarray) -> list[tuple[np.ndarray, int]]:
    out = []
    for case in cases:
        rows = candidates(case, *pools)
        hit = np.flatnonzero(rows == case.target) if case.target else np.zeros(0, dtype=np.int64)
        out.append((case_features(case, rows, popularity), int(hit[0]) if hit.size else -1))
    return out


def blended_scores(blend: NumpyBlend, case: SearchCase, intent: float = 1.0) -> np.ndarray:
    """The blend's scores of every row for a case: its union in the blend's order, every other row below it
    (row 0 never wins)."""
    rows = candidates(case, blend.pool, blend.user_pool)
    blended = blend.scores(rows, case.text[rows], case.personal[rows], case.recent, intent)
    out = np.full(case.text.size, blended.min() - 1.0 if blended.size else 0.0)
    out[rows] = blended
    out[0] = -math.inf
    return out


def recall_at(cases: list[SearchCase], blend: SearchBlend, k: int = 20) -> float:
    """Recall@k of the blend over cases with a known target."""
    scorer = NumpyBlend(blend)
    known = [c for c in cases if c.target]
    hits = sum(int(c.target in set(_top(blended_scores(scorer, c), k).tolist())) for c in known)
    return hits / max(len(known), 1)


def fit_search_blend(model: SequenceModel, sequences: dict[str, UserSequence], query_vectors: np.ndarray,
                     counts: np.ndarray, cutoff: float, seed: int) -> tuple[SearchBlend, dict[str, object]]:
    """The blend fitted on the searches before ``cutoff`` (popularity from ``counts``, the training period's
    item counts by row), and what the choice saw: validation Recall@20 per pool."""
    popularity = log_popularity(counts.astype(np.float64))
    cases = [c for c in search_cases(model, sequences, query_vectors, -math.inf, cutoff) if c.target]
    if len(cases) < 10:
        raise TrainingError(f"{len(cases)} training-period searches with a known target; the blend needs 10")
    cases.sort(key=lambda c: c.ts)
    split = int(len(cases) * (1.0 - VALIDATION_SHARE))
    fit, validation = cases[:split], cases[split:]
    chosen: dict[str, float] = {}
    table = tuple(popularity.tolist())
    for pools in POOLS:
        weights = fit_weights(_examples(fit, pools, popularity), seed)
        chosen[f"{pools[0]}/{pools[1]}"] = recall_at(validation, SearchBlend(pools[0], weights, table,
                                                                              personal_pool=pools[1]))
    best = max(chosen.values())
    pools = min((p for p in POOLS if chosen[f"{p[0]}/{p[1]}"] >= best - TOLERANCE), key=lambda p: (sum(p), p))
    # The carried intent: chosen on the item events after the validation slice's searches, with the blend
    # fitted on the earlier searches.
    early = SearchBlend(pools[0], fit_weights(_examples(fit, pools, popularity), seed), table, personal_pool=pools[1])
    follows = list(follow_cases(model, sequences, query_vectors, validation[0].ts, cutoff))
    carried, carry_seen = choose_carry(early, follows)
    weights = fit_weights(_examples(cases, pools, popularity), seed)
    blend = replace(carried, weights=weights)
    return blend, {"searches": len(cases), "validation": len(validation), "validation_recall@20": chosen,
                   "pool": pools[0], "personal_pool": pools[1], "weights": dict(zip(FEATURES, weights, strict=True)),
                   "validation_next_events": len(follows), "validation_next_recall@20": carry_seen,
                   "carry_events": blend.carry_events, "carry_half_life_s": blend.carry_half_life_s}


FOLLOWING = 3  # item events after a search whose lists its carried query may shape
CARRY_EVENTS = (0.0, 0.3, 0.5, 0.7, 0.9)  # per item event since the search; 0: not carried
CARRY_HALF_LIVES_S = (600.0, 3600.0, 86_400.0)


@dataclass
class FollowCase:
    """An item event after a search: the case of the search's query at that event, and how far after it."""

    case: SearchCase  # its target is the item event's item; personal: the model's scores before it
    events: int  # item events between the search and this one: the list it follows was made after that many
    seconds: float  # from the search to the event whose list this one follows


def follow_cases(model: SequenceModel, sequences: dict[str, UserSequence], query_vectors: np.ndarray,
                 since: float, until: float = math.inf) -> Iterator[FollowCase]:
    """The first FOLLOWING item events after each search with ``since <= ts < until``, up to the next search
    and before ``until`` too (a validation slice's item events must not reach into the test period)."""
    for found in _user_searches(model, sequences, query_vectors, since, until):
        seq = found.seq
        pairs: list[tuple[int, int, int, float]] = []  # (search, item event, item events between, seconds)
        for t in found.positions:
            n, listed_at = 0, float(seq.ts[t])
            for t2 in range(t + 1, len(seq.ts)):
                if seq.types[t2] == SEARCH_TYPE or seq.ts[t2] >= until:
                    break
                if seq.types[t2] != 0:
                    pairs.append((t, t2, n, listed_at - float(seq.ts[t])))
                    n, listed_at = n + 1, float(seq.ts[t2])
                    if n == FOLLOWING:
                        break
        if not pairs:
            continue
        personal, text = found.scores([t for t, _, _, _ in pairs], [t2 for _, t2, _, _ in pairs])
        for p, (_, t2, n, seconds) in enumerate(pairs):
            case = SearchCase(found.user, float(seq.ts[t2]), int(seq.items[t2]), text[p], personal[p],
                              found.recent(t2))
            yield FollowCase(case, n, seconds)


def carried_scores(blend: NumpyBlend, follow: FollowCase) -> np.ndarray:
    """The scores of every row in the list an item event after a search follows: the search's own list (the
    blend) for the first, then the blend with the query's part weighed by the carried intent, and the
    model's own list once the query no longer counts."""
    weight = blend.intent(follow.events, follow.seconds)
    return follow.case.personal if weight < MIN_INTENT else blended_scores(blend, follow.case, weight)


def hit_rate(follows: list[FollowCase], blend: NumpyBlend, k: int = 20) -> float:
    """Recall@k of the items of ``follows`` under :func:`carried_scores`."""
    known = [f for f in follows if f.case.target]
    hits = sum(int(f.case.target in set(_top(carried_scores(blend, f), k).tolist())) for f in known)
    return hits / max(len(known), 1)


def choose_carry(blend: SearchBlend, follows: list[FollowCase]) -> tuple[SearchBlend, dict[str, float]]:
    """The carry settings with the best next-event Recall@20 on ``follows`` (not carried on a tie)."""
    seen: dict[str, float] = {}
    best = (hit_rate(follows, NumpyBlend(replace(blend, carry_events=0.0))), 0.0, blend.carry_half_life_s)
    seen["off"] = best[0]
    for per_event in CARRY_EVENTS[1:]:
        for half_life in CARRY_HALF_LIVES_S:
            recall = hit_rate(follows, NumpyBlend(replace(blend, carry_events=per_event,
                                                          carry_half_life_s=half_life)))
            seen[f"{per_event}/{half_life:.0f}s"] = recall
            if recall > best[0]:
                best = (recall, per_event, half_life)
    return replace(blend, carry_events=best[1], carry_half_life_s=best[2]), seen
