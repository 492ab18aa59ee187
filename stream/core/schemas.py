"""Typed records at the edge: input events, recommendation lists and dead letters (schema version 1).

Input events are JSON objects keyed by user id. ``decode_event`` turns raw bytes into an :class:`Event`
or raises :class:`InvalidEvent` with a stable reason code; nothing else in the worker parses input.
Unknown extra fields are ignored so producers can add fields before consumers know them.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from encoders.models.inputs import EventType as EventType  # re-exported: the wire format names these types
from stream.errors import InvalidEvent

SCHEMA_VERSION = 1
MAX_ID_LEN = 256
MAX_QUERY_LEN = 1024
MAX_SAFE_INTEGER = 2**53 - 1  # integer ids beyond this lose precision in JavaScript clients

# Stable reason codes (metric label values and the dead letter's "reason").
REASONS = (
    "too_large",
    "malformed_json",
    "not_an_object",
    "unsupported_schema_version",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "ts_in_future",
    "key_mismatch",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One validated user event. ``item_id`` is set for clicks and purchases, ``query`` for searches."""

    type: EventType
    user_id: str
    ts: float  # Unix seconds when the event happened (the producer's clock)
    event_id: str
    item_id: str | None = None
    query: str | None = None
    session_id: str | None = None
    quantity: int | None = None
    price: float | None = None

    def to_json(self) -> bytes:
        """Serialise as the wire format (used by producers such as replay and tests)."""
        return _with_optional({"schema_version": SCHEMA_VERSION, "user_id": self.user_id, "ts": self.ts,
                               "event_id": self.event_id},
                              self, ("item_id", "query", "session_id", "quantity", "price"))


@dataclass(frozen=True, slots=True)
class Erasure:
    """A request to forget a user (GDPR erasure): the state goes, the user's list becomes a tombstone."""

    user_id: str
    ts: float
    event_id: str

    def to_json(self) -> bytes:
        """The wire format (topic ``erasures``, keyed by user id)."""
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "user_id": self.user_id, "ts": self.ts,
                             "event_id": self.event_id})


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """A catalog change (topic ``items``, keyed by item id): an upsert, or a delete when ``deleted``."""

    item_id: str
    title: str | None = None
    category: str | None = None
    price: float | None = None
    available: bool = True
    deleted: bool = False

    def to_json(self) -> bytes:
        """The wire format of an upsert or a delete."""
        if self.deleted:
            return orjson.dumps({"schema_version": SCHEMA_VERSION, "item_id": self.item_id, "deleted": True})
        return _with_optional({"schema_version": SCHEMA_VERSION, "item_id": self.item_id, "available": self.available},
                              self, ("title", "category", "price"))


@dataclass(frozen=True, slots=True)
class ModelRelease:
    """A published model (topic ``models``, keyed by variant): where every worker loads it from."""

    path: str
    version: str
    published_at: float
    variant: str = "default"  # the A/B variant whose model this replaces (the record's key)

    def to_json(self) -> bytes:
        """The wire format."""
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "path": self.path, "version": self.version,
                             "published_at": self.published_at, "variant": self.variant})


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One entry of a list: the item, its score (higher is better) and, for fills, why it is there."""

    item_id: str
    score: float
    # Why it is there: the user's recent events most like it ("click:318", "purchase:296", "search:noir"),
    # or ("trending",) for a cold-start fill.
    because: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The list produced for one event; the value of the compacted ``recommendations`` topic."""

    user_id: str
    items: tuple[RecommendedItem, ...]
    model_version: str
    event_type: EventType
    event_id: str
    event_ts: float
    generated_at: float
    variant: str = "default"  # the A/B variant the user is in
    state_seq: int = 0  # events the user's state had applied when this list was made (orders a user's lists)

    def to_json(self) -> bytes:
        """The documented wire format (README: "Recommendation record")."""
        return orjson.dumps(_list_body(self.user_id, self.items, self.model_version, self.variant, self.state_seq,
                                       {"type": self.event_type, "event_id": self.event_id, "ts": self.event_ts},
                                       self.generated_at))

    @staticmethod
    def from_json(raw: bytes) -> Recommendation:
        """Parse a record written by :meth:`to_json` (consumers, tail, tests)."""
        body = orjson.loads(raw)
        event = body["event"]
        return Recommendation(
            user_id=body["user_id"],
            items=tuple(RecommendedItem(it["item_id"], float(it["score"]), tuple(it.get("because", ())))
                        for it in body["items"]),
            model_version=body["model_version"],
            event_type=event["type"],
            event_id=event["event_id"],
            event_ts=float(event["ts"]),
            generated_at=float(body["generated_at"]),
            variant=str(body.get("variant", "default")),
            state_seq=int(body.get("state_seq", 0)),
        )


