"""The default training recipe: epochs and the item-kNN mix chosen on the validation slice, never a model that
loses to item-kNN there, and the re-ranker only where it pays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from encoders.artifact import load_artifact
from encoders.training.item_knn_mix import Mix, best_fit, not_worse
from encoders.training.streaming_eval import OFFSETS, OLD_ITEM_TOLERANCE, WEIGHTS
from encoders.training.train import TrainConfig
from stream.errors import TrainingError


def _fit(mrr: float, recall: float, knn_mrr: float = 0.20, knn_recall: float = 0.40) -> Mix:
    mix, knn = {"mrr@20": mrr, "recall@20": recall}, {"mrr@20": knn_mrr, "recall@20": knn_recall}
    return Mix(repeat_scale=1.0, knn_weight=8.0, validation={"mix": mix, "model": mix, "item_knn": knn},
               beats_item_knn=not_worse(mix, knn))


def test_a_mix_that_loses_on_either_metric_loses() -> None:
    knn = {"mrr@20": 0.2, "recall@20": 0.4}
    assert not_worse({"mrr@20": 0.2, "recall@20": 0.4}, knn)
    assert not not_worse({"mrr@20": 0.3, "recall@20": 0.39}, knn)  # better MRR does not buy lower recall
    assert not not_worse({"mrr@20": 0.19, "recall@20": 0.5}, knn)


def test_the_best_epoch_is_the_best_one_that_does_not_lose() -> None:
    fits = [_fit(0.25, 0.45), _fit(0.30, 0.39), _fit(0.22, 0.41)]  # the second has the best MRR but less recall
    assert best_fit(fits) == 0


def test_training_fails_with_both_figures_when_every_epoch_loses() -> None:
    with pytest.raises(TrainingError) as raised:
        best_fit([_fit(0.15, 0.35), _fit(0.18, 0.38)])
    message = str(raised.value)
    assert "0.1800" in message and "0.3800" in message  # the best of ours
    assert "0.2000" in message and "0.4000" in message  # item-kNN's
    assert "no model was written" in message


def test_the_defaults_are_the_validated_recipe() -> None:
    config = TrainConfig()
    assert config.mix_fraction > 0 and config.ranker and config.head_fraction == 0


def test_streamrec_train_writes_a_model_that_does_not_lose_to_item_knn_on_validation(data_dir: Path,
                                                                                    tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "stream.cli", "--data-dir", str(data_dir), "train",
                          "--dataset", "diginetica", "--epochs", "2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    validation = printed["validation"]
    assert not_worse(validation["mix"], validation["item_knn"])
    art = load_artifact(Path(printed["artifact"]))
    train = art.metrics["train"]
    assert 1 <= train["mix"]["chosen_epochs"] <= 2 and train["mix"]["validation"] == validation
    ranker = train["ranker"]
    holdout = ranker["holdout"]
    assert holdout["targets"] > 0
    assert ranker["kept"] == (holdout["ranker_mrr@20"] > holdout["mix_mrr@20"])
    assert (art.model.ranker is not None) == ranker["kept"]  # what was decided is what was written
    live = train["live"]  # the live votes' weight and new-item offset, chosen on the same slice in time order
    assert art.live is not None
    assert (art.live.weight, art.live.new_item_offset) == (live["chosen_weight"], live["chosen_offset"])
    tried = live["validation"]
    assert "off" in tried and len(tried) == 1 + len(WEIGHTS) + len(OFFSETS)
    floor = tried["off"]["old_items"]["recall@20"] - OLD_ITEM_TOLERANCE
    fair = {k: v for k, v in tried.items() if k != "off" and v["old_items"]["recall@20"] >= floor}
    assert live["old_items_within_tolerance"] == bool(fair)
    chosen = tried[f"{live['chosen_weight']}/{live['chosen_offset']}"]["overall"]["mrr@20"]
    assert all(chosen >= v["overall"]["mrr@20"] for v in (fair or tried).values() if v is not tried["off"])
