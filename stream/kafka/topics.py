"""Explicit topic creation: every topic streamrec uses, with configured partitions, never auto-created."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from stream.config import Settings
from stream.errors import BrokerError, ConfigError
from stream.kafka.clients import client_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: name, partitions and topic-level configs."""

    name: str
    partitions: int
    configs: tuple[tuple[str, str], ...] = ()


STATE_TABLE = "user-state"
TRENDING_TABLE = "trending"
COOCCURRENCE_TABLE = "item-cooccurrence"  # the live successors of each item, partitioned like co-views


def changelog_topic(settings: Settings, table: str) -> str:
    """The changelog topic of one of the worker's Faust tables."""
    return f"{settings.app_id}-{table}-changelog"


def leader_topic(settings: Settings) -> str:
    """The one-partition topic Faust's leader assignor uses to elect a leader worker."""
    return f"{settings.app_id}-__assignor-__leader"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """All topics of a deployment, from the settings.

    The worker's own topics (table changelogs, the leader topic) are here too: Faust would create them itself
    at start, but on a multi-broker cluster its group assignment can run before a topic it has just created
    shows in the metadata; the table then sees a changelog with 0 partitions and fails every event
    (``PartitionsMismatch``) until the metadata is next refreshed. Created here, they exist, with the durability
    settings below, before any worker joins."""
    n = settings.partitions
    return [
        TopicSpec(settings.topic_clicks, n),
        TopicSpec(settings.topic_searches, n),
        TopicSpec(settings.topic_purchases, n),
        TopicSpec(settings.topic_erasures, n),
        TopicSpec(settings.topic_items, settings.items_partitions, (("cleanup.policy", "compact"),)),
        # The latest release under one key; every worker reads it whole at start.
        TopicSpec(settings.topic_models, 1, (("cleanup.policy", "compact"),)),
        # Keyed by user and compacted: the topic doubles as "the latest list of every user".
        TopicSpec(settings.topic_recommendations, n, (("cleanup.policy", "compact"),)),
        # Dead letters are evidence: keep them for 30 days.
        TopicSpec(settings.topic_dead_letters, settings.dead_letter_partitions,
                  (("retention.ms", str(30 * 24 * 3600 * 1000)),)),
        # Transitions keyed by their source item; the co-occurrence table is co-partitioned with them. A week of
        # them is plenty: the table's changelog holds what they taught.
        TopicSpec(settings.topic_co_views, n, (("retention.ms", str(7 * 24 * 3600 * 1000)),)),
        # The latest neighbour list of every item; every worker reads it whole at start.
        TopicSpec(settings.topic_item_neighbours, n, (("cleanup.policy", "compact"),)),
        *(TopicSpec(changelog_topic(settings, table), n, (("cleanup.policy", "compact"),))
          for table in (STATE_TABLE, TRENDING_TABLE, COOCCURRENCE_TABLE)),
        TopicSpec(leader_topic(settings), 1),
    ]


async def _admin(settings: Settings, timeout_s: float | None) -> AIOKafkaAdminClient:
    """A started admin client, retrying while the broker is not reachable (timeout None: forever), with a
    backoff of 1 s doubling to 10 s and a log line per attempt, so a worker waits for Kafka instead of
    crash-looping."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    delay = 1.0
    while True:
        admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
        try:
            await admin.start()
            return admin
        except KafkaConnectionError as exc:
            await admin.close()
            if deadline is not None and loop.time() > deadline:
                raise BrokerError(f"Kafka at {settings.bootstrap_servers} is not reachable: {exc}") from None
            log.warning("Kafka at %s is not reachable yet (%s); retrying in %.0f s",
                        settings.bootstrap_servers, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def ensure_topics(settings: Settings, timeout_s: float | None = 30.0) -> dict[str, int]:
    """Create missing topics; fail if an existing one has another partition count. Returns name -> partitions.

    ``timeout_s`` bounds the wait for an unreachable broker (None: wait as long as it takes)."""
    specs = topic_specs(settings)
    admin = await _admin(settings, timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            rf = settings.replication_factor
            # With replicas, acks=all must mean "on two brokers": one broker may die without losing a write.
            durability = {"min.insync.replicas": str(min(2, rf))} if rf > 1 else {}
            response = await admin.create_topics([NewTopic(s.name, s.partitions, rf,
                                                           topic_configs=dict(s.configs) | durability)
                                                  for s in missing])
            # Per-topic errors come back in the response, not as exceptions. "Already exists" is a race with
            # another worker creating the same topics: fine; anything else (say a replication factor above
            # the broker count) must be said plainly.
            for name, code, *rest in getattr(response, "topic_errors", []):
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = rest[0] if rest and rest[0] else for_code(code).__name__
                    raise BrokerError(f"creating topic {name!r} failed: {message} "
                                      f"(replication_factor={rf}, partitions from the settings)")
            log.info("created topics %s", ", ".join(s.name for s in missing))
        found = await _partition_counts(admin, [s.name for s in specs])
    except KafkaError as exc:
        raise BrokerError(f"topic setup failed on {settings.bootstrap_servers}: {exc}") from None
    finally:
        await admin.close()
    for spec in specs:
        if found.get(spec.name) != spec.partitions:
            setting = "partitions" if spec.partitions == settings.partitions else f"{spec.name} partitions"
            raise ConfigError(setting, f"topic {spec.name!r} has {found.get(spec.name)} partitions, "
                                       f"settings say {spec.partitions}")
    return found


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str], attempts: int = 50) -> dict[str, int]:
    """Partition count per topic, waiting briefly for freshly created topics to show up in metadata."""
    counts: dict[str, int] = {}
    for _ in range(attempts):
        described = await admin.describe_topics(names)
        counts = {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
        if len(counts) == len(names) and all(counts.values()):
            return counts
        await asyncio.sleep(0.1)
    return counts


async def partition_count(settings: Settings, topic: str) -> int:
    """Partitions of one topic (0 when it does not exist)."""
    admin = await _admin(settings, timeout_s=30.0)
    try:
        return (await _partition_counts(admin, [topic], attempts=10)).get(topic, 0)
    finally:
        await admin.close()
