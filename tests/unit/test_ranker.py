"""The learned re-ranker: its rule tables, its fit, and that the worker scores exactly as the evaluation does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.artifact import ModelArtifact
from encoders.models.gru import RecurrentConfig, RecurrentModel
from encoders.models.ranker import FEATURES, Ranker, RankerConfig, RankerShape
from encoders.models.session_head import SessionHeadConfig
from encoders.serving import UserEncoder
from encoders.training.baselines import ItemKnn
from encoders.training.evaluation import model_scorer
from encoders.training.item_knn_mix import Mix, knn_table, with_mix
from encoders.training.ranker_fit import fit_ranker, ranker_tables, with_ranker
from encoders.training.sequences import UserSequence
from stream.errors import TrainingError


def _seq(items: list[int], start: float = 0.0, step: float = 1.0) -> UserSequence:
    n = len(items)
    return UserSequence(np.array(items), np.ones(n, np.int64), np.zeros((n, 8), np.int64),
                        np.arange(n, dtype=np.float64) * step + start)


def test_rules_say_what_follows_and_what_precedes_an_item() -> None:
    # 1 -> 2 (gap 1) twice, 1 -> 3 (gap 2) twice: P(2 follows 1) = 2 / 3, P(3 follows 1) = 1 / 3.
    tables = ranker_tables({"a": _seq([1, 2, 3]), "b": _seq([1, 2, 3])}, cutoff=10.0, n_items=4, rules=3)
    follows = dict(zip(tables.follow_idx[1].tolist(), tables.follow_w[1].tolist(), strict=True))
    assert follows[2] == pytest.approx(2 / 3, abs=1e-6) and follows[3] == pytest.approx(1 / 3, abs=1e-6)
    assert 1 not in follows  # nothing follows itself here, and 1 follows nothing
    precedes = dict(zip(tables.precede_idx[3].tolist(), tables.precede_w[3].tolist(), strict=True))
    assert precedes[2] == pytest.approx(1.0, abs=1e-6)  # 3 is all that follows 2
    assert precedes[1] == pytest.approx(1 / 3, abs=1e-6)
    assert tables.popularity[1] == pytest.approx(np.log1p(2) / 10)
    assert tables.popularity[4] == 0.0


def test_rules_and_popularity_see_only_events_before_the_cutoff() -> None:
    tables = ranker_tables({"a": _seq([1, 2, 3, 4], step=10.0)}, cutoff=15.0, n_items=4, rules=3)  # keeps 1, 2
    assert tables.follow_idx[2].max() == 0 and tables.popularity[3] == 0.0
    assert set(tables.follow_idx[1].tolist()) == {2, 0}


def test_fit_learns_to_put_the_marked_candidate_first() -> None:
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(300):
        features = rng.normal(size=(12, len(FEATURES))).astype(np.float32)
        target = int(rng.integers(12))
        features[:, FEATURES.index("is_second_last")] = 0.0
        features[target, FEATURES.index("is_second_last")] = 1.0
        examples.append((features, target))
    ranker = Ranker(n_items=3, hidden=8, rules=2)
    losses = fit_ranker(ranker, examples, RankerConfig(hidden=8, epochs=20, lr=1e-2), seed=1)
    assert losses[-1] < 0.2 * losses[0]
    features, target = examples[0]
    with torch.no_grad():
        scores = ranker.mlp((torch.from_numpy(features) - ranker.mean) / ranker.std).squeeze(-1)
    assert int(scores.argmax()) == target


def test_fit_refuses_examples_without_a_reachable_target() -> None:
    with pytest.raises(TrainingError, match="candidates"):
        fit_ranker(Ranker(3, 4, 2), [(np.zeros((5, len(FEATURES)), np.float32), -1)], RankerConfig(), seed=0)


def _ranked_model(candidates: int) -> RecurrentModel:
    train = {f"u{n}": _seq([1, 2, 3, 6, 7]) for n in range(4)} | {"v": _seq([4, 5, 1, 8, 2])}
    torch.manual_seed(5)
    model = RecurrentModel(RecurrentConfig(n_items=9, dim=8, hidden=8, head=SessionHeadConfig(repeat_window=4))).eval()
    assert model.repeat is not None
    with torch.no_grad():
        model.repeat.weight.normal_()
    mixed = with_mix(model, knn_table(ItemKnn(train, 50.0, 9).similarity, 4),
                     Mix(repeat_scale=0.5, knn_weight=2.0, validation={}))
    ranked = with_ranker(mixed, RankerConfig(hidden=6, candidates=candidates, rules=3),
                         ranker_tables(train, 50.0, 9, 3))
    assert isinstance(ranked, RecurrentModel) and ranked.ranker is not None
    assert ranked.config.head == SessionHeadConfig(repeat_window=4, neighbours=4,  # the fit settings stay out
                                                   ranker=RankerShape(hidden=6, candidates=candidates, rules=3))
    with torch.no_grad():
        for p in ranked.ranker.mlp.parameters():
            p.normal_()
    return ranked


def test_served_lists_equal_the_evaluation_order() -> None:
    """The worker's rescore (index candidates + session head + ranker) orders items as the evaluation does."""
    model = _ranked_model(candidates=5)
    ids = [f"i{n}" for n in range(1, 10)]
    history = _seq([1, 4, 2, 1, 3], start=100.0)
    offline = model_scorer(model)(history, [4])[0]  # scores for the event after the first four
    encoder = UserEncoder(ModelArtifact(model, ids, "v", "test", {}, Path(".")))
    assert encoder.search_depth == 5
    state = encoder.initial_state()
    for row in history.items[:4]:
        state = encoder.step(state, "click", ids[row - 1])
    query = encoder.query_vector(state)
    everything = [(item, 0.0) for item in ids]  # an exact index returning every item
    served = dict(encoder.rescore(query, [("click", ids[r - 1]) for r in history.items[:4]], everything))
    assert set(served) == set(ids)
    for item, score in served.items():
        assert abs(score - offline[int(item[1:])]) <= 1e-5
    order = sorted(served, key=lambda i: -served[i])
    assert order == sorted(ids, key=lambda i: -offline[int(i[1:])])


