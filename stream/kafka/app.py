"""create_app: the one place that wires settings, model, index, topics, table and agents together."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import IllegalStateError, KafkaError
from faust.types import TP
from faust.types.tables import TableT
from prometheus_client import CollectorRegistry, ProcessCollector

from stream.config import Settings
from stream.core.cooccurrence import CoOccurrence, NeighbourList, decode_neighbour_list
from stream.core.metrics import Metrics
from stream.core.pipeline import Recommender
from stream.core.schemas import ItemRecord, ModelRelease, Source, dead_letter, decode_item, decode_release
from stream.errors import InvalidEvent
from stream.kafka.agents import AgentFun, make_agent, make_erasure_agent
from stream.kafka.cooccurrence_agent import make_cooccurrence_agent, publish_due
from stream.kafka.faust_options import new_app
from stream.kafka.follow import follow
from stream.kafka.http_api import Readiness, install_http_api
from stream.kafka.loading import build_recommender
from stream.kafka.reload import ModelReloader
from stream.kafka.state_table import StateTable
from stream.kafka.topics import COOCCURRENCE_TABLE, STATE_TABLE, TRENDING_TABLE, changelog_topic

log = logging.getLogger(__name__)
LAG_INTERVAL_S = 5.0  # how often consumer lag and the user count are refreshed


@dataclass
class Worker:
    """A built worker: the Faust app plus the handles tests and the CLI may want."""

    app: faust.App
    recommender: Recommender
    reloader: ModelReloader
    metrics: Metrics
    registry: CollectorRegistry


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Worker:
    """Build the Faust app with its topics, the changelog-backed user-state table and one agent per input."""
    registry = registry or CollectorRegistry()
    ProcessCollector(registry=registry)  # CPU, memory, start time: restarts show on the dashboard
    metrics = Metrics(registry)
    metrics.latency_slo.set(settings.latency_slo_s)
    k = str(settings.top_k)
    for spec in settings.variant_specs():
        for event_type in ("click", "purchase"):  # export zeros from the start, so rates and ratios exist
            metrics.live_hits.labels(event_type=event_type, k=k, variant=spec.name)
            metrics.live_opportunities.labels(event_type=event_type, k=k, variant=spec.name)
    live = settings.live_config  # None: learning off
    for name in [*settings.input_topics.values(), settings.topic_erasures,
                 *([settings.topic_co_views] if live is not None else [])]:
        metrics.dead_letters.labels(topic=name)
    for event_type in [*settings.input_topics, "erase"]:  # at 0 from the start, so the first error counts
        metrics.processing_errors.labels(event_type=event_type)
    recommender = build_recommender(settings, metrics)
    app = new_app(settings, web=True)
    states = StateTable(_raw_table(app, settings, STATE_TABLE))  # its changelog records go out from the agents
    trending = _raw_table(app, settings, TRENDING_TABLE)

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    recommendations = raw_topic(settings.topic_recommendations)
    dead_letters = raw_topic(settings.topic_dead_letters)
    reloader = ModelReloader(settings, recommender, metrics)
    ready = asyncio.Event()  # set once the catalog and the current model release have been read
    readiness = Readiness()  # the same, plus partitions assigned and recovered: the HTTP API's /readyz
    if settings.http_port:
        install_http_api(app, settings, recommender, states, metrics, readiness)

    def gated(body: AgentFun) -> AgentFun:
        async def agent(stream: faust.StreamT[bytes]) -> None:
            await ready.wait()  # never answer from a catalog or model older than the topics say
            await body(stream)
        return agent

    processed: dict[tuple[str, int], int] = {}
    co_views = settings.topic_co_views if live is not None else None
    # One thread runs the text model for new search queries: a batch at a time, off the event loop.
    text_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-text")
    search_batch = (settings.search_batch_max, settings.search_batch_within_ms / 1000) \
        if settings.search_batch_max > 1 else None
    for event_type, name in settings.input_topics.items():
        body = make_agent(event_type, recommender, states, recommendations, dead_letters, metrics, processed,
                          trending, co_views, search_batch if event_type == "search" else None, text_thread)
        app.agent(raw_topic(name), name=f"streamrec.{event_type}")(gated(body))
    cooccurrence: StateTable | None = None
    if live is not None:
        # Learning from the stream: the co-views (re-keyed by item) counted into a table partitioned by item,
        # whose changed lists every worker then reads from item-neighbours (below).
        cooccurrence = StateTable(_raw_table(app, settings, COOCCURRENCE_TABLE))
        counter = CoOccurrence(live, settings.neighbours_publish_interval_s)
        app.agent(raw_topic(settings.topic_co_views), name="streamrec.co-views")(make_cooccurrence_agent(
            counter, cooccurrence, settings.topic_item_neighbours, settings.topic_dead_letters, metrics,
            settings.max_event_bytes))

        @app.timer(interval=settings.neighbours_publish_interval_s / 2)  # type: ignore[untyped-decorator]
        async def publish_held_back_lists() -> None:
            assert cooccurrence is not None
            held = {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topic_co_views}
            await publish_due(counter, cooccurrence, app.producer, settings.topic_item_neighbours, metrics, held)
    app.agent(raw_topic(settings.topic_erasures), name="streamrec.erase")(
        gated(make_erasure_agent(recommender, states, recommendations, dead_letters)))

    async def on_records(records: list[ConsumerRecord[bytes, bytes]], live: bool) -> None:
        """Catalog changes, model releases and live neighbour lists, as every worker reads them."""
        items: list[ItemRecord] = []
        releases: dict[str, ModelRelease] = {}  # the newest per variant
        lists: list[NeighbourList] = []
        for record in records:
            try:
                if record.topic == settings.topic_items:
                    items.append(decode_item(record.value, record.key, max_bytes=settings.max_event_bytes))
                elif record.topic == settings.topic_item_neighbours:
                    if record.value is not None:
                        lists.append(decode_neighbour_list(record.value, max_bytes=settings.max_event_bytes))
                elif record.value is not None:
                    release = decode_release(record.value, max_bytes=settings.max_event_bytes)
                    releases[release.variant] = release
            except InvalidEvent as error:
                metrics.catalog_invalid.labels(topic=record.topic, reason=error.reason).inc()
                log.warning("invalid record at %s-%d@%d: %s", record.topic, record.partition, record.offset, error)
                if live and app.is_leader():  # one dead letter per record, not one per worker
                    source = Source(record.topic, record.partition, record.offset)
                    await dead_letters.send(key=record.key, value=dead_letter(record.value, record.key, error,
                                                                               source, time.time()))
        if items:
            recommender.apply_items(items)
        if lists:
            recommender.apply_neighbours(lists)
        for release in releases.values():
            reloader.submit(release)

    async def caught_up() -> None:
        await reloader.wait_idle()
        log.info("catalog read (%d items); serving model %s", len(recommender.catalog), recommender.served.version)
        ready.set()
        readiness.loaded = True
        metrics.ready.set(1)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_catalog_and_models() -> None:
        followed = [settings.topic_items, settings.topic_models,
                    *([settings.topic_item_neighbours] if live is not None else [])]
        await follow(settings, followed, on_records, caught_up)

    inputs = set(settings.input_topics.values())

    def assigned_inputs() -> list[TP]:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in inputs]
        metrics.assigned_partitions.set(len(assigned))
        return assigned

    async def rebalanced(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned_inputs()  # at once, not at the next lag report: readiness probes and tests wait on it
        readiness.recovered = True  # Faust sends this once the table's partitions are recovered

    async def revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        readiness.recovered = False  # until the next rebalance completes, no partition is answered for

    app.on_rebalance_complete.connect(rebalanced)
    app.on_partitions_revoked.connect(revoked)

    @app.timer(interval=LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        """Lag = end offset - next offset to process, per assigned input partition; users in state."""
        metrics.state_users.set(len(states))
        if cooccurrence is not None:
            metrics.cooccurrence_items.set(len(cooccurrence))
        assigned = assigned_inputs()
        metrics.consumer_lag.clear()  # partitions this worker lost in a rebalance must not linger
        if not assigned:
            return
        try:
            ends = await app.consumer.highwaters(*assigned)
            for tp in assigned:
                done = processed.get((tp.topic, tp.partition))
                position = done + 1 if done is not None else await app.consumer.position(tp)
                lag = max(ends.get(tp, 0) - (position or 0), 0)
                metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        except (IllegalStateError, KafkaError) as exc:
            # A rebalance took a partition between assignment() and position(): a gauge must never crash the
            # worker (Faust stops the app when a timer raises). The next round sees the new assignment.
            log.info("consumer lag not measured this round: %s", exc)

    return Worker(app=app, recommender=recommender, reloader=reloader, metrics=metrics, registry=registry)


def _raw_table(app: faust.App, settings: Settings, name: str) -> TableT[str, bytes]:
    """A changelog-backed table of raw bytes (the values are already serialised, see stream/core/state.py).

    Faust would derive "json" from the types, so the changelog topic is declared here (with acks: Faust's
    default changelog does not wait for them) and the serializers are set before first use."""
    changelog = app.topic(changelog_topic(settings, name), key_type=str, value_type=bytes,
                          key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
                          compacting=True, deleting=False, internal=True, acks=True)
    table = app.Table(name, default=None, key_type=str, value_type=bytes, partitions=settings.partitions,
                      changelog_topic=changelog)
    table.key_serializer = "raw"  # type: ignore[attr-defined]  # set on Collection, not declared on TableT
    table.value_serializer = "raw"  # type: ignore[attr-defined]
    return table
