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
from typing import Any, Literal

import orjson

from stream.errors import InvalidEvent

SCHEMA_VERSION = 1
EventType = Literal["click", "search", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = ("click", "search", "purchase")
MAX_ID_LEN = 256
MAX_QUERY_LEN = 1024

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
        body: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "user_id": self.user_id, "ts": self.ts,
                                "event_id": self.event_id}
        for name in ("item_id", "query", "session_id", "quantity", "price"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return orjson.dumps(body)


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
class RecommendedItem:
    """One entry of a list: the item and its retrieval score (higher is better)."""

    item_id: str
    score: float


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

    def to_json(self) -> bytes:
        """The documented wire format (README: "Recommendation record")."""
        return orjson.dumps({
            "schema_version": SCHEMA_VERSION,
            "user_id": self.user_id,
            "items": [{"item_id": it.item_id, "score": round(it.score, 6), "rank": n}
                      for n, it in enumerate(self.items, 1)],
            "model_version": self.model_version,
            "event": {"type": self.event_type, "event_id": self.event_id, "ts": self.event_ts},
            "generated_at": self.generated_at,
        })

    @staticmethod
    def from_json(raw: bytes) -> Recommendation:
        """Parse a record written by :meth:`to_json` (consumers, tail, tests)."""
        body = orjson.loads(raw)
        event = body["event"]
        return Recommendation(
            user_id=body["user_id"],
            items=tuple(RecommendedItem(it["item_id"], float(it["score"])) for it in body["items"]),
            model_version=body["model_version"],
            event_type=event["type"],
            event_id=event["event_id"],
            event_ts=float(event["ts"]),
            generated_at=float(body["generated_at"]),
        )


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
        query = query.strip()
        if not query or len(query) > MAX_QUERY_LEN:
            raise InvalidEvent("invalid_value", f"query must have 1..{MAX_QUERY_LEN} characters")
        return Event("search", user_id, ts, event_id, query=query, session_id=session_id)
    item_id = _identifier(body, "item_id", required=True)
    if event_type == "click":
        return Event("click", user_id, ts, event_id, item_id=item_id, session_id=session_id)
    quantity = body.get("quantity")
    if quantity is not None and (not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1):
        raise InvalidEvent("invalid_value" if isinstance(quantity, int) else "wrong_type",
                           "quantity must be a positive integer")
    price = body.get("price")
    if price is not None:
        if not isinstance(price, (int, float)) or isinstance(price, bool):
            raise InvalidEvent("wrong_type", "price must be a number")
        if not math.isfinite(price) or price < 0:
            raise InvalidEvent("invalid_value", "price must be finite and >= 0")
        price = float(price)
    return Event("purchase", user_id, ts, event_id, item_id=item_id, session_id=session_id,
                 quantity=quantity, price=price)


def decode_erasure(raw: bytes | None, source: Source, *, max_bytes: int = 65536,
                   max_future_skew_s: float = 86_400.0, now: float | None = None) -> Erasure:
    """Parse and validate an erasure request; raise InvalidEvent with a reason code."""
    _, user_id, ts, event_id = _envelope(raw, source, max_bytes, max_future_skew_s, now)
    return Erasure(user_id, ts, event_id)


def _envelope(raw: bytes | None, source: Source, max_bytes: int, max_future_skew_s: float,
              now: float | None) -> tuple[dict[str, Any], str, float, str]:
    """The checks every input record shares: size, JSON object, schema version, user_id, ts, event_id."""
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
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEvent("wrong_type", f"{name} must be a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_ID_LEN or not text.isprintable():
        raise InvalidEvent("invalid_value", f"{name} must be 1..{MAX_ID_LEN} printable characters")
    return text


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
