"""create_app: the one place that wires settings, model, index, topics, table and agents together."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust
import torch
from prometheus_client import CollectorRegistry, ProcessCollector

from encoders.artifact import load_artifact, resolve_artifact
from encoders.serving import UserEncoder
from index.hnsw import HnswIndex
from stream.agents import make_agent, make_erasure_agent
from stream.config import Settings
from stream.errors import ConfigError
from stream.faust_options import app_options
from stream.metrics import Metrics
from stream.pipeline import Recommender, Rules

log = logging.getLogger(__name__)
STATE_TABLE = "user-state"
LAG_INTERVAL_S = 5.0  # how often consumer lag and the user count are refreshed


@dataclass
class Worker:
    """A built worker: the Faust app plus the handles tests and the CLI may want."""

    app: faust.App
    recommender: Recommender
    metrics: Metrics
    registry: CollectorRegistry


def build_recommender(settings: Settings, metrics: Metrics | None) -> Recommender:
    """Load the model artifact and index its item embeddings in HNSW."""
    if settings.model_path is None:
        raise ConfigError("model_path", "no model artifact given (train one: streamrec train)")
    torch.set_num_threads(settings.torch_threads)
    artifact = load_artifact(resolve_artifact(settings.model_path, settings.model_type))
    encoder = UserEncoder(artifact)
    if settings.model_type and encoder.model_type != settings.model_type:
        raise ConfigError("model_type", f"{artifact.path} is a {encoder.model_type} model, not {settings.model_type}")
    index = HnswIndex(encoder.dim, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
                      ef=settings.hnsw_ef, capacity=len(encoder.item_ids))
    index.add(encoder.item_ids, encoder.item_vectors())
    log.info("model %s loaded, %d items indexed", encoder.version, len(index))
    if metrics:
        metrics.index_items.set(len(index))
        metrics.model.info({"version": encoder.version, "dataset": artifact.dataset,
                            "cell": artifact.model.config.cell})
    return Recommender(encoder, index, Rules.from_settings(settings), metrics)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Worker:
    """Build the Faust app with its topics, the changelog-backed user-state table and one agent per input."""
    registry = registry or CollectorRegistry()
    ProcessCollector(registry=registry)  # CPU, memory, start time: restarts show on the dashboard
    metrics = Metrics(registry)
    metrics.latency_slo.set(settings.latency_slo_s)
    k = str(settings.top_k)
    for event_type in ("click", "purchase"):  # export zeros from the start, so rates and ratios exist
        metrics.live_hits.labels(event_type=event_type, k=k)
        metrics.live_opportunities.labels(event_type=event_type, k=k)
    for name in [*settings.input_topics.values(), settings.topic_erasures]:
        metrics.dead_letters.labels(topic=name)
    recommender = build_recommender(settings, metrics)
    datadir = settings.home / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, datadir=str(datadir), **app_options(settings))

    # The state is already bytes (stream/state.py), so keys and values go raw through the store and the
    # changelog. Faust would derive "json" from the types, so the changelog topic is declared here (with acks:
    # Faust's default changelog does not wait for them) and the table's serializers are set before first use.
    changelog = app.topic(f"{settings.app_id}-{STATE_TABLE}-changelog", key_type=str, value_type=bytes,
                          key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
                          compacting=True, deleting=False, internal=True, acks=True)
    states = app.Table(STATE_TABLE, default=None, key_type=str, value_type=bytes, partitions=settings.partitions,
                       changelog_topic=changelog)
    states.key_serializer = "raw"  # type: ignore[attr-defined]  # set on Collection, not declared on TableT
    states.value_serializer = "raw"  # type: ignore[attr-defined]

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    recommendations = raw_topic(settings.topic_recommendations)
    dead_letters = raw_topic(settings.topic_dead_letters)
    processed: dict[tuple[str, int], int] = {}
    for event_type, name in settings.input_topics.items():
        body = make_agent(event_type, recommender, states, recommendations, dead_letters, metrics, processed)
        app.agent(raw_topic(name), name=f"streamrec.{event_type}")(body)
    app.agent(raw_topic(settings.topic_erasures), name="streamrec.erase")(
        make_erasure_agent(recommender, states, recommendations, dead_letters))

    inputs = set(settings.input_topics.values())

    @app.timer(interval=LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        """Lag = end offset - next offset to process, per assigned input partition; users in state."""
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in inputs]
        metrics.consumer_lag.clear()  # partitions this worker lost in a rebalance must not linger
        if assigned:
            ends = await app.consumer.highwaters(*assigned)
            for tp in assigned:
                done = processed.get((tp.topic, tp.partition))
                position = done + 1 if done is not None else await app.consumer.position(tp)
                lag = max(ends.get(tp, 0) - (position or 0), 0)
                metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        metrics.state_users.set(len(states))

    return Worker(app=app, recommender=recommender, metrics=metrics, registry=registry)
