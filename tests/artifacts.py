"""Small real model artifacts for tests (trained in seconds on the shared data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from encoders.artifact import save_artifact
from encoders.training.train import TrainConfig, train
from stream.tools.datasets import load_events

QUICK = TrainConfig(epochs=1, seed=7, mix_fraction=0.0, ranker=False)  # the bare model: seconds, not minutes


def small_artifact(dataset: str, data_dir: Path, folder: Path) -> Path:
    """A small GRU trained for one epoch on a real dataset, without the validation slice and its mix: fast,
    and a real artifact."""
    events = load_events(dataset, data_dir)
    result = train(events, cell="gru", config=QUICK, progress=False,
                   options={"dim": 32, "hidden": 32})
    return save_artifact(result.model, result.item_ids, result.metrics, dataset, folder)


def copy_artifact(source: Path, target: Path, version: str, corrupt: bool = False) -> Path:
    """Another release of the same weights (a new version), or a corrupt one (truncated weights)."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["version"] = version
    (target / "config.json").write_text(json.dumps(config))
    if corrupt:
        weights = target / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return target