@dataclass(frozen=True, slots=True)
class RequestedList:
    """A list computed for an HTTP request from the user's current state (no event applied): the topic's record
    with ``"event": null``, ``"source": "request"`` and whether it is a cold-start (trending) list."""

    user_id: str
    items: tuple[RecommendedItem, ...]
    model_version: str
    variant: str
    state_seq: int
    generated_at: float
    cold_start: bool  # an unknown user (all trending), or one with fewer than cold_start_events events

    def to_json(self) -> bytes:
        """The recommendation record (schemas/recommendation.schema.json) of a request."""
        body = _list_body(self.user_id, self.items, self.model_version, self.variant, self.state_seq, None,
                          self.generated_at)
        return orjson.dumps(body | {"source": "request", "cold_start": self.cold_start})


@dataclass(frozen=True, slots=True)
class SimilarItems:
    """The items nearest to one item in the served index (``GET /v1/items/{item_id}/similar``)."""

    item_id: str
    items: tuple[RecommendedItem, ...]
    model_version: str
    generated_at: float

    def to_json(self) -> bytes:
        """schemas/similar-items.schema.json."""
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "item_id": self.item_id,
                             "items": [_item_json(it, n) for n, it in enumerate(self.items, 1)],
                             "model_version": self.model_version, "generated_at": self.generated_at})


def _list_body(user_id: str, items: tuple[RecommendedItem, ...], model_version: str, variant: str, state_seq: int,
               event: dict[str, Any] | None, generated_at: float) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "user_id": user_id,
            "items": [_item_json(it, n) for n, it in enumerate(items, 1)], "model_version": model_version,
            "variant": variant, "state_seq": state_seq, "event": event, "generated_at": generated_at}


def _item_json(item: RecommendedItem, rank: int) -> dict[str, Any]:
    body: dict[str, Any] = {"item_id": item.item_id, "score": round(item.score, 6), "rank": rank}
    if item.because:
        body["because"] = list(item.because)
    return body


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int


def dead_letter(raw: bytes | None, key: bytes | None, error: InvalidEvent, source: Source, now: float) -> bytes:
    """The dead-letter record: reason, source position and the original bytes (base64), as JSON."""
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION,
        "reason": error.reason,
        "detail": error.detail,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
        "key_b64": None if key is None else base64.b64encode(key).decode(),
        "value_b64": None if raw is None else base64.b64encode(raw).decode(),
        "received_at": now,
    })


def decode_event(event_type: EventType, raw: bytes | None, source: Source, *, max_bytes: int = 65536,
                 max_future_skew_s: float = 86_400.0, now: float | None = None) -> Event:
    """Parse and validate one input record of the given type; raise InvalidEvent with a reason code.

    A missing ``event_id`` becomes ``topic-partition-offset``, which is stable when Kafka redelivers.
    """
    body, user_id, ts, event_id = _envelope(raw, source, max_bytes, max_future_skew_s, now)
    session_id = _identifier(body, "session_id", required=False)
    if event_type == "search":
        query = body.get("query")
        if query is None:
            raise InvalidEvent("missing_field", "query")
        if not isinstance(query, str):
            raise InvalidEvent("wrong_type", "query must be a string")
        if not query or len(query) > MAX_QUERY_LEN:
            raise InvalidEvent("invalid_value", f"query must have 1..{MAX_QUERY_LEN} characters")
        query = query.strip() or query  # whitespace only: kept as sent; it names the search, matches no text
        return Event("search", user_id, ts, event_id, query=query, session_id=session_id)
    item_id = _identifier(body, "item_id", required=True)
    if event_type == "click":
        return Event("click", user_id, ts, event_id, item_id=item_id, session_id=session_id)
    quantity = _integral(body.get("quantity"))
    if quantity is not None and (not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1):
        raise InvalidEvent("invalid_value" if isinstance(quantity, int) else "wrong_type",
                           "quantity must be a positive integer")
    price = _price(body)
    return Event("purchase", user_id, ts, event_id, item_id=item_id, session_id=session_id,
                 quantity=quantity, price=price)


def decode_erasure(raw: bytes | None, source: Source, *, max_bytes: int = 65536,
                   max_future_skew_s: float = 86_400.0, now: float | None = None) -> Erasure:
    """Parse and validate an erasure request; raise InvalidEvent with a reason code."""
    _, user_id, ts, event_id = _envelope(raw, source, max_bytes, max_future_skew_s, now)
    return Erasure(user_id, ts, event_id)


