"""The user encoders by name: ``gru`` and ``lstm`` (gru.py) and ``sasrec`` (transformer.py)."""

from __future__ import annotations

from typing import Any

from encoders.models.gru import RecurrentConfig, RecurrentModel
from encoders.models.transformer import SasrecConfig, SasrecModel
from stream.errors import ConfigError

MODELS = ("gru", "lstm", "sasrec")
SequenceModel = RecurrentModel | SasrecModel


def build_model(name: str, n_items: int, options: dict[str, Any] | None = None) -> SequenceModel:
    """A fresh model of type ``name``; ``options`` are fields of its config dataclass."""
    if name == "sasrec":
        return SasrecModel(SasrecConfig(n_items=n_items, **(options or {})))
    if name in ("gru", "lstm"):
        return RecurrentModel(RecurrentConfig(n_items=n_items, cell=name, **(options or {})))
    raise ConfigError("model", f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def model_from_config(name: str, config: dict[str, Any]) -> SequenceModel:
    """The model described by a saved config (``to_dict`` output) of type ``name``."""
    fields = dict(config)
    n_items = int(fields.pop("n_items"))
    if name != "sasrec":
        name = str(fields.pop("cell", name))
    return build_model(name, n_items, fields)
