"""``streamrec bench rerank``: what explanations and diversity add to the serving step.

Replays a dataset's latest events through the data path (real artifact, HNSW index, an in-memory state
table) once per configuration and prints one JSON line each: the median and p99 CPU time of ``handle`` per
event, and the share of it spent explaining and re-ranking (from the pipeline's own stage timings).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from stream.catalog import Catalog
from stream.config import Settings
from stream.datasets import load_events
from stream.metrics import Metrics
from stream.pipeline import Recommender, Rules
from stream.replay import to_wire
from stream.schemas import Source
from stream.served_model import load_served_model

CONFIGS = ((0, 0.0), (2, 0.0), (0, 0.3), (2, 0.3))  # (explanations, diversity)


def bench_rerank(settings: Settings, model: Path, dataset: str, events: int) -> list[dict[str, Any]]:
    """One row per (explanations, diversity) configuration."""
    rules = Rules.from_settings(settings)
    served = load_served_model(model, settings, Catalog(), rules.filters)
    stream = load_events(dataset, settings.data_dir)[-events:]
    rows = []
    for names, diversity in CONFIGS:
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        recommender = Recommender(served, None, Rules(top_k=settings.top_k, history_size=settings.history_size,
                                                      explanations=names, diversity=diversity), metrics)
        states: dict[str, bytes] = {}
        seconds = []
        for n, event in enumerate(stream):
            wire = to_wire(event, time.time())
            started = time.process_time()
            recommender.handle(event.type, wire.to_json(), event.user_id.encode(),
                               Source(settings.input_topics[event.type], 0, n), states)
            seconds.append(time.process_time() - started)

        explain_s, rerank_s = (_stage_seconds(registry, name) for name in ("explain", "rerank"))
        total = float(np.sum(seconds))
        rows.append({"explanations": names, "diversity": diversity, "events": len(stream),
                     "cpu_us_per_event_p50": round(float(np.median(seconds)) * 1e6, 1),
                     "cpu_us_per_event_mean": round(total / len(stream) * 1e6, 1),
                     "explain_share": round(explain_s / total, 4), "rerank_share": round(rerank_s / total, 4),
                     "model": served.version})
    return rows


def _stage_seconds(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("streamrec_pipeline_stage_seconds_sum", {"stage": stage}) or 0.0
