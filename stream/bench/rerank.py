"""``streamrec bench rerank``: what explanations and diversity add to the serving step.

Replays a dataset's latest events through the data path (real artifact, HNSW index, an in-memory state
table per configuration, the configurations taking turns event by event) and prints one JSON line per
configuration: the median and mean CPU time of the data path per event (and the median per event type, with
the search/click ratio; search queries are encoded before the replay, so MiniLM is not in them), and the
share spent explaining and re-ranking (from the pipeline's own stage timings, wall clock).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from stream.config import Settings
from stream.core.catalog import Catalog
from stream.core.metrics import Metrics
from stream.core.pipeline import Arm, Recommender
from stream.core.schemas import Source
from stream.core.trending import Trending
from stream.core.variants import DEFAULT, Assignment
from stream.kafka.loading import load_indexed_model, rules_for
from stream.tools.datasets import load_events
from stream.tools.replay import to_wire

CONFIGS = ((0, 0.0), (1, 0.0), (2, 0.0), (0, 0.3), (2, 0.3))  # (explanations, diversity)


def bench_rerank(settings: Settings, model: Path, dataset: str, events: int) -> list[dict[str, Any]]:
    """One row per (explanations, diversity) configuration. The configurations take turns event by event
    (each with its own state table and metrics), so a shared machine's drift hits them alike."""
    rules = rules_for(settings)
    served = load_indexed_model(model, settings, Catalog(), rules.filters)
    stream = load_events(dataset, settings.data_dir)[-events:]
    runs: list[tuple[int, float, CollectorRegistry, Recommender, dict[str, bytes], list[float]]] = []
    for names, diversity in CONFIGS:
        registry = CollectorRegistry()
        recommender = Recommender([Arm(DEFAULT, served, replace(rules, explanations=names, diversity=diversity))],
                                  Assignment.everyone(), Catalog(), Trending(3600.0),
                                  Metrics(registry))
        runs.append((names, diversity, registry, recommender, {}, []))
    for query in {e.query for e in stream if e.query is not None}:  # cached queries: MiniLM is a bench of its own
        served.encoder.encode_text(query)
    types = [event.type for event in stream]
    for n, event in enumerate(stream):
        raw = to_wire(event, time.time()).to_json()
        source = Source(settings.input_topics[event.type], 0, n)
        for _, _, _, recommender, states, seconds in runs:
            started = time.process_time()
            recommender.process(event.type, raw, event.user_id.encode(), source, states)
            seconds.append(time.process_time() - started)
    rows = []
    for names, diversity, registry, _, _, seconds in runs:
        total = float(np.sum(seconds))
        explain_s, rerank_s = (_stage_seconds(registry, name) for name in ("explain", "rerank"))
        by_type = {kind: round(float(np.median([s for s, t in zip(seconds, types, strict=True) if t == kind])) * 1e6, 1)
                   for kind in sorted(set(types))}
        rows.append({"explanations": names, "diversity": diversity, "events": len(stream),
                     "cpu_us_per_event_p50": round(float(np.median(seconds)) * 1e6, 1),
                     "cpu_us_per_event_mean": round(total / len(stream) * 1e6, 1),
                     "cpu_us_p50_by_type": by_type,
                     "search_vs_click_p50": round(by_type["search"] / by_type["click"], 2)
                     if "search" in by_type and "click" in by_type else None,
                     "explain_share": round(explain_s / total, 4), "rerank_share": round(rerank_s / total, 4),
                     "model": served.version, "hybrid_search": served.text_index is not None})
    return rows


def _stage_seconds(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("streamrec_pipeline_stage_seconds_sum", {"stage": stage}) or 0.0
