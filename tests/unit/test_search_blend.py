"""The search blend: its features, its scorer, its file in the artifact, and its fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.models.search_blend import (
    FEATURES,
    FILE,
    TEXT_PART,
    NumpyBlend,
    SearchBlend,
    candidate_features,
    features,
    log_popularity,
    union,
)
from encoders.training.search_fit import fit_weights
from stream.errors import ArtifactError, TrainingError


def test_features_are_scale_free_where_the_model_score_is_not() -> None:
    text = np.array([0.9, 0.1, 0.5])
    personal = np.array([10.0, 30.0, 20.0])
    f = features(text, personal, np.array([0.2, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    assert f.shape == (3, len(FEATURES))
    assert np.allclose(f[:, 1], [1.0, 1 / 3, 1 / 2])  # reciprocal text ranks
    assert np.allclose(f[:, 3], [1 / 3, 1.0, 1 / 2])  # reciprocal personal ranks
    scaled = features(text, personal * 100.0 + 7.0, np.zeros(3), np.zeros(3))
    assert np.allclose(f[:, 2], scaled[:, 2])  # the z-score ignores the model's scale
    assert np.allclose(f[:, 2].mean(), 0.0)


def test_union_keeps_text_first_and_each_row_once() -> None:
    assert union(np.array([5, 3, 9]), np.array([3, 7, 5, 2])).tolist() == [5, 3, 9, 7, 2]


def test_popularity_feature_is_zero_for_unknown_items_and_one_for_the_most_popular() -> None:
    pop = log_popularity(np.array([50.0, 0.0, 9.0, 99.0]))
    assert pop[0] == 0.0 and pop[3] == pytest.approx(1.0) and 0.0 < pop[2] < 1.0 and pop[1] == 0.0


def test_the_scorer_ranks_by_text_alone_when_only_text_weighs() -> None:
    blend = NumpyBlend(SearchBlend(pool=10, weights=(1.0, 0, 0, 0, 0, 0), popularity=(0.0, 0.3, 0.2, 0.1)))
    rows = np.array([1, 2, 3])
    scores = blend.scores(rows, np.array([0.1, 0.9, 0.4]), np.array([5.0, 1.0, 3.0]), [])
    assert np.argsort(-scores).tolist() == [1, 2, 0]


def test_recent_counts_only_items_the_model_knows() -> None:
    blend = NumpyBlend(SearchBlend(pool=10, weights=(0, 0, 0, 0, 0, 1.0), popularity=(0.0, 0.0, 0.0)))
    scores = blend.scores(np.array([0, 2]), np.array([0.5, 0.5]), np.zeros(2), [0, 2])
    assert scores.tolist() == [0.0, 0.5]  # row 0 (an item new to the model) is never "recent"


def test_recent_and_popular_count_only_as_far_as_the_item_matches_the_query() -> None:
    f = features(np.array([0.8, 0.0, -0.3]), np.zeros(3), np.ones(3), np.ones(3))
    assert f[:, 4].tolist() == [0.8, 0.0, 0.0] and f[:, 5].tolist() == [0.8, 0.0, 0.0]


def test_the_blend_round_trips_through_its_file_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    assert SearchBlend.load(tmp_path) is None  # a model without one
    blend = SearchBlend(pool=50, weights=(2.0, 0.5, -0.1, 0.3, 1.0, 2.5), popularity=(0.0, 0.5, 1.0))
    blend.save(tmp_path)
    assert SearchBlend.load(tmp_path) == blend
    (tmp_path / FILE).write_text('{"pool": 50, "weights": [1.0]}')
    with pytest.raises(ArtifactError, match="search blend"):
        SearchBlend.load(tmp_path)
    with pytest.raises(ArtifactError, match="6 weights"):
        SearchBlend(weights=(1.0,))


def test_the_fit_learns_the_feature_that_finds_the_target() -> None:
    rng = np.random.default_rng(3)
    examples = []
    for _ in range(200):
        f = rng.normal(size=(30, len(FEATURES)))
        target = int(np.argmax(f[:, 5]))  # the target is always the most "recent" candidate
        examples.append((f, target))
    examples.append((rng.normal(size=(12, len(FEATURES))), -1))  # a target outside the union: ignored
    weights = fit_weights(examples, seed=1)
    assert weights[5] == max(weights) and weights[5] > 1.0
    hits = sum(int(np.argmax(f @ np.asarray(weights)) == y) for f, y in examples if y >= 0)
    assert hits / 200 > 0.9
    with pytest.raises(TrainingError):
        fit_weights([(np.zeros((3, len(FEATURES))), -1)], seed=1)


def test_the_scorer_is_the_features_times_the_weights_with_the_text_part_weighed_by_intent() -> None:
    rng = np.random.default_rng(2)
    for case in range(20):
        weights = tuple(float(w) if case % 3 else 0.0 if n % 2 else float(w)
                        for n, w in enumerate(rng.standard_normal(len(FEATURES))))
        blend = NumpyBlend(SearchBlend(pool=5, weights=weights, popularity=tuple(rng.random(31))))
        size = int(rng.integers(0, 25))
        rows = rng.integers(0, 31, size=size)
        text, personal = rng.uniform(-0.3, 1.0, size=size), rng.standard_normal(size) * 4
        personal[: size // 5] = 1.5  # ties, and all equal when size < 5
        recent = rng.choice(31, size=int(rng.integers(0, 6)), replace=False).tolist()
        intent = (1.0, 0.4)[case % 2]
        f = candidate_features(rows, text, personal, blend.popularity, recent)
        f[:, TEXT_PART] *= intent
        assert np.allclose(blend.scores(rows, text, personal, recent, intent), f @ blend.weights, atol=1e-9)
