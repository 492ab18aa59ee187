"""The user encoders by name: ``gru`` and ``lstm`` (gru.py) and ``sasrec`` (transformer.py).

Options and saved configs are flat: the model config's own fields plus the session head's
(encoders/models/session_head.py ``FLAT_FIELDS``), which become its ``head`` field.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from encoders.models.gru import RecurrentConfig, RecurrentModel
from encoders.models.session_head import FLAT_FIELDS, PRE_HEAD, SessionHeadConfig
from encoders.models.transformer import SasrecConfig, SasrecModel
from stream.errors import ConfigError

MODELS = ("gru", "lstm", "sasrec")
SequenceModel = RecurrentModel | SasrecModel


def build_model(name: str, n_items: int, options: dict[str, Any] | None = None) -> SequenceModel:
    """A fresh model of type ``name``; ``options`` are fields of its config dataclass and the session head's
    flat fields (``repeat_window=...``), each missing one at its default."""
    head, rest = SessionHeadConfig.from_flat(options or {})
    return _build(name, n_items, head, rest)


def model_from_config(name: str, config: dict[str, Any]) -> SequenceModel:
    """The model described by a saved config (``to_dict`` output) of type ``name``. A head field the config
    lacks was written before that field existed, when it was off (session_head.py ``PRE_HEAD``)."""
    flat = dict(config)
    n_items = int(flat.pop("n_items"))
    if name != "sasrec":
        name = str(flat.pop("cell", name))
    head, rest = SessionHeadConfig.from_flat(flat, absent=PRE_HEAD)
    return _build(name, n_items, head, rest)


def _build(name: str, n_items: int, head: SessionHeadConfig, options: dict[str, Any]) -> SequenceModel:
    if name not in MODELS:
        raise ConfigError("model", f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    config_type = SasrecConfig if name == "sasrec" else RecurrentConfig
    own = {f.name for f in fields(config_type)} - {"n_items", "cell", "head"}
    for key in options:
        if key not in own:
            raise ConfigError(key, f"not an option of the {name} model; its options: "
                                   f"{', '.join([*sorted(own), *FLAT_FIELDS])}")
    if name == "sasrec":
        return SasrecModel(SasrecConfig(n_items=n_items, head=head, **options))
    return RecurrentModel(RecurrentConfig(n_items=n_items, cell=name, head=head, **options))
