"""Versioned model artifacts: a folder with safetensors weights, config JSON and the item id map.

    <root>/<version>/model.safetensors   weights (no pickle anywhere)
    <root>/<version>/config.json         format, version, dataset, model config, training metrics
    <root>/<version>/items.json          item ids; entry i is embedding row i + 1
    <root>/<version>/search_blend.json   optional: the search blend (encoders/models/search_blend.py)
    <root>/<version>/live.json           optional: the live table's settings (encoders/models/live_neighbours.py)

The folder is written under a temporary name and renamed, so a reader never sees half an artifact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from encoders.models.live_neighbours import LiveConfig
from encoders.models.registry import MODELS, SequenceModel, model_from_config
from encoders.models.search_blend import SearchBlend
from stream.errors import ArtifactError

FORMAT_VERSION = 1
_FILES = ("model.safetensors", "config.json", "items.json")


@dataclass
class ModelArtifact:
    """A loaded model ready to serve."""

    model: SequenceModel
    item_ids: list[str]
    version: str
    dataset: str
    metrics: dict[str, Any]
    path: Path
    search_blend: SearchBlend | None = None  # search_blend.json, for a model that answers searches by text
    live: LiveConfig | None = None  # live.json: how the model learns item neighbours from the stream


def save_artifact(model: SequenceModel, item_ids: list[str], metrics: dict[str, Any], dataset: str,
                  root: Path, search_blend: SearchBlend | None = None, live: LiveConfig | None = None) -> Path:
    """Write a new versioned artifact under ``root`` (with the model's search blend and live-table settings,
    if it has them) and return its folder."""
    if len(item_ids) != model.config.n_items:
        raise ArtifactError(f"{len(item_ids)} item ids for a model of {model.config.n_items} items")
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].numpy().tobytes())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    version = f"{model.config.cell}-{dataset}-{stamp}-{digest.hexdigest()[:8]}"
    final = root / version
    tmp = root / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"))
    config = {"format_version": FORMAT_VERSION, "version": version, "dataset": dataset,
              "model_type": model.config.cell, "model_config": model.config.to_dict(),
              "created_at": dt.datetime.now(dt.UTC).isoformat(), "metrics": metrics}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "items.json").write_text(json.dumps(item_ids) + "\n")
    if search_blend is not None:
        search_blend.save(tmp)
    if live is not None:
        live.save(tmp)
    os.replace(tmp, final)
    return final


def load_artifact(path: Path) -> ModelArtifact:
    """Load and check an artifact folder; ArtifactError says what is wrong."""
    if not path.is_dir():
        raise ArtifactError(f"model artifact {path} is not a directory")
    missing = [f for f in _FILES if not (path / f).is_file()]
    if missing:
        raise ArtifactError(f"model artifact {path} lacks {', '.join(missing)}")
    try:
        config = json.loads((path / "config.json").read_text())
        item_ids = json.loads((path / "items.json").read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"model artifact {path}: unreadable JSON ({exc})") from None
    model_type = config.get("model_type")
    if model_type == "recurrent":  # artifacts written before the Transformer name the cell in model_config
        model_type = config.get("model_config", {}).get("cell")
    if config.get("format_version") != FORMAT_VERSION or model_type not in MODELS:
        raise ArtifactError(f"model artifact {path}: unsupported format {config.get('format_version')!r} "
                            f"or model type {model_type!r}")
    try:
        model = model_from_config(str(model_type), config["model_config"])
        model_config = model.config
        state = load_file(str(path / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors and torch raise many types for corrupt files
        raise ArtifactError(f"model artifact {path}: cannot load weights ({exc})") from None
    if not isinstance(item_ids, list) or len(item_ids) != model_config.n_items:
        raise ArtifactError(f"model artifact {path}: items.json does not match the model's "
                            f"{model_config.n_items} items")
    model.eval()
    return ModelArtifact(model=model, item_ids=[str(i) for i in item_ids], version=str(config["version"]),
                         dataset=str(config.get("dataset", "")), metrics=config.get("metrics", {}), path=path,
                         search_blend=SearchBlend.load(path), live=LiveConfig.load(path))


def latest_artifact(root: Path, dataset: str = "*", cell: str = "*") -> Path | None:
    """The newest complete artifact (by its creation stamp) under ``root``, optionally of one dataset/cell."""
    if not root.is_dir():
        return None
    found = [p for p in root.glob(f"{cell}-{dataset}-*") if all((p / f).is_file() for f in _FILES)]
    return max(found, key=lambda p: p.name.rsplit("-", 2)[-2]) if found else None


def resolve_artifact(path: Path, model_type: str = "") -> Path:
    """``path`` itself when it is an artifact, else the newest artifact inside it (of ``model_type`` if set)."""
    if (path / "config.json").is_file():
        return path
    found = latest_artifact(path, cell=model_type or "*")
    if found is None:
        kind = f"{model_type} " if model_type else ""
        raise ArtifactError(f"no {kind}model artifact in {path} (train one: streamrec train)")
    return found
