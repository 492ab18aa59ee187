"""The metrics module against a fresh registry per test: names, units, buckets, pre-created series."""

from __future__ import annotations

import gc
import re

from prometheus_client import CollectorRegistry, generate_latest

from stream.core.metrics import LATENCY_BUCKETS, STAGES, Metrics


def test_names_follow_streamrec_component_what_unit() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    names = {m.name + ("_info" if m.type == "info" else "") for m in registry.collect()}
    assert names, "no metric registered"
    for name in names:
        assert re.fullmatch(r"streamrec_[a-z]+_[a-z_]+", name), name
    assert "streamrec_worker_event_to_recommendation_seconds" in names


def test_latency_buckets_span_1_ms_to_5_s_and_stages_exist_from_the_start() -> None:
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 5.0
    registry = CollectorRegistry()
    Metrics(registry)
    for stage in STAGES:
        assert registry.get_sample_value("streamrec_pipeline_stage_seconds_count", {"stage": stage}) == 0.0


def test_each_registry_counts_on_its_own() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ma, _ = Metrics(a), Metrics(b)
    ma.events.labels(event_type="click").inc(3)
    ma.event_to_recommendation.labels(event_type="click", variant="default").observe(0.004)
    assert a.get_sample_value("streamrec_worker_events_total", {"event_type": "click"}) == 3
    assert b.get_sample_value("streamrec_worker_events_total", {"event_type": "click"}) is None
    assert a.get_sample_value("streamrec_worker_event_to_recommendation_seconds_bucket",
                              {"event_type": "click", "variant": "default", "le": "0.005"}) == 1
    assert a.get_sample_value("streamrec_worker_event_to_recommendation_seconds_bucket",
                              {"event_type": "click", "variant": "default", "le": "0.003"}) == 0
    text = generate_latest(a).decode()
    assert 'streamrec_worker_events_total{event_type="click"} 3.0' in text


def test_gc_pauses_are_timed_per_generation() -> None:
    registry = CollectorRegistry()
    now = [10.0]
    on_gc = Metrics(registry).gc_callback(clock=lambda: now[0])
    on_gc("start", {"generation": 2})
    now[0] = 10.122
    on_gc("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    sample = registry.get_sample_value
    assert sample("streamrec_worker_gc_pause_seconds_count", {"generation": "2"}) == 1
    assert abs((sample("streamrec_worker_gc_pause_seconds_sum", {"generation": "2"}) or 0) - 0.122) < 1e-9
    assert sample("streamrec_worker_gc_pause_seconds_bucket", {"generation": "2", "le": "0.1"}) == 0
    assert sample("streamrec_worker_gc_pause_seconds_count", {"generation": "0"}) == 0  # exported from the start

    real = Metrics(CollectorRegistry())
    callback = real.gc_callback()
    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert real.registry.get_sample_value("streamrec_worker_gc_pause_seconds_count", {"generation": "2"}) == 1


def test_freeze_heap_leaves_the_collector_little_to_walk() -> None:
    from stream.kafka.faust_options import freeze_heap

    try:
        frozen = freeze_heap()
        assert frozen == gc.get_freeze_count() > 10_000  # this process has pytest, numpy, prometheus loaded
        assert len(gc.get_objects()) < frozen // 10
    finally:
        gc.unfreeze()
