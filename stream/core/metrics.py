"""Every Prometheus metric of a worker, created against an injected registry.

Names follow ``streamrec_<component>_<what>_<unit>``. Tests build ``Metrics(CollectorRegistry())`` and read
values with ``registry.get_sample_value``; the worker passes the registry it serves on its metrics port.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# 1 ms .. 5 s: the target is milliseconds, the tail must still be visible.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5,
                   1.0, 2.0, 5.0)
STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
STAGES = ("decode", "text_encode", "state", "query", "search", "rerank", "explain", "produce")


class Metrics:
    """The worker's counters and histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.event_to_recommendation = Histogram(
            "streamrec_worker_event_to_recommendation_seconds",
            "Time from the event's ts to the generated_at of the list it triggered.",
            ["event_type", "variant"], buckets=LATENCY_BUCKETS, registry=registry)
        self.stage = Histogram(
            "streamrec_pipeline_stage_seconds", "Time spent per event in each stage of the data path.",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.events = Counter(
            "streamrec_worker_events_total", "Input events consumed (valid or not), by type.",
            ["event_type"], registry=registry)
        self.invalid = Counter(
            "streamrec_worker_invalid_events_total", "Input events rejected by validation, by type and reason.",
            ["event_type", "reason"], registry=registry)
        self.processing_errors = Counter(
            "streamrec_worker_processing_errors_total",
            "Events whose processing raised (a bug or a broken dependency); each is dead-lettered with the "
            "exception.", ["event_type"], registry=registry)
        self.duplicates = Counter(
            "streamrec_worker_duplicate_events_total", "Redelivered events whose state update was skipped.",
            ["event_type"], registry=registry)
        self.unknown_items = Counter(
            "streamrec_worker_unknown_items_total", "Events naming an item the model has no vector for.",
            ["event_type"], registry=registry)
        self.erasures = Counter(
            "streamrec_worker_erasures_total", "Users forgotten on request (state deleted, list tombstoned).",
            registry=registry)
        self.lists = Counter(
            "streamrec_worker_recommendations_total",
            "Recommendation lists produced, by triggering event type and A/B variant.",
            ["event_type", "variant"], registry=registry)
        self.dead_letters = Counter(
            "streamrec_worker_dead_letters_total", "Records sent to the dead-letter topic, by source topic.",
            ["topic"], registry=registry)
        self.live_hits = Counter(
            "streamrec_live_hits_total",
            "Clicks/purchases whose item was in the last list the user received (prequential hit@k).",
            ["event_type", "k", "variant"], registry=registry)
        self.live_opportunities = Counter(
            "streamrec_live_opportunities_total",
            "Clicks/purchases of users who had received a list before (the hit-rate denominator).",
            ["event_type", "k", "variant"], registry=registry)
        self.consumer_lag = Gauge(
            "streamrec_worker_consumer_lag_messages", "Messages in an assigned input partition not yet processed.",
            ["topic", "partition"], registry=registry)
        self.ready = Gauge(
            "streamrec_worker_ready",
            "1 once the worker has read the catalog and the current model releases and answers events.",
            registry=registry)
        self.assigned_partitions = Gauge(
            "streamrec_worker_assigned_partitions", "Input partitions assigned to this worker after a rebalance.",
            registry=registry)
        self.index_items = Gauge(
            "streamrec_index_items", "Items searchable in the serving index.", registry=registry)
        self.state_users = Gauge(
            "streamrec_state_users", "Users held in this worker's state table (its partitions).", registry=registry)
        self.latency_slo = Gauge(
            "streamrec_worker_latency_slo_seconds", "The configured event-to-recommendation p99 objective.",
            registry=registry)
        self.catalog_items = Gauge(
            "streamrec_catalog_items", "Items described by the live catalog (topic items).", registry=registry)
        self.catalog_updates = Counter(
            "streamrec_catalog_updates_total", "Catalog records applied, by operation (upsert, delete).",
            ["op"], registry=registry)
        self.catalog_invalid = Counter(
            "streamrec_catalog_invalid_records_total", "Catalog or model-release records rejected, by reason.",
            ["topic", "reason"], registry=registry)
        self.model_swaps = Counter(
            "streamrec_model_swaps_total", "Published models loaded and swapped in without a restart.",
            registry=registry)
        self.model_reload_failures = Counter(
            "streamrec_model_reload_failures_total",
            "Published models refused (missing, corrupt, wrong type); the previous model kept serving.",
            registry=registry)
        self.gc_pause = Histogram(
            "streamrec_worker_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector (the event loop stops meanwhile), by generation.",
            ["generation"], buckets=GC_BUCKETS, registry=registry)
        self.http_latency = Histogram(
            "streamrec_http_request_duration_seconds",
            "HTTP API requests from arrival to answer, by route template and status code (routed ones included).",
            ["route", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.http_in_flight = Gauge(
            "streamrec_http_requests_in_flight", "HTTP API requests being answered now.", registry=registry)
        self.input_batch = Histogram(
            "streamrec_worker_input_batch_events", "Records an input agent took in one micro-batch, by type.",
            ["event_type"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry)
        self.text_batch = Histogram(
            "streamrec_worker_text_batch_queries", "New search queries encoded in one forward of the text model.",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry)
        # Learning from the stream (stream/core/cooccurrence.py): the data path's co-views, the co-views agent's
        # table and publications, and the lists every worker applies.
        self.co_views = Counter(
            "streamrec_worker_co_views_total", "Co-view records emitted by item events (at most 3 per event).",
            registry=registry)
        self.cooccurrence_updates = Counter(
            "streamrec_cooccurrence_updates_total", "Co-view records counted into the live co-occurrence table.",
            registry=registry)
        self.cooccurrence_duplicates = Counter(
            "streamrec_cooccurrence_duplicates_total",
            "Co-view records redelivered after a restart and skipped (already in the table).", registry=registry)
        self.cooccurrence_items = Gauge(
            "streamrec_cooccurrence_items", "Items with a row in this worker's partitions of the live table.",
            registry=registry)
        self.neighbour_lists_published = Counter(
            "streamrec_cooccurrence_lists_published_total",
            "Neighbour lists published to item-neighbours (when an item's top successors change, rate-limited).",
            registry=registry)
        self.neighbour_lists_applied = Counter(
            "streamrec_worker_neighbour_lists_applied_total", "Neighbour lists from item-neighbours applied.",
            registry=registry)
        self.neighbour_list_age = Gauge(
            "streamrec_worker_neighbour_list_age_seconds",
            "Age of the newest neighbour list applied, when it was applied (publication to use).", registry=registry)
        self.live_items_indexed = Counter(
            "streamrec_worker_live_items_indexed_total",
            "Items the model was not trained on that became listable from their behaviour (votes first, the index "
            "once their successors give them a vector).", registry=registry)
        self.model = Info("streamrec_model", "The model this worker serves, per A/B variant.", ["variant"],
                          registry=registry)
        for stage in STAGES:  # export every stage from the start, so dashboards never see a hole
            self.stage.labels(stage=stage)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def gc_callback(self, clock: Callable[[], float] = time.perf_counter) -> Callable[[str, dict[str, int]], None]:
        """A function for ``gc.callbacks`` that times each collection into ``gc_pause`` (the CLI installs it:
        a stop-the-world pause is a latency outlier no stage timing shows)."""
        children = [self.gc_pause.labels(generation=str(g)) for g in range(3)]
        started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = clock()
            else:
                children[info["generation"]].observe(clock() - started[0])

        return on_gc

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the per-event path would otherwise pay a label lookup (a lock, a
        tuple, a dict probe) for every observation, about a fifth of the data path's CPU."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
