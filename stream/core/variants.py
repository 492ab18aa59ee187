"""A/B variants: several models (or re-rank settings) served side by side, each user in exactly one.

Declared in the setting ``variants`` as JSON, e.g.::

    [{"name": "gru", "share": 0.5},
     {"name": "sasrec", "share": 0.5, "model": ".streamrec/models", "model_type": "sasrec", "diversity": 0.3}]

``model`` (an artifact or a folder of artifacts) defaults to the setting ``model_path``; ``model_type``,
``diversity`` and ``explanations`` default to the settings of the same name. Shares must add up to 1.
A user's variant is a pure function of ``experiment_salt`` and the user id (SHA-1, not Python's salted
``hash``), so it is the same on every worker, after every restart, and changes only with the salt or the
shares. With no variants declared, everyone is in the one variant ``default``.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.errors import ConfigError

DEFAULT = "default"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class VariantSpec:
    """One arm of the experiment."""

    name: str
    share: float
    model: Path | None = None  # None: the setting model_path
    model_type: str | None = None  # None: the setting model_type
    diversity: float | None = None  # None: the setting diversity
    explanations: int | None = None  # None: the setting explanations


def parse_variants(raw: str) -> tuple[VariantSpec, ...]:
    """The ``variants`` setting, checked; raises ConfigError("variants", why)."""
    if not raw.strip():
        return (VariantSpec(DEFAULT, 1.0),)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError("variants", f"not valid JSON: {exc}") from None
    if not isinstance(body, list) or not body or not all(isinstance(v, dict) for v in body):
        raise ConfigError("variants", "expected a non-empty JSON list of objects")
    specs = tuple(_spec(v) for v in body)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError("variants", f"variant names must be distinct, got {names}")
    total = sum(s.share for s in specs)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError("variants", f"shares must add up to 1, they add up to {total:g}")
    return specs


def _spec(body: dict[str, Any]) -> VariantSpec:
    unknown = set(body) - {"name", "share", "model", "model_type", "diversity", "explanations"}
    if unknown:
        raise ConfigError("variants", f"unknown keys {sorted(unknown)}")
    name, share = body.get("name"), body.get("share")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("variants", f"name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError("variants", f"{name}: share must be a number in (0, 1]")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not Path(model).is_dir()):
        raise ConfigError("variants", f"{name}: model {model!r} is not a directory")
    model_type = body.get("model_type")
    if model_type is not None and model_type not in ("gru", "lstm", "sasrec"):
        raise ConfigError("variants", f"{name}: model_type must be gru, lstm or sasrec")
    diversity = body.get("diversity")
    if diversity is not None and (isinstance(diversity, bool) or not isinstance(diversity, (int, float))
                                  or not 0 <= diversity <= 1):
        raise ConfigError("variants", f"{name}: diversity must be between 0 and 1")
    explanations = body.get("explanations")
    if explanations is not None and (not isinstance(explanations, int) or not 0 <= explanations <= 3):
        raise ConfigError("variants", f"{name}: explanations must be 0..3")
    return VariantSpec(name, float(share), Path(model) if model else None, model_type,
                       None if diversity is None else float(diversity), explanations)


class Assignment:
    """Maps a user id to a variant name, deterministically."""

    def __init__(self, specs: tuple[VariantSpec, ...], salt: str) -> None:
        self.names = [s.name for s in specs]
        self.salt = salt.encode()
        bounds, acc = [], 0.0
        for spec in specs:
            acc += spec.share
            bounds.append(acc)
        bounds[-1] = 1.0  # rounding must not leave a gap at the top
        self._bounds = bounds

    @staticmethod
    def everyone(name: str = DEFAULT) -> Assignment:
        """Every user in one variant."""
        return Assignment((VariantSpec(name, 1.0),), "")

    def variant_of(self, user_id: str) -> str:
        """The user's variant."""
        if len(self.names) == 1:
            return self.names[0]
        digest = hashlib.sha1(self.salt + b":" + user_id.encode(), usedforsecurity=False).digest()
        point = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
        return self.names[min(bisect.bisect_right(self._bounds, point), len(self.names) - 1)]
