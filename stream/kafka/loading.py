"""What a worker loads from its settings: the data-path rules, the served models with their indexes, and the
recommender that serves them. The core takes these as plain values; only the app factory, the reloader and
the CLI's tools read settings to build them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from encoders.artifact import load_artifact, resolve_artifact
from encoders.serving import UserEncoder
from index.hnsw import HnswIndex
from stream.config import Settings
from stream.core.catalog import Catalog
from stream.core.indexed_model import IndexedModel
from stream.core.metrics import Metrics
from stream.core.pipeline import Arm, Recommender, Rules
from stream.core.rerank import Filters
from stream.core.trending import Trending
from stream.core.variants import Assignment
from stream.errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)


def filters_for(settings: Settings) -> Filters:
    """The filter settings."""
    return Filters(exclude_viewed_last_n=settings.exclude_viewed_last_n,
                   allow=frozenset(settings.category_list("allow")), deny=frozenset(settings.category_list("deny")))


def rules_for(settings: Settings) -> Rules:
    """The data-path settings."""
    return Rules(top_k=settings.top_k, history_size=settings.history_size, max_purchased=settings.max_purchased,
                 max_event_bytes=settings.max_event_bytes, max_future_skew_s=settings.max_future_skew_s,
                 cold_start_events=settings.cold_start_events, diversity=settings.diversity,
                 explanations=settings.explanations, filters=filters_for(settings), learning=settings.live_config)


def load_indexed_model(path: Path, settings: Settings, catalog: Catalog, filters: Filters) -> IndexedModel:
    """Load an artifact (or the newest in a folder) and index its items and the catalog's.

    Raises ArtifactError (missing, corrupt, or not of the configured ``model_type``)."""
    artifact = load_artifact(resolve_artifact(path, settings.model_type))
    encoder = UserEncoder(artifact)
    if settings.model_type and encoder.model_type != settings.model_type:
        raise ArtifactError(f"{artifact.path} is a {encoder.model_type} model; setting model_type says "
                            f"{settings.model_type}")
    index = HnswIndex(encoder.dim, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                      ef=settings.hnsw_ef, capacity=len(encoder.item_ids) + len(catalog))
    text_index = None
    if encoder.blend is not None and encoder.item_text is not None:  # hybrid retrieval for searches
        text_index = HnswIndex(encoder.item_text.shape[1], m=settings.hnsw_m,
                               ef_construction=settings.hnsw_ef_construction, ef=settings.hnsw_ef,
                               capacity=len(encoder.item_ids) + len(catalog))
    served = IndexedModel(encoder, index, artifact, text_index=text_index)
    known = set(encoder.item_ids)
    served.sync([*encoder.item_ids, *(c.item_id for c in catalog.items() if c.item_id not in known)], catalog,
                filters)
    log.info("model %s loaded: %d items indexed (%d from the catalog's text)", encoder.version, len(index),
             len(served.text_vectors))
    return served


def build_recommender(settings: Settings, metrics: Metrics) -> Recommender:
    """Load the model of every A/B variant and index its item embeddings in HNSW (the catalog fills in as it
    is read). A missing or broken artifact is a ConfigError naming the setting."""
    if settings.model_path is None:
        raise ConfigError("model_path", "no model artifact given (train one: streamrec train)")
    torch.set_num_threads(settings.torch_threads)
    catalog = Catalog()
    arms = []
    for spec in settings.variant_specs():
        variant_settings = settings.replace(model_type=spec.model_type or settings.model_type,
                                            diversity=settings.diversity if spec.diversity is None else spec.diversity,
                                            explanations=settings.explanations if spec.explanations is None
                                            else spec.explanations)
        rules = rules_for(variant_settings)
        try:
            served = load_indexed_model(spec.model or settings.model_path, variant_settings, catalog, rules.filters)
        except ArtifactError as exc:
            raise ConfigError("variants" if spec.model else "model_path", f"variant {spec.name}: {exc}") from None
        arms.append(Arm(spec.name, served, rules))
    metrics.index_items.set(len(arms[0].served.index))
    for arm in arms:
        metrics.model.labels(variant=arm.name).info(arm.served.info())
    return Recommender(arms, Assignment(settings.variant_specs(), settings.experiment_salt), catalog,
                       Trending(settings.trending_half_life_s), metrics)
