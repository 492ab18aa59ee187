"""The live successor table and the streaming evaluation that walks a period in time order with it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from encoders.artifact import load_artifact
from encoders.models.inputs import TYPE_IDS
from encoders.models.live_neighbours import LiveConfig, LiveNeighbours, Successors, transitions
from encoders.training.streaming_eval import streaming_metrics
from stream.errors import ArtifactError, ConfigError
from stream.tools.learning_report import learning_modes
from stream.tools.report import artifact_sequences

CLICK, PURCHASE = TYPE_IDS["click"], TYPE_IDS["purchase"]


def test_an_event_sends_one_transition_from_each_of_the_last_distinct_items() -> None:
    config = LiveConfig(history=3, purchase_weight=2.0)
    assert transitions([1, 2, 3, 2, 9], 7, CLICK, config) == [(9, 1.0), (2, 0.5), (3, 1 / 3)]
    assert transitions([1, 2, 7], 7, PURCHASE, config) == [(2, 2.0), (1, 1.0)]  # never from itself
    assert transitions([], 7, CLICK, config) == []


def test_counts_halve_every_half_life_of_event_time() -> None:
    config = LiveConfig(half_life_s=100.0)
    row = Successors()
    row.add(5, 1.0, ts=1000.0, config=config)
    row.add(6, 1.0, ts=1100.0, config=config)
    assert row.weights == pytest.approx([0.5, 1.0])
    row.add(5, 1.0, ts=1000.0, config=config)  # a late event decays into the present
    assert row.weights == pytest.approx([1.0, 1.0])
    items, weights = row.normalised()
    assert items.tolist() == [5, 6] and weights.tolist() == pytest.approx([0.5, 0.5])


def test_memory_is_bounded_and_heavy_hitters_stay() -> None:
    config = LiveConfig(neighbours=5, half_life_s=1e12)
    row = Successors()
    rng = np.random.default_rng(0)
    for n in range(2000):  # item 1 follows a third of the time; the rest is a long tail
        row.add(1 if n % 3 == 0 else int(rng.integers(2, 10_000)), 1.0, float(n), config)
        assert len(row.items) <= 5
    assert row.items[int(np.argmax(row.weights))] == 1


def test_votes_follow_the_session_and_new_items_get_a_vector_from_their_successors() -> None:
    live = LiveNeighbours(LiveConfig(history=1))
    live.observe([10], 20, CLICK, 1.0)
    live.observe([10], 30, CLICK, 2.0)
    live.observe([30], 20, CLICK, 3.0)
    items, votes = live.votes([30, 10])  # 10 is the latest: its successors get the full vote
    got = dict(zip(items.tolist(), votes.tolist(), strict=True))
    assert got[20] == pytest.approx(0.5 + 0.8 * 1.0, rel=1e-3) and got[30] == pytest.approx(0.5, rel=1e-3)
    vectors = np.zeros((31, 2))
    vectors[20], vectors[30] = [1.0, 0.0], [0.0, 1.0]
    assert live.vector(10, vectors) == pytest.approx([0.5, 0.5], rel=1e-3)
    assert live.vector(99, vectors) is None  # no successors yet


def test_settings_round_trip_and_a_damaged_file_is_refused(tmp_path: Path) -> None:
    config = LiveConfig(weight=0.5, neighbours=20)
    config.save(tmp_path)
    assert LiveConfig.load(tmp_path) == config
    (tmp_path / "live.json").write_text('{"history": "x"}')
    with pytest.raises(ArtifactError, match="live"):
        LiveConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="learning"):
        learning_modes("on,maybe")


def test_streaming_without_learning_is_the_standard_evaluation_and_learning_ranks_new_items(
        artifact_dir: Path, data_dir: Path) -> None:
    art = load_artifact(artifact_dir)
    sequences, cutoff, vectors = artifact_sequences(art, data_dir)
    off = streaming_metrics(art.model, sequences, cutoff, float("inf"), 20_000, None, vectors)
    standard = art.metrics["eval"]["gru"]
    assert off["overall"]["events"] == standard["events"]
    for key in ("recall@20", "mrr@20", "ndcg@10"):
        assert off["overall"][key] == pytest.approx(standard[key], abs=1e-9)
    assert off["new_items"]["events"] > 100 and off["new_items"]["recall@20"] == 0.0
    on = streaming_metrics(art.model, sequences, cutoff, float("inf"), 20_000, LiveConfig(), vectors)
    assert on["new_items"]["events"] == off["new_items"]["events"]
    assert on["new_items"]["recall@20"] > 0.02  # a new item is recommended from what the stream taught
    assert on["overall"]["recall@20"] > off["overall"]["recall@20"]
    muted = streaming_metrics(art.model, sequences, cutoff, float("inf"), 20_000, replace(LiveConfig(), weight=0.0),
                              vectors)
    assert muted["overall"] != on["overall"]  # the live votes change the lists


def test_evaluate_learning_writes_the_table(artifact_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "stream.cli", "--data-dir", str(data_dir), "evaluate",
                          str(artifact_dir), "--learning", "on,off", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    written = json.loads((tmp_path / "learning.json").read_text())
    for mode in ("on", "off"):
        for name in ("overall", "new_items", "old_items"):
            row = written[mode][name]
            assert set(row) == {"recall@20", "mrr@20", "ndcg@10", "targets"}
        assert written[mode]["overall"]["targets"] == (written[mode]["new_items"]["targets"]
                                                       + written[mode]["old_items"]["targets"])
    assert written["on"]["new_items"]["recall@20"] > written["off"]["new_items"]["recall@20"] == 0.0
    assert "Learning from the stream" in (tmp_path / "report.md").read_text()