def test_ranker_reorders_only_the_best_candidates() -> None:
    model = _ranked_model(candidates=3)
    plain = _ranked_model(candidates=3)
    plain.ranker = None  # the same mix without the second stage
    history = _seq([1, 4, 2, 1, 3], start=100.0)
    mixed = model_scorer(plain)(history, [4])[0][1:]
    ranked = model_scorer(model)(history, [4])[0][1:]
    best = set(np.argsort(-mixed)[:3].tolist())
    assert set(np.argsort(-ranked)[:3].tolist()) == best  # the same three on top, in the ranker's order
    rest = [i for i in np.argsort(-mixed).tolist() if i not in best]
    assert [i for i in np.argsort(-ranked).tolist() if i not in best] == rest  # the others keep the mix's order


def test_unknown_index_items_go_below_the_ranked_ones() -> None:
    model = _ranked_model(candidates=3)
    encoder = UserEncoder(ModelArtifact(model, [f"i{n}" for n in range(1, 10)], "v", "test", {}, Path(".")))
    query = encoder.query_vector(encoder.step(encoder.initial_state(), "click", "i1"))
    served = encoder.rescore(query, [("click", "i1")], [("new-item", 99.0), ("i2", 0.0)])
    scores = dict(served)
    assert scores["new-item"] < min(s for item, s in served if item != "new-item")


def test_a_ranker_example_is_the_served_candidates_and_the_targets_place_among_them() -> None:
    from encoders.models.ranker import NumpyRanker
    from encoders.models.session_head import NumpyRepeatHead
    from encoders.training.ranker_fit import ranker_example

    model = _ranked_model(candidates=3)
    assert model.repeat is not None and model.ranker is not None
    history = _seq([1, 4, 2, 1, 3], start=100.0)
    scores = model_scorer(model)(history, [4])[0]
    scores[0] = -np.inf
    order = np.argsort(-scores)  # the served order: the three candidates first
    head, ranker = NumpyRepeatHead(model.repeat), NumpyRanker(model.ranker, 3)
    q = model.history_queries(torch.from_numpy(history.items), torch.from_numpy(history.types),
                              torch.from_numpy(history.tokens), [4]).detach().numpy()[0]
    emb = model.item_weight().detach().numpy()
    features, position = ranker_example(head, ranker, q, emb, history.items[:4], history.types[:4], int(order[1]))
    assert features.shape == (3, len(FEATURES)) and 0 <= position < 3
    features, position = ranker_example(head, ranker, q, emb, history.items[:4], history.types[:4], int(order[5]))
    assert position == -1 and features.shape[0] == 0
