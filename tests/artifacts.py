"""Small real model artifacts for tests (trained in seconds on the shared data)."""

from __future__ import annotations

from pathlib import Path

from encoders.artifact import save_artifact
from encoders.training import TrainConfig, train
from stream.datasets import load_events


def small_artifact(dataset: str, data_dir: Path, folder: Path) -> Path:
    """A small GRU trained for one epoch on a real dataset: fast, and a real artifact."""
    events = load_events(dataset, data_dir)
    result = train(events, cell="gru", config=TrainConfig(epochs=1, seed=7), progress=False,
                   options={"dim": 32, "hidden": 32})
    return save_artifact(result.model, result.item_ids, result.metrics, dataset, folder)
