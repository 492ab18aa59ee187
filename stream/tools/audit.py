"""``streamrec audit``: did every event get exactly what it should, and is the stored state right?

Reads the input topics, ``dead-letters``, ``recommendations`` and the state changelog from the start, and
reports:

* ``lost``: valid input events (ts >= since) with no list, and invalid ones with no dead letter;
* ``duplicated``: events answered by more than one list (at-least-once redelivery after a crash);
* ``state_mismatches``: users whose state in the changelog differs from a single-process reference that
  replays the user's events in the order the worker answered them (the order of the user's lists in their
  ``recommendations`` partition), with the same model.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from encoders.artifact import load_artifact, resolve_artifact
from encoders.serving import UserEncoder
from index.brute import BruteForceIndex
from stream.config import Settings
from stream.core.catalog import Catalog
from stream.core.indexed_model import IndexedModel
from stream.core.metrics import Metrics
from stream.core.pipeline import Arm, Recommender
from stream.core.schemas import Event, Source, decode_erasure, decode_event
from stream.core.state import UserState
from stream.core.trending import Trending
from stream.core.variants import Assignment
from stream.errors import ConfigError, InvalidEvent, StreamrecError
from stream.kafka.clients import client_options
from stream.kafka.loading import rules_for
from stream.kafka.topics import partition_count

Record = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value


@dataclass
class AuditReport:
    """The audit's findings; ``summary()`` is the one JSON line the CLI prints."""

    events: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    state_mismatches: list[str] = field(default_factory=list)
    users: int = 0
    mismatch_details: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts, plus the first few ids of each finding for a human to look up."""
        return {"events": self.events, "lost": len(self.lost), "duplicated": len(self.duplicated),
                "state_mismatches": len(self.state_mismatches), "users_checked": self.users,
                "examples": {"lost": self.lost[:5], "duplicated": self.duplicated[:5],
                             "state_mismatches": self.state_mismatches[:5]},
                "mismatch_details": self.mismatch_details[:3]}


async def read_topic(settings: Settings, topic: str) -> list[Record]:
    """Every record of a topic, partition by partition in offset order, up to the end offsets of now."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(await partition_count(settings, topic))]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Record] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batch.items():
                out.extend((m.topic, m.partition, m.offset, m.key, m.value) for m in messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise StreamrecError(f"could not read {topic} to its end within 120 s")
        return out
    finally:
        await consumer.stop()


async def audit(settings: Settings, since: float = 0.0) -> AuditReport:
    """Read everything back and check it (see the module docstring)."""
    from stream.kafka.topics import STATE_TABLE, changelog_topic

    if settings.model_path is None:
        raise ConfigError("model_path", "the audit replays events through the model the workers served")
    reference = _reference(settings)
    report = AuditReport()
    every: dict[str, Event] = {}  # all valid events (the reference replays a user's whole history)
    valid: set[str] = set()  # the valid events at or after `since`, whose answers are checked
    invalid: set[tuple[str, int, int]] = set()
    for event_type, topic in settings.input_topics.items():
        for rtopic, partition, offset, key, value in await read_topic(settings, topic):
            source = Source(rtopic, partition, offset)
            try:
                event = decode_event(event_type, value, source, max_bytes=settings.max_event_bytes,
                                     max_future_skew_s=settings.max_future_skew_s)
                if key != event.user_id.encode():
                    raise InvalidEvent("key_mismatch")
            except InvalidEvent:
                invalid.add((rtopic, partition, offset))
                continue
            every[event.event_id] = event
            if event.ts >= since:
                valid.add(event.event_id)
    erased: set[str] = set()
    for *_, value in await read_topic(settings, settings.topic_erasures):
        try:
            erased.add(decode_erasure(value, Source("", 0, 0), max_future_skew_s=float("inf")).user_id)
        except InvalidEvent:
            continue
    letters = set()
    for *_, value in await read_topic(settings, settings.topic_dead_letters):
        if value is not None:
            src = orjson.loads(value)["source"]
            letters.add((src["topic"], src["partition"], src["offset"]))
    answered: Counter[str] = Counter()
    # user -> (state_seq, event id) of each first answer: the order the worker applied the events in. Two
    # agents' lists may reach the topic in another order than their events were applied (each awaits the
    # producer), so the record's own sequence number orders them; ties keep the topic order.
    firsts: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for *_, value in await read_topic(settings, settings.topic_recommendations):
        if value is None:
            continue
        body = orjson.loads(value)
        event_id = body["event"]["event_id"]
        if answered[event_id] == 0:
            firsts[body["user_id"]].append((int(body.get("state_seq", 0)), event_id))
        answered[event_id] += 1
    order = {user: [e for _, e in sorted(pairs, key=lambda p: p[0])] for user, pairs in firsts.items()}
    report.events = len(valid)
    report.lost = sorted([e for e in valid if answered[e] == 0]
                         + [f"{t}-{p}-{o}" for t, p, o in sorted(invalid - letters)])
    report.duplicated = sorted(e for e in valid if answered[e] > 1)

    stored: dict[str, bytes | None] = {}
    for _, _, _, key, value in await read_topic(settings, changelog_topic(settings, STATE_TABLE)):
        if key is not None:
            stored[key.decode()] = value
    states: dict[str, bytes] = {}
    for user, answered_order in order.items():
        if user in erased:
            continue
        event_ids = _application_order(answered_order, stored.get(user))
        for n, event_id in enumerate(event_ids):
            replayed = every.get(event_id)
            if replayed is not None:
                reference.process(replayed.type, replayed.to_json(), user.encode(), Source("audit", 0, n), states)
        if user not in states:
            continue
        report.users += 1
        if not _same_state(states[user], stored.get(user)):
            report.state_mismatches.append(user)
            report.mismatch_details.append(_difference(user, states[user], stored.get(user), answered_order))
    return report


def _reference(settings: Settings) -> Recommender:
    """The single-process reference: every variant's model (the states do not depend on the index, so the
    indexes stay empty), with the workers' variant assignment."""
    assert settings.model_path is not None
    arms = []
    for spec in settings.variant_specs():
        encoder = UserEncoder(load_artifact(resolve_artifact(spec.model or settings.model_path,
                                                             spec.model_type or settings.model_type)))
        arms.append(Arm(spec.name, IndexedModel(encoder, BruteForceIndex(encoder.dim)), rules_for(settings)))
    return Recommender(arms, Assignment(settings.variant_specs(), settings.experiment_salt), Catalog(),
                       Trending(settings.trending_half_life_s), Metrics(CollectorRegistry()))


def _application_order(answered: list[str], stored: bytes | None) -> list[str]:
    """The order the worker applied a user's events in: the order of the first lists, except that the
    stored state's own record of its last applied event ids wins. After a crash, the new owner re-reads each
    input partition from its last commit, so a user's click and purchase (different topics) may be applied
    in another order than first answered; at-least-once promises each event once, not a cross-topic order."""
    if stored is None:
        return answered
    known = set(answered)
    tail = [e for e in UserState.from_bytes(stored).seen_event_ids if e in known]
    moved = set(tail)
    return [e for e in answered if e not in moved] + tail


def _difference(user: str, expected_raw: bytes, actual_raw: bytes | None, answered: list[str]) -> dict[str, Any]:
    """What differs, for a human reading the audit."""
    expected = UserState.from_bytes(expected_raw)
    out: dict[str, Any] = {"user": user, "answered": answered[-8:], "expected_events": expected.events,
                           "expected_seen": expected.seen_event_ids[-8:]}
    if actual_raw is not None:
        actual = UserState.from_bytes(actual_raw)
        out |= {"stored_events": actual.events, "stored_seen": actual.seen_event_ids[-8:],
                "same_recent": actual.recent == expected.recent}
        if actual.recent != expected.recent:  # the first difference, for a human
            n = next((i for i, (a, b) in enumerate(zip(actual.recent, expected.recent, strict=False)) if a != b),
                     min(len(actual.recent), len(expected.recent)))
            out |= {"recent_differ_at": n, "expected_recent": expected.recent[n:n + 3],
                    "stored_recent": actual.recent[n:n + 3]}
    return out


def _same_state(expected_raw: bytes, actual_raw: bytes | None) -> bool:
    if actual_raw is None:
        return False
    expected, actual = UserState.from_bytes(expected_raw), UserState.from_bytes(actual_raw)
    return (expected.recent == actual.recent and expected.purchased == actual.purchased
            and expected.events == actual.events and expected.vector.shape == actual.vector.shape
            and bool(np.allclose(expected.vector, actual.vector, atol=1e-5)))



async def cooccurrence_audit(settings: Settings, wait_s: float = 60.0) -> dict[str, Any]:
    """Is the live co-occurrence table what the co-views say? Recomputes every row in one process from the
    ``co-views`` topic (partition by partition in offset order, as the agent applies them, with the same code)
    and compares it with the table's changelog, after waiting up to ``wait_s`` for the table to have applied
    every record. Returns the items compared, the ones that differ (successors, or weights beyond 1e-9
    relative) and the largest relative weight difference."""
    from stream.core.cooccurrence import CoOccurrence, Row, decode_co_view
    from stream.kafka.topics import COOCCURRENCE_TABLE, changelog_topic

    live = settings.live_config
    if live is None:
        raise ConfigError("learning", "the co-occurrence audit needs learning on")
    views = await read_topic(settings, settings.topic_co_views)
    expected: dict[str, bytes] = {}
    recompute = CoOccurrence(live, settings.neighbours_publish_interval_s)
    last: dict[str, int] = {}  # item -> offset of its last valid record
    for _, partition, offset, key, value in views:
        try:
            view = decode_co_view(value, key, max_bytes=settings.max_event_bytes)
        except InvalidEvent:
            continue  # dead-lettered by the agent
        recompute.apply(view, partition, offset, expected)
        last[view.source] = offset
    deadline = time.monotonic() + wait_s
    while True:
        stored: dict[str, bytes] = {}
        for _, _, _, key, value in await read_topic(settings, changelog_topic(settings, COOCCURRENCE_TABLE)):
            if key is not None and value is not None:
                stored[key.decode()] = value
        behind = [item for item, offset in last.items()
                  if item not in stored or Row.from_bytes(stored[item]).offset < offset]
        if not behind or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    mismatched: list[str] = []
    worst = 0.0
    for item, raw in expected.items():
        want, got = Row.from_bytes(raw).successors, Row.from_bytes(stored[item]).successors \
            if item in stored else None
        if got is None or got.items != want.items:
            mismatched.append(item)
            continue
        error = max((abs(a - b) / max(abs(b), 1e-300) for a, b in zip(got.weights, want.weights, strict=True)),
                    default=0.0)
        worst = max(worst, error)
        if error > 1e-9:
            mismatched.append(item)
    return {"co_views": len(views), "items": len(expected), "cooccurrence_mismatches": len(mismatched),
            "max_relative_error": worst, "behind": len(behind), "cooccurrence_examples": mismatched[:5]}
