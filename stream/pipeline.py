"""The data path, top to bottom: event in, validate, update state, query vector, search, filter and
re-rank, recommendation out.

Nothing here imports Faust or Kafka. The agents hand in raw bytes, the record's position and the user
state table (any MutableMapping[str, bytes]); they send whatever :class:`Outcome` says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from encoders.serving import UserEncoder
from index.base import ItemIndex
from stream.catalog import Catalog
from stream.config import Settings
from stream.errors import InvalidEvent, StreamrecError
from stream.explain import explain
from stream.metrics import Metrics
from stream.rerank import Filters, blend, diversify, rerank
from stream.schemas import (
    Event,
    EventType,
    ItemRecord,
    Recommendation,
    RecommendedItem,
    Source,
    dead_letter,
    decode_erasure,
    decode_event,
)
from stream.served_model import ServedModel
from stream.state import UserState
from stream.trending import Trending
from stream.variants import DEFAULT, Assignment, VariantSpec

log = logging.getLogger(__name__)
DIVERSITY_POOL = 4  # with diversity on, MMR picks k items out of the best k * this many
# Decoded states of the most recently active users, each kept with the exact bytes object it was stored as: a
# table value that is still that object needs no decoding (~17-35 us an event). ~10 KB of Python objects each.
STATE_CACHE_USERS = 4096


@dataclass(frozen=True)
class Rules:
    """What the data path needs from the settings."""

    top_k: int = 10
    history_size: int = 50
    max_purchased: int = 500
    max_event_bytes: int = 65536
    max_future_skew_s: float = 86_400.0
    cold_start_events: int = 0  # users with fewer events get trending items blended in (0 = off)
    diversity: float = 0.0  # MMR strength (0 = off)
    explanations: int = 0  # recent events named per item (0 = none)
    filters: Filters = field(default_factory=Filters)

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        """Pick the data-path settings out of the full settings object."""
        return cls(top_k=settings.top_k, history_size=settings.history_size,
                   max_purchased=settings.max_purchased, max_event_bytes=settings.max_event_bytes,
                   max_future_skew_s=settings.max_future_skew_s, cold_start_events=settings.cold_start_events,
                   diversity=settings.diversity, explanations=settings.explanations,
                   filters=Filters.from_settings(settings))


@dataclass(frozen=True)
class Outcome:
    """What to send for one input record: a list to ``recommendations`` or a record to ``dead-letters``."""

    key: bytes | None
    value: bytes | None  # None: a tombstone (the user was erased)
    dead_letter: bool
    recommendation: Recommendation | None = None
    reason: str | None = None


@dataclass
class Arm:
    """One A/B variant as served: its model (with its index) and its rules."""

    name: str
    served: ServedModel
    rules: Rules


class Recommender:
    """Holds the variants (each a served model + rules), the catalog and the trending counts;
    ``handle`` is the per-event data path."""

    def __init__(self, encoder: UserEncoder | ServedModel, index: ItemIndex | None, rules: Rules,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                 catalog: Catalog | None = None, trending: Trending | None = None,
                 arms: list[Arm] | None = None, assignment: Assignment | None = None) -> None:
        if isinstance(encoder, ServedModel):
            served = encoder
        else:
            assert index is not None, "an encoder needs its index"
            served = ServedModel(encoder, index)
        self.arms = {arm.name: arm for arm in (arms or [Arm(DEFAULT, served, rules)])}
        self.default = next(iter(self.arms.values()))
        self.assignment = assignment or Assignment((VariantSpec(self.default.name, 1.0),), "")
        self.metrics = metrics
        self.clock = clock
        self.catalog = catalog if catalog is not None else Catalog()
        self.trending = trending if trending is not None else Trending(6 * 3600.0)
        self._decoded: dict[str, tuple[bytes, UserState]] = {}  # user -> (stored bytes, their state); LRU order

    @property
    def served(self) -> ServedModel:
        """The model served to the first (or only) variant."""
        return self.default.served

    @property
    def rules(self) -> Rules:
        """The rules of the first (or only) variant."""
        return self.default.rules

    @rules.setter
    def rules(self, rules: Rules) -> None:
        self.default.rules = rules

    @property
    def encoder(self) -> UserEncoder:
        """The encoder of the model served (first variant)."""
        return self.served.encoder

    @property
    def index(self) -> ItemIndex:
        """The index of the model served (first variant)."""
        return self.served.index

    def handle(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source,
               states: MutableMapping[str, bytes], trending: MutableMapping[str, bytes] | None = None) -> Outcome:
        """Process one input record end to end and say what to produce.

        ``states`` is the user-state table; ``trending`` the table of trending counts (None: memory only)."""
        m = self.metrics
        t0 = time.perf_counter()
        if m:
            m.child(m.events, event_type).inc()
        # 1. Validate.
        try:
            event = decode_event(event_type, raw, source, max_bytes=self.rules.max_event_bytes,
                                 max_future_skew_s=self.rules.max_future_skew_s, now=self.clock())
            _check_key(key, event.user_id)
        except InvalidEvent as error:
            return self._rejected(event_type, error, raw, key, source)
        # The user's variant: one model and rule set for the whole event, even if a swap is pending.
        arm = self.arms[self.assignment.variant_of(event.user_id)]
        served, rules = arm.served, arm.rules
        encoder = served.encoder
        t1 = time.perf_counter()
        # 2. Encode the search text (searches only).
        text = encoder.encode_text(event.query) if event.query is not None else None
        t2 = time.perf_counter()
        # 3. Update the user's state (once per event id: Kafka may redeliver after a crash), scoring the
        #    previous list against this event first (live hit-rate@k); count the item for trending.
        state = self._cached_state(event.user_id, states.get(event.user_id), encoder)
        position = f"{source.topic}:{source.partition}"
        if state.already_applied(event.event_id, position, source.offset):
            if m:
                m.duplicates.labels(event_type=event_type).inc()
        else:
            if event.item_id is not None:
                if m:
                    self._score_last_list(m, event, state, arm.name)
                    if not encoder.knows(event.item_id):
                        m.unknown_items.labels(event_type=event.type).inc()
                self.trending.observe(source.partition, event.item_id, event.type, event.ts, trending)
            state.vector = encoder.step(state.vector, event.type, event.item_id, text)
            state.remember(event.type, event.item_id, event.event_id, event.ts, rules.history_size,
                           rules.max_purchased, position, source.offset)
        t3 = time.perf_counter()
        # 4. Query vector.
        query = encoder.query_vector(state.vector)
        t4 = time.perf_counter()
        # 5. Search, never returning what this user must not get; the model then gives every candidate its
        #    final score: recent items and their co-occurring ones join (the inner-product search alone would
        #    rank them lower or miss them), and a model with a re-ranker re-orders the best of them.
        excluded = rules.filters.excluded_for(state)
        pool = rules.top_k * DIVERSITY_POOL if rules.diversity > 0 else rules.top_k
        depth = max(pool, encoder.search_depth)
        candidates = served.index.search(query, depth, exclude=excluded)
        # (enough for the list after the filters drop excluded items and items gone from the index)
        candidates = encoder.rescore(query, state.recent, candidates,
                                     limit=depth + len(excluded) + rules.history_size)
        t5 = time.perf_counter()
        # 6. Filter and re-rank; a cold-start user's list is blended with trending items (not a search's:
        #    a first search is answered from the query alone).
        items = rerank(candidates, excluded, pool, served.index)
        if rules.diversity > 0:
            items = diversify(items, served.vectors_of([it.item_id for it in items]), rules.top_k, rules.diversity)
        if state.events < rules.cold_start_events and event.type != "search":
            items = blend(items, self.trending.top(rules.top_k + len(excluded)), rules.top_k,
                          state.events / rules.cold_start_events, excluded, served.index)
        t6 = time.perf_counter()
        # 7. Explanations: the user's own recent events (or this search) most like each item.
        items = explain(items, state.recent, event.query, served.unit_vectors_of, rules.explanations)
        t7 = time.perf_counter()
        # 8. The list; the state (with the list it got) is stored once per event.
        rec = self._recommendation(event, items, served.version, arm.name, state.events)
        state.last_list = [it.item_id for it in items]
        stored = state.to_bytes()
        states[event.user_id] = stored
        self._remember_decoded(event.user_id, stored, state)
        t8 = time.perf_counter()
        if m:
            if text is not None:
                m.child(m.stage, "text_encode").observe(t2 - t1)
            for stage, seconds in (("decode", t1 - t0), ("state", t3 - t2 + t8 - t7), ("query", t4 - t3),
                                   ("search", t5 - t4), ("rerank", t6 - t5), ("explain", t7 - t6)):
                m.child(m.stage, stage).observe(seconds)
            m.child(m.lists, event.type, arm.name).inc()
            m.child(m.event_to_recommendation, event.type, arm.name).observe(max(rec.generated_at - event.ts, 0.0))
        return Outcome(event.user_id.encode(), rec.to_json(), False, recommendation=rec)

    def pending_text(self, event_type: EventType, raw: bytes | None, source: Source) -> Callable[[], object] | None:
        """For a valid search whose query the user's text model has not encoded yet: the call that encodes it,
        for the agent to run in a thread while other events go on (``handle`` then finds it cached). None for
        anything else; ``handle`` judges invalid records."""
        if event_type != "search":
            return None
        try:
            event = decode_event(event_type, raw, source, max_bytes=self.rules.max_event_bytes,
                                 max_future_skew_s=self.rules.max_future_skew_s, now=self.clock())
        except InvalidEvent:
            return None
        encoder = self.arms[self.assignment.variant_of(event.user_id)].served.encoder
        query = event.query
        if query is None or not encoder.text_pending(query):
            return None
        return lambda: encoder.encode_text(query)

    def apply_items(self, records: list[ItemRecord]) -> None:
        """Apply catalog changes and bring the served index in line (new, changed, unavailable, deleted)."""
        for record in records:
            self.catalog.apply(record)
        added = 0
        for arm in self.arms.values():
            added += arm.served.sync([r.item_id for r in records], self.catalog, arm.rules.filters)
        if self.metrics:
            for record in records:
                op = "delete" if record.deleted else "upsert"
                self.metrics.catalog_updates.labels(op=op).inc()
            self.metrics.catalog_items.set(len(self.catalog))
            self.metrics.index_items.set(len(self.served.index))
        log.debug("catalog: %d changes applied, %d items (re)indexed", len(records), added)

    def swap(self, served: ServedModel, built_from_seq: int, variant: str = DEFAULT) -> None:
        """Serve another model to a variant from the next event on; replays the catalog changes made while
        it was built.

        Runs on the event loop between two events, so no event sees half a swap; users' states are rebuilt
        from their recent events when they next arrive (``_load_state``)."""
        arm = self.arms[variant]
        served.sync(self.catalog.changed_since(built_from_seq), self.catalog, arm.rules.filters)
        arm.served = served
        if self.metrics and arm is self.default:
            self.metrics.index_items.set(len(served.index))

    def erase(self, raw: bytes | None, key: bytes | None, source: Source,
              states: MutableMapping[str, bytes]) -> Outcome:
        """Forget a user (GDPR erasure): drop the state and answer with a tombstone for the user's list."""
        m = self.metrics
        if m:
            m.events.labels(event_type="erase").inc()
        try:
            erasure = decode_erasure(raw, source, max_bytes=self.rules.max_event_bytes,
                                     max_future_skew_s=self.rules.max_future_skew_s, now=self.clock())
            _check_key(key, erasure.user_id)
        except InvalidEvent as error:
            return self._rejected("erase", error, raw, key, source)
        self._decoded.pop(erasure.user_id, None)
        if erasure.user_id in states:
            del states[erasure.user_id]  # Faust writes a changelog tombstone, so restores forget it too
        if m:
            m.erasures.inc()
        return Outcome(erasure.user_id.encode(), None, False)

    def _rejected(self, event_type: str, error: InvalidEvent, raw: bytes | None, key: bytes | None,
                  source: Source) -> Outcome:
        """Count an invalid record and wrap it as a dead letter."""
        if self.metrics:
            self.metrics.invalid.labels(event_type=event_type, reason=error.reason).inc()
            self.metrics.dead_letters.labels(topic=source.topic).inc()
        return Outcome(key, dead_letter(raw, key, error, source, self.clock()), True, reason=error.reason)

    def _score_last_list(self, m: Metrics, event: Event, state: UserState, variant: str) -> None:
        """Count a hit when the clicked/purchased item was in the list the user last received."""
        if not state.last_list:
            return
        k = str(self.rules.top_k)
        m.live_opportunities.labels(event_type=event.type, k=k, variant=variant).inc()
        if event.item_id in state.last_list:
            m.live_hits.labels(event_type=event.type, k=k, variant=variant).inc()

    def _recommendation(self, event: Event, items: list[RecommendedItem], version: str, variant: str,
                        state_seq: int) -> Recommendation:
        return Recommendation(user_id=event.user_id, items=tuple(items), model_version=version,
                              event_type=event.type, event_id=event.event_id, event_ts=event.ts,
                              generated_at=self.clock(), variant=variant, state_seq=state_seq)

    def _cached_state(self, user_id: str, raw: bytes | None, encoder: UserEncoder) -> UserState:
        """The user's state: the decoded one kept from the last write when the table still holds exactly those
        bytes (a restore or another writer gives another object), else decoded. The entry leaves the cache
        while the event is handled, so a failure half-way can never leave a mutated state behind."""
        cached = self._decoded.pop(user_id, None)
        if cached is not None and raw is not None and cached[0] is raw \
                and cached[1].model_version == encoder.version:
            return cached[1]
        return self._load_state(raw, encoder)

    def _remember_decoded(self, user_id: str, stored: bytes, state: UserState) -> None:
        decoded = self._decoded
        decoded[user_id] = (stored, state)  # (re)inserted last: dict order is least recently used first
        if len(decoded) > STATE_CACHE_USERS:
            del decoded[next(iter(decoded))]

    def _load_state(self, raw: bytes | None, encoder: UserEncoder | None = None) -> UserState:
        """The stored state, a fresh one, or one rebuilt from history when it belongs to another model."""
        encoder = encoder or self.encoder
        if raw is None:
            return UserState(vector=encoder.initial_state(), model_version=encoder.version)
        try:
            state = UserState.from_bytes(raw)
        except StreamrecError as exc:
            log.warning("discarding unreadable user state: %s", exc)
            return UserState(vector=encoder.initial_state(), model_version=encoder.version)
        if state.model_version != encoder.version or state.vector.shape != (encoder.state_size,):
            vector = encoder.initial_state()
            for kind, item in state.recent:
                vector = encoder.step(vector, kind, item)
            state.vector, state.model_version = vector, encoder.version
        return state


def _check_key(key: bytes | None, user_id: str) -> None:
    """The state table is partitioned by the record key; any other key would split a user's state."""
    if key is None or key != user_id.encode():
        raise InvalidEvent("key_mismatch", "the record key must be the user_id")
