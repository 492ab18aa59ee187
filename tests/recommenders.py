"""The single-model data path, as most unit tests want it: one variant, a fresh catalog, trending and registry."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from encoders.serving import UserEncoder
from index.base import ItemIndex
from stream.core.catalog import Catalog
from stream.core.indexed_model import IndexedModel
from stream.core.metrics import Metrics
from stream.core.pipeline import Arm, Recommender, Rules
from stream.core.trending import Trending
from stream.core.variants import DEFAULT, Assignment


def single_model(encoder: UserEncoder | IndexedModel, index: ItemIndex | None = None, rules: Rules | None = None, *,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                 trending: Trending | None = None) -> Recommender:
    """A recommender serving one model (an encoder with its index, or a IndexedModel) to every user."""
    if isinstance(encoder, IndexedModel):
        served = encoder
    else:
        assert index is not None, "an encoder needs its index"
        served = IndexedModel(encoder, index)
    return Recommender([Arm(DEFAULT, served, rules or Rules())], Assignment.everyone(),
                       Catalog(), trending or Trending(6 * 3600.0), metrics or Metrics(CollectorRegistry()), clock)