def decode_item(raw: bytes | None, key: bytes | None, *, max_bytes: int = 65536) -> ItemRecord:
    """Parse a catalog record; a null value (a compaction tombstone) deletes the item named by the key."""
    if raw is None:
        if not key:
            raise InvalidEvent("missing_field", "a catalog tombstone needs the item id as its key")
        return ItemRecord(key.decode("utf-8", "replace"), deleted=True)
    body = _object(raw, max_bytes)
    item_id = _identifier(body, "item_id", required=True)
    assert item_id is not None
    if key is None or key != item_id.encode():
        raise InvalidEvent("key_mismatch", "the record key must be the item_id (the topic is compacted by key)")
    deleted = body.get("deleted", False)
    if not isinstance(deleted, bool):
        raise InvalidEvent("wrong_type", "deleted must be true or false")
    if deleted:
        return ItemRecord(item_id, deleted=True)
    available = body.get("available", True)
    if not isinstance(available, bool):
        raise InvalidEvent("wrong_type", "available must be true or false")
    texts = {}
    for name, limit in (("title", MAX_QUERY_LEN), ("category", MAX_ID_LEN)):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > limit):
            raise InvalidEvent("wrong_type" if not isinstance(value, str) else "invalid_value",
                               f"{name} must be a string of 1..{limit} characters")
        texts[name] = value.strip() if isinstance(value, str) else None
    price = _price(body)
    return ItemRecord(item_id, title=texts["title"], category=texts["category"], price=price, available=available)


def decode_release(raw: bytes | None, *, max_bytes: int = 65536) -> ModelRelease:
    """Parse a model release record."""
    body = _object(raw, max_bytes)
    path, version, published_at = body.get("path"), body.get("version"), body.get("published_at")
    if not isinstance(path, str) or not path or not isinstance(version, str) or not version:
        raise InvalidEvent("missing_field", "a model release needs path and version strings")
    if isinstance(published_at, bool) or not isinstance(published_at, (int, float)):
        raise InvalidEvent("wrong_type", "published_at must be a number (Unix seconds)")
    variant = body.get("variant", "default")
    if not isinstance(variant, str) or not variant:
        raise InvalidEvent("wrong_type", "variant must be a non-empty string")
    return ModelRelease(path, version, float(published_at), variant)


def _object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Size check, JSON parse, object check and schema version: what every record shares."""
    if raw is None:
        raise InvalidEvent("missing_field", "record has no value")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > max_event_bytes={max_bytes}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)[:200]) from None
    if not isinstance(body, dict):
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(body).__name__}")
    version = body.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidEvent("unsupported_schema_version", f"schema_version={version!r}, supported: {SCHEMA_VERSION}")
    return body


def _envelope(raw: bytes | None, source: Source, max_bytes: int, max_future_skew_s: float,
              now: float | None) -> tuple[dict[str, Any], str, float, str]:
    """The checks every input record shares: size, JSON object, schema version, user_id, ts, event_id."""
    body = _object(raw, max_bytes)
    user_id = _identifier(body, "user_id", required=True)
    ts = _timestamp(body, max_future_skew_s, time.time() if now is None else now)
    event_id = _identifier(body, "event_id", required=False) or f"{source.topic}-{source.partition}-{source.offset}"
    assert user_id is not None
    return body, user_id, ts, event_id


def _identifier(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    """Ids may be strings or integers on the wire; they are strings inside streamrec."""
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", name)
        return None
    value = _integral(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEvent("wrong_type", f"{name} must be a string or an integer")
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        raise InvalidEvent("invalid_value", f"{name} must be a safe integer (|n| <= 2**53 - 1) or a string")
    text = str(value)
    if not text or len(text) > MAX_ID_LEN or not text.isprintable():
        raise InvalidEvent("invalid_value", f"{name} must be 1..{MAX_ID_LEN} printable characters")
    return text


def _integral(value: object) -> object:
    """A float with no fraction as the integer it is: JSON has one number type, and JSON Schema's
    "integer" (schemas/) accepts 2.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _price(body: dict[str, Any]) -> float | None:
    """An optional price: a finite number >= 0."""
    price = body.get("price")
    if price is None:
        return None
    if not isinstance(price, (int, float)) or isinstance(price, bool):
        raise InvalidEvent("wrong_type", "price must be a number")
    if not math.isfinite(price) or price < 0:
        raise InvalidEvent("invalid_value", "price must be finite and >= 0")
    return float(price)


def _with_optional(body: dict[str, Any], record: object, names: tuple[str, ...]) -> bytes:
    """``body`` plus the named attributes of ``record`` that are set, as JSON."""
    for name in names:
        value = getattr(record, name)
        if value is not None:
            body[name] = value
    return orjson.dumps(body)


def _timestamp(body: dict[str, Any], max_future_skew_s: float, now: float) -> float:
    value = body.get("ts")
    if value is None:
        raise InvalidEvent("missing_field", "ts")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("wrong_type", "ts must be a number (Unix seconds)")
    ts = float(value)
    if not math.isfinite(ts) or ts <= 0:
        raise InvalidEvent("invalid_value", "ts must be a positive finite number of Unix seconds")
    if ts > now + max_future_skew_s:
        raise InvalidEvent("ts_in_future", f"ts={ts} is more than {max_future_skew_s:.0f} s ahead of now")
    return ts
