"""``streamrec bench rerank``: what explanations, diversity and learning from the stream add to the serving step.

Replays a dataset's latest events through the data path (real artifact, HNSW index, an in-memory state
table per configuration, the configurations taking turns event by event) and prints one JSON line per
configuration: the median and mean CPU time of the data path per event (and the median per event type, with
the search/click ratio; search queries are encoded before the replay, so MiniLM is not in them, and their
text pools are kept, ``text_pools: kept``, but for one row that drops them before every search, ``cold``), and
the share spent explaining and re-ranking (from the pipeline's own stage timings, wall clock).

The last two lines compare learning off and on (settings' explanations, no diversity), each with its own
served model. With learning on, each event's co-views are counted into a live table (as the co-views agent
does) and the lists that change are applied at once (as every worker does), so the votes are as live as they
can be; the events before the timed ones warm both configurations' states and the table, untimed. Its
``cpu_us_per_event_*`` is the data path's, ``with_table_us_per_event_*`` adds the counting and applying.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from encoders.models.inputs import has_words
from stream.config import Settings
from stream.core.catalog import Catalog
from stream.core.cooccurrence import CoOccurrence
from stream.core.indexed_model import IndexedModel
from stream.core.metrics import Metrics
from stream.core.pipeline import Arm, Outcome, Recommender
from stream.core.schemas import Source
from stream.core.text_pools import TextPools
from stream.core.trending import Trending
from stream.core.variants import DEFAULT, Assignment
from stream.kafka.loading import load_indexed_model, rules_for
from stream.tools.datasets import load_events
from stream.tools.replay import to_wire

CONFIGS = ((0, 0.0), (1, 0.0), (2, 0.0), (0, 0.3), (2, 0.3))  # (explanations, diversity)
WARM_EVENTS = 10_000  # events before the timed ones that warm the learning rows' states and live table


def bench_rerank(settings: Settings, model: Path, dataset: str, events: int) -> list[dict[str, Any]]:
    """One row per (explanations, diversity) configuration, with the search queries' MiniLM vectors, input
    gates and text pools kept from the start, and one more (the settings' explanations, no diversity) that
    finds no text pool kept: each of its searches queries the text index, as a new query does. The
    configurations take turns event by event (each with its own state table and metrics; one served model),
    so a shared machine's drift hits them alike."""
    rules = rules_for(settings)
    served = load_indexed_model(model, settings, Catalog(), rules.filters)
    stream = load_events(dataset, settings.data_dir)[-events:]
    runs: list[tuple[dict[str, Any], CollectorRegistry, Recommender, dict[str, bytes], list[float]]] = []
    for names, diversity, pools in (*((n, d, "kept") for n, d in CONFIGS), (rules.explanations, 0.0, "cold")):
        registry = CollectorRegistry()
        recommender = Recommender([Arm(DEFAULT, served, replace(rules, explanations=names, diversity=diversity))],
                                  Assignment.everyone(), Catalog(), Trending(3600.0),
                                  Metrics(registry))
        runs.append(({"explanations": names, "diversity": diversity, "text_pools": pools}, registry, recommender,
                     {}, []))
    for query in {e.query for e in stream if e.query is not None}:  # cached queries: MiniLM is a bench of its own
        _keep_query(served, query)
    kept = served.text_pools
    types = [event.type for event in stream]
    for n, event in enumerate(stream):
        raw = to_wire(event, time.time()).to_json()
        source = Source(settings.input_topics[event.type], 0, n)
        for config, _, recommender, states, seconds in runs:
            served.text_pools = kept if config["text_pools"] == "kept" else TextPools()
            started = time.process_time()
            recommender.process(event.type, raw, event.user_id.encode(), source, states)
            seconds.append(time.process_time() - started)
    served.text_pools = kept
    rows = []
    for config, registry, _, _, seconds in runs:
        total = float(np.sum(seconds))
        explain_s, rerank_s = (_stage_seconds(registry, name) for name in ("explain", "rerank"))
        by_type = {kind: round(float(np.median([s for s, t in zip(seconds, types, strict=True) if t == kind])) * 1e6, 1)
                   for kind in sorted(set(types))}
        rows.append(config | {
            "events": len(stream),
            "cpu_us_per_event_p50": round(float(np.median(seconds)) * 1e6, 1),
            "cpu_us_per_event_mean": round(total / len(stream) * 1e6, 1),
            "cpu_us_p50_by_type": by_type,
            "search_vs_click_p50": round(by_type["search"] / by_type["click"], 2)
            if "search" in by_type and "click" in by_type else None,
            "explain_share": round(explain_s / total, 4), "rerank_share": round(rerank_s / total, 4),
            "model": served.version, "hybrid_search": served.text_index is not None})
    return rows


def _keep_query(served: IndexedModel, query: str) -> None:
    """Encode a search query into the model's cache and keep its input gates and text pool, as a worker has
    for a query it has answered before."""
    encoder, blend = served.encoder, served.encoder.blend
    text = encoder.encode_text(query)
    encoder.step(encoder.initial_state(), "search", None, text, query)
    if served.text_index is not None and blend is not None and has_words(query):
        vector = encoder.query_text(text)
        if vector is not None:
            served.text_pool(vector, blend.pool, query)


def _stage_seconds(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("streamrec_pipeline_stage_seconds_sum", {"stage": stage}) or 0.0


def bench_learning_cost(settings: Settings, model: Path, dataset: str, events: int) -> list[dict[str, Any]]:
    """Two rows, learning off and on, taking turns event by event (see the module docstring)."""
    live = settings.replace(learning="on").live_config
    assert live is not None
    rules = rules_for(settings)
    stream = load_events(dataset, settings.data_dir)[-(events + WARM_EVENTS):]
    counter = CoOccurrence(live, publish_interval_s=1e-9)  # every change applied at once: the most it can cost
    table: dict[str, bytes] = {}
    runs: list[tuple[str, Recommender, dict[str, bytes], list[float], list[float]]] = []
    for mode in ("off", "on"):
        served = load_indexed_model(model, settings, Catalog(), rules.filters)
        recommender = Recommender([Arm(DEFAULT, served, replace(rules, diversity=0.0,
                                                                learning=live if mode == "on" else None))],
                                  Assignment.everyone(), Catalog(), Trending(3600.0), Metrics(CollectorRegistry()))
        runs.append((mode, recommender, {}, [], []))
    for query in {e.query for e in stream if e.query is not None}:
        for _, recommender, _, _, _ in runs:
            _keep_query(recommender.served, query)
    offset = 0
    for n, event in enumerate(stream):
        raw = to_wire(event, time.time()).to_json()
        source = Source(settings.input_topics[event.type], 0, n)
        for _, recommender, states, path_s, total_s in runs:
            started = time.process_time()
            out = recommender.process(event.type, raw, event.user_id.encode(), source, states)
            done = time.process_time()
            offset = _learn(counter, table, recommender, out, offset)
            if n >= WARM_EVENTS:
                path_s.append(done - started)
                total_s.append(time.process_time() - started)
    rows: list[dict[str, Any]] = []
    for mode, recommender, _, path_s, total_s in runs:
        served = recommender.served
        rows.append({"learning": mode, "explanations": rules.explanations, "events": len(path_s),
                     "cpu_us_per_event_p50": round(float(np.median(path_s)) * 1e6, 1),
                     "cpu_us_per_event_mean": round(float(np.mean(path_s)) * 1e6, 1),
                     "with_table_us_per_event_p50": round(float(np.median(total_s)) * 1e6, 1),
                     "with_table_us_per_event_mean": round(float(np.mean(total_s)) * 1e6, 1),
                     "live_lists": len(served.live_lists), "live_items": len(served.live_vectors),
                     "model": served.version})
    off, on = rows
    on["path_vs_off_mean"] = round(on["cpu_us_per_event_mean"] / off["cpu_us_per_event_mean"], 3)
    on["with_table_vs_off_mean"] = round(on["with_table_us_per_event_mean"] / off["cpu_us_per_event_mean"], 3)
    return rows


def _learn(counter: CoOccurrence, table: dict[str, bytes], recommender: Recommender, out: Outcome,
           offset: int) -> int:
    """Count an outcome's co-views into the live table and apply the lists that changed; the next offset."""
    lists = []
    for view in out.co_views:
        _, published = counter.apply(view, 0, offset, table)
        offset += 1
        if published is not None:
            lists.append(published)
    if lists:
        recommender.apply_neighbours(lists)
    return offset
