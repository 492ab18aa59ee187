"""The data path, top to bottom: event in, validate, update state, query vector, search, filter and
re-rank, recommendation out.

Nothing here imports Faust or Kafka. The agents hand in raw bytes, the record's position and the user
state table (any MutableMapping[str, bytes]); they send whatever :class:`Outcome` says. Step 1 is
:meth:`Recommender.validate`, steps 2-8 :meth:`Recommender.recommend`: between them the agent encodes a new
search query off the event loop, from the event decoded once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from encoders.models.live_neighbours import LiveConfig
from encoders.serving import UserEncoder
from stream.core.catalog import Catalog
from stream.core.cooccurrence import CoView, NeighbourList, co_views
from stream.core.explain import explain
from stream.core.hybrid import hybrid
from stream.core.indexed_model import IndexedModel
from stream.core.intent import Intent, RecentQueries, carried_intent, search_intent
from stream.core.metrics import Metrics
from stream.core.requests import ListRequest, SimilarRequest
from stream.core.rerank import Filters, Within, blend, diversify, rerank
from stream.core.schemas import (
    Event,
    EventType,
    ItemRecord,
    Recommendation,
    RecommendedItem,
    RequestedList,
    SimilarItems,
    Source,
    dead_letter,
    decode_erasure,
    decode_event,
)
from stream.core.state import DecodedStates, UserState
from stream.core.trending import Trending
from stream.core.variants import DEFAULT, Assignment
from stream.errors import ConfigError, InvalidEvent, StreamrecError

log = logging.getLogger(__name__)
DIVERSITY_POOL = 4  # with diversity on, MMR picks k items out of the best k * this many
STATE_CACHE_USERS = 4096  # decoded states kept (DecodedStates), ~10 KB of Python objects each


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
    learning: LiveConfig | None = None  # the co-views an item event emits (None: learning off)


@dataclass(frozen=True)
class Outcome:
    """What to send for one input record: a list to ``recommendations`` or a record to ``dead-letters``."""

    key: bytes | None
    value: bytes | None  # None: a tombstone (the user was erased)
    dead_letter: bool
    recommendation: Recommendation | None = None
    reason: str | None = None
    co_views: tuple[CoView, ...] = ()  # for the co-views topic (stream/core/cooccurrence.py)


@dataclass
class Arm:
    """One A/B variant as served: its model (with its index) and its rules."""

    name: str
    served: IndexedModel
    rules: Rules


class Recommender:
    """Holds the variants (each a served model + rules), the catalog and the trending counts. Per record the
    caller runs :meth:`validate`, then (for a search) :meth:`pending_text` off the event loop, then
    :meth:`recommend`; :meth:`process` runs the three in-line."""

    def __init__(self, arms: list[Arm], assignment: Assignment, catalog: Catalog, trending: Trending,
                 metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        if not arms:
            raise ConfigError("variants", "at least one variant must be served")
        self.arms = {arm.name: arm for arm in arms}
        self.default = arms[0]
        self.assignment = assignment
        self.catalog = catalog
        self.trending = trending
        self.metrics = metrics
        self.clock = clock
        self._states = DecodedStates(STATE_CACHE_USERS)
        self._queries = RecentQueries()

    @property
    def served(self) -> IndexedModel:
        """The model served to the first (or only) variant."""
        return self.default.served

    def validate(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source) -> Event | Outcome:
        """Step 1, on every record: the decoded event, or the dead letter that answers an invalid one."""
        m = self.metrics
        t0 = time.perf_counter()
        m.child(m.events, event_type).inc()
        limits = self.default.rules  # the same in every variant: the variant is not known before decoding
        try:
            event = decode_event(event_type, raw, source, max_bytes=limits.max_event_bytes,
                                 max_future_skew_s=limits.max_future_skew_s, now=self.clock())
            _check_key(key, event.user_id)
        except InvalidEvent as error:
            return self._rejected(event_type, error, raw, key, source)
        m.child(m.stage, "decode").observe(time.perf_counter() - t0)
        return event

    def pending_text(self, event: Event) -> Callable[[], object] | None:
        """For a search whose query the user's text model has not encoded yet: the call that encodes it, for
        the agent to run in a thread while other events go on (``recommend`` then finds it cached)."""
        return self.pending_texts([event])

    def pending_texts(self, events: list[Event]) -> Callable[[], int] | None:
        """:meth:`pending_text` for a batch of events: one call that encodes every new query among them, batched
        per text model (None: nothing to encode). Returns how many it encoded, for the batch-size metric."""
        work: dict[int, tuple[UserEncoder, list[str]]] = {}
        for event in events:
            if event.query is None:
                continue
            encoder = self.arms[self.assignment.variant_of(event.user_id)].served.encoder
            if encoder.text_pending(event.query):
                work.setdefault(id(encoder), (encoder, []))[1].append(event.query)
        if not work:
            return None
        return lambda: sum(encoder.encode_texts(queries) for encoder, queries in work.values())

    def process(self, event_type: EventType, raw: bytes | None, key: bytes | None, source: Source,
                states: MutableMapping[str, bytes], trending: MutableMapping[str, bytes] | None = None) -> Outcome:
        """The whole data path for one record, in-line (a new query is encoded on this thread)."""
        event = self.validate(event_type, raw, key, source)
        if isinstance(event, Outcome):
            return event
        return self.recommend(event, source, states, trending)

    def recommend(self, event: Event, source: Source, states: MutableMapping[str, bytes],
                  trending: MutableMapping[str, bytes] | None = None) -> Outcome:
        """Steps 2-8 for a validated event: update the user's state and answer with a fresh list.

        ``states`` is the user-state table; ``trending`` the table of trending counts (None: memory only)."""
        m = self.metrics
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
        #    The item event's transitions from the user's recent items go out as co-views (learning on).
        state = self._state_of(event.user_id, states.get(event.user_id), encoder)
        position = f"{source.topic}:{source.partition}"
        views: list[CoView] = []
        if state.already_applied(event.event_id, position, source.offset):
            m.duplicates.labels(event_type=event.type).inc()
        else:
            if event.item_id is not None:
                self._score_last_list(event, state, arm)
                if not encoder.knows(event.item_id):
                    m.unknown_items.labels(event_type=event.type).inc()
                self.trending.observe(source.partition, event.item_id, event.type, event.ts, trending)
                if rules.learning is not None:
                    views = co_views(state.recent, event.item_id, event.type, event.ts, rules.learning)
                    if not encoder.knows(event.item_id):  # rankable from its first event on, for every user
                        self._see_live(event.item_id)
            state.vector = encoder.step(state.vector, event.type, event.item_id, text, event.query)
            state.remember(event.type, event.item_id, event.event_id, event.ts, rules.history_size,
                           rules.max_purchased, position, source.offset)
        t3 = time.perf_counter()
        # 4. Query vector.
        query = encoder.query_vector(state.vector)
        t4 = time.perf_counter()
        # 5-7. Search, filter and re-rank, explain. A search's query (and the last search's, while it still
        #    counts) joins the user's taste; a cold-start user's list is blended with trending items (not a
        #    search's: a first search is answered from the query alone).
        search_blend = encoder.blend if served.text_index is not None else None
        intent = search_intent(event, text, state, search_blend, encoder, self._queries) \
            if search_blend is not None else (None, 1.0, event.query)
        cold = state.events < rules.cold_start_events and event.type != "search"
        items, t5, t6 = self._ranked(served, rules, state, query, intent, rules.top_k,
                                     rules.filters.excluded_for(state),
                                     state.events / rules.cold_start_events if cold else None, pending=views)
        t7 = time.perf_counter()
        # 8. The list; the state (with the list it got) is stored once per event.
        rec = self._recommendation(event, items, served.version, arm.name, state.events)
        state.last_list = [it.item_id for it in items]
        stored = state.to_bytes()
        states[event.user_id] = stored
        self._states.put(event.user_id, stored, state)
        t8 = time.perf_counter()
        if text is not None:
            m.child(m.stage, "text_encode").observe(t2 - t1)
        for stage, seconds in (("state", t3 - t2 + t8 - t7), ("query", t4 - t3), ("search", t5 - t4),
                               ("rerank", t6 - t5), ("explain", t7 - t6)):
            m.child(m.stage, stage).observe(seconds)
        m.child(m.lists, event.type, arm.name).inc()
        m.child(m.event_to_recommendation, event.type, arm.name).observe(max(rec.generated_at - event.ts, 0.0))
        if views:
            m.co_views.inc(len(views))
        return Outcome(event.user_id.encode(), rec.to_json(), False, recommendation=rec, co_views=tuple(views))

    def current_list(self, request: ListRequest, states: Mapping[str, bytes]) -> RequestedList:
        """A user's list now, for an HTTP request: steps 4-7 of the data path over the user's current state
        (the carried intent and cold start as the next item event would see them) with the request's filters.
        No event is applied and nothing is written; an unknown user gets the trending list."""
        arm = self.arms[self.assignment.variant_of(request.user_id)]
        served, rules = arm.served, arm.rules
        encoder = served.encoder
        raw = states.get(request.user_id)
        cached = self._states.peek(request.user_id, raw)  # read only: never mutated, so it may stay cached
        state = cached if cached is not None and cached.model_version == encoder.version \
            else self._load_state(raw, encoder)
        search_blend = encoder.blend if served.text_index is not None else None
        intent = carried_intent(state, self.clock(), search_blend, self._queries) \
            if search_blend is not None else None
        if raw is None:
            share: float | None = 0.0  # nothing known of the user: all trending
        else:
            share = state.events / rules.cold_start_events if state.events < rules.cold_start_events else None
        members = self.catalog.in_category(request.category) if request.category is not None else None
        items, _, _ = self._ranked(served, rules, state, encoder.query_vector(state.vector),
                                   intent or (None, 1.0, None), request.k,
                                   rules.filters.excluded_for(state) | request.exclude, share, members)
        return RequestedList(request.user_id, tuple(items), served.version, arm.name, state.events, self.clock(),
                             cold_start=share is not None)

    def similar(self, request: SimilarRequest) -> SimilarItems | None:
        """The items nearest to one item in the default variant's index (by inner product with its vector, the
        item itself left out; the index holds only what the catalog filters admit). None: an unknown item."""
        served = self.served
        item = request.item_id
        known = served.encoder.knows(item) or item in served.text_vectors
        if not known or self.catalog.was_deleted(item):
            return None
        vector = served.vectors_of([item])[0]
        found = served.index.search(vector, request.k, exclude={item})
        return SimilarItems(item, tuple(RecommendedItem(other, score) for other, score in found), served.version,
                            self.clock())

    def _ranked(self, served: IndexedModel, rules: Rules, state: UserState, query: np.ndarray,
                intent: Intent, k: int, excluded: set[str],
                personal_share: float | None, members: set[str] | None = None, pending: Sequence[CoView] = (),
                ) -> tuple[list[RecommendedItem], float, float]:
        """Steps 5-7 for a user's state and query vector, shared by events and requests: the best k items and
        their explanations, with the perf_counter times at the end of steps 5 and 6.

        ``intent`` is (the query vector shaping the list, its weight, the search the list names);
        ``personal_share`` the personal share of a cold-start list (None: no trending blend); ``members`` the
        only items allowed (a request's category); ``pending`` the co-views of the event being answered."""
        encoder = served.encoder
        searched, weight, named = intent
        # 5. Search, never returning what this user must not get; the model then gives every candidate its
        #    final score: recent items and their co-occurring ones join (the inner-product search alone would
        #    rank them lower or miss them), and a model with a re-ranker re-orders the best of them.
        pool = k * DIVERSITY_POOL if rules.diversity > 0 else k
        shaping = encoder.blend if searched is not None else None
        depth = max(pool, encoder.search_depth, shaping.user_pool if shaping is not None else 0)
        # A shaped list takes the user's best items whoever bought them, as offline (the filter below drops
        # the excluded): with a long purchase history, excluding here would make the index over-fetch 4x.
        candidates = served.index.search(query, depth, exclude=() if shaping is not None else excluded)
        # (enough for the list after the filters drop excluded items and items gone from the index)
        votes = served.live_votes(state.recent, pending)
        scored = encoder.rescore_rows(query, state.recent, candidates, votes) if shaping is not None else None
        if scored is None:
            candidates = encoder.rescore(query, state.recent, candidates,
                                         limit=depth + len(excluded) + rules.history_size, extra=votes)
        if shaping is not None and searched is not None:  # the model's scores stay rows for the search blend
            candidates = hybrid(served, shaping, query, searched, weight, scored or candidates, state,
                                limit=pool + len(excluded) + rules.history_size, named=named)
        searchable: Container[str] = served.listable
        if members is not None:
            # A category's items may all lie beyond the search's depth: its indexed items join, scored by the
            # inner product (the search's own score), and nothing outside it is listed.
            searchable = Within(members, searchable)
            listed = {item for item, _ in candidates}
            extra = [item for item in members if item not in listed and item in searchable]
            if extra:
                candidates = [*candidates, *zip(extra, (served.vectors_of(extra) @ query).tolist(), strict=True)]
        t5 = time.perf_counter()
        # 6. Filter and re-rank.
        items = rerank(candidates, excluded, pool, searchable)
        if rules.diversity > 0:
            items = diversify(items, served.vectors_of([it.item_id for it in items]), k, rules.diversity)
        if personal_share is not None:
            items = blend(items, self.trending.top(k + len(excluded)), k, personal_share, excluded, searchable)
        t6 = time.perf_counter()
        # 7. Explanations: the user's own recent events (or the search) most like each item.
        return explain(items, state.recent, named, served.unit_vectors_of, rules.explanations), t5, t6

    def apply_items(self, records: list[ItemRecord]) -> None:
        """Apply catalog changes and bring the served index in line (new, changed, unavailable, deleted)."""
        for record in records:
            self.catalog.apply(record)
        added = 0
        for arm in self.arms.values():
            added += arm.served.sync([r.item_id for r in records], self.catalog, arm.rules.filters)
        for record in records:
            op = "delete" if record.deleted else "upsert"
            self.metrics.catalog_updates.labels(op=op).inc()
        self.metrics.catalog_items.set(len(self.catalog))
        self.metrics.index_items.set(len(self.served.index))
        log.debug("catalog: %d changes applied, %d items (re)indexed", len(records), added)

    def apply_neighbours(self, lists: list[NeighbourList]) -> int:
        """Apply live neighbour lists (``item-neighbours``) to every served model; returns how many items first
        seen in the stream entered the default variant's index."""
        entered = 0
        for arm in self.arms.values():
            for lst in lists:
                added = arm.served.apply_neighbours(lst.item_id, list(lst.neighbours), self.catalog, arm.rules.filters,
                                                    lst.mass, lst.ts)
                entered += added if arm is self.default else 0
        if lists:
            self.metrics.neighbour_lists_applied.inc(len(lists))
            self.metrics.neighbour_list_age.set(max(self.clock() - max(lst.published_at for lst in lists), 0.0))
            self.metrics.live_items_indexed.inc(entered)
            self.metrics.index_items.set(len(self.served.index))
        return entered

    def _see_live(self, item_id: str) -> None:
        """An item no served model was trained on had its first event on this worker: every variant ranks it."""
        entered = [arm.served.see_live(item_id, self.catalog, arm.rules.filters) for arm in self.arms.values()]
        if entered[0]:
            self.metrics.live_items_indexed.inc()

    def swap(self, served: IndexedModel, built_from_seq: int, variant: str = DEFAULT) -> None:
        """Serve another model to a variant from the next event on; replays the catalog changes made while
        it was built.

        Runs on the event loop between two events, so no event sees half a swap; users' states are rebuilt
        from their recent events when they next arrive (``_load_state``)."""
        arm = self.arms[variant]
        served.sync(self.catalog.changed_since(built_from_seq), self.catalog, arm.rules.filters)
        for item in arm.served.live_vectors:  # what the stream taught, in the new model's rows
            served.see_live(item, self.catalog, arm.rules.filters)
        for item, neighbours, mass, ts in arm.served.neighbour_lists():
            served.apply_neighbours(item, neighbours, self.catalog, arm.rules.filters, mass, ts)
        arm.served = served
        if arm is self.default:
            self.metrics.index_items.set(len(served.index))

    def erase(self, raw: bytes | None, key: bytes | None, source: Source,
              states: MutableMapping[str, bytes]) -> Outcome:
        """Forget a user (GDPR erasure): drop the state and answer with a tombstone for the user's list."""
        self.metrics.events.labels(event_type="erase").inc()
        limits = self.default.rules
        try:
            erasure = decode_erasure(raw, source, max_bytes=limits.max_event_bytes,
                                     max_future_skew_s=limits.max_future_skew_s, now=self.clock())
            _check_key(key, erasure.user_id)
        except InvalidEvent as error:
            return self._rejected("erase", error, raw, key, source)
        self._states.forget(erasure.user_id)
        if erasure.user_id in states:
            del states[erasure.user_id]  # Faust writes a changelog tombstone, so restores forget it too
        self.metrics.erasures.inc()
        return Outcome(erasure.user_id.encode(), None, False)

    def _rejected(self, event_type: str, error: InvalidEvent, raw: bytes | None, key: bytes | None,
                  source: Source) -> Outcome:
        """Count an invalid record and wrap it as a dead letter."""
        self.metrics.invalid.labels(event_type=event_type, reason=error.reason).inc()
        self.metrics.dead_letters.labels(topic=source.topic).inc()
        return Outcome(key, dead_letter(raw, key, error, source, self.clock()), True, reason=error.reason)

    def _score_last_list(self, event: Event, state: UserState, arm: Arm) -> None:
        """Count a hit when the clicked/purchased item was in the list the user last received."""
        if not state.last_list:
            return
        m, k = self.metrics, str(arm.rules.top_k)
        m.live_opportunities.labels(event_type=event.type, k=k, variant=arm.name).inc()
        if event.item_id in state.last_list:
            m.live_hits.labels(event_type=event.type, k=k, variant=arm.name).inc()

    def _recommendation(self, event: Event, items: list[RecommendedItem], version: str, variant: str,
                        state_seq: int) -> Recommendation:
        return Recommendation(user_id=event.user_id, items=tuple(items), model_version=version,
                              event_type=event.type, event_id=event.event_id, event_ts=event.ts,
                              generated_at=self.clock(), variant=variant, state_seq=state_seq)

    def _state_of(self, user_id: str, raw: bytes | None, encoder: UserEncoder) -> UserState:
        """The user's state: the decoded one kept from the last write when the table still holds exactly those
        bytes, else decoded (and rebuilt when it belongs to another model)."""
        cached = self._states.take(user_id, raw)
        if cached is not None and cached.model_version == encoder.version:
            return cached
        return self._load_state(raw, encoder)

    def _load_state(self, raw: bytes | None, encoder: UserEncoder) -> UserState:
        """The stored state, a fresh one, or one rebuilt from history when it belongs to another model."""
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
