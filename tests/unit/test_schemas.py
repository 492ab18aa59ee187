"""Decoding and validation of input events, and the output/dead-letter records."""

from __future__ import annotations

import base64

import orjson
import pytest

from stream.core.schemas import Recommendation, RecommendedItem, Source, dead_letter, decode_event
from stream.errors import InvalidEvent

SRC = Source("clicks", 3, 42)
NOW = 1_700_000_000.0


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"schema_version": 1, "user_id": "u1", "ts": NOW - 1}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_click_decodes_with_optional_fields() -> None:
    e = decode_event("click", body(item_id=123, session_id="s9", event_id="e1"), SRC, now=NOW)
    assert (e.type, e.user_id, e.item_id, e.session_id, e.event_id) == ("click", "u1", "123", "s9", "e1")


def test_missing_event_id_is_the_stable_record_position() -> None:
    e = decode_event("click", body(item_id="i"), SRC, now=NOW)
    assert e.event_id == "clicks-3-42"


def test_search_and_purchase() -> None:
    s = decode_event("search", body(query="  red shoes "), SRC, now=NOW)
    assert s.query == "red shoes" and s.item_id is None
    p = decode_event("purchase", body(item_id="i", quantity=2, price=9.5), SRC, now=NOW)
    assert (p.quantity, p.price) == (2, 9.5)


def test_extra_fields_are_ignored() -> None:
    assert decode_event("click", body(item_id="i", colour="red"), SRC, now=NOW).item_id == "i"


@pytest.mark.parametrize(("event_type", "raw", "reason"), [
    ("click", b"{not json", "malformed_json"),
    ("click", b"\xff\xfe", "malformed_json"),
    ("click", b"[1, 2]", "not_an_object"),
    ("click", body(schema_version=2, item_id="i"), "unsupported_schema_version"),
    ("click", body(schema_version=..., item_id="i"), "unsupported_schema_version"),
    ("click", body(), "missing_field"),
    ("click", body(user_id=..., item_id="i"), "missing_field"),
    ("click", body(ts=..., item_id="i"), "missing_field"),
    ("click", body(item_id=["x"]), "wrong_type"),
    ("click", body(item_id=True), "wrong_type"),
    ("click", body(ts="yesterday", item_id="i"), "wrong_type"),
    ("click", body(ts=-5, item_id="i"), "invalid_value"),
    ("click", body(ts=NOW + 10 * 86400, item_id="i"), "ts_in_future"),
    ("click", body(item_id=""), "invalid_value"),
    ("search", body(), "missing_field"),
    ("search", body(query=""), "invalid_value"),
    ("search", body(query=5), "wrong_type"),
    ("purchase", body(item_id="i", quantity=0), "invalid_value"),
    ("purchase", body(item_id="i", quantity="2"), "wrong_type"),
    ("purchase", body(item_id="i", price=-1), "invalid_value"),
])
def test_invalid_events_have_reasons(event_type: str, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(event_type, raw, SRC, now=NOW)  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_oversized_event_is_rejected_before_parsing() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event("click", body(item_id="i" * 100), SRC, max_bytes=64, now=NOW)
    assert info.value.reason == "too_large"


def test_dead_letter_keeps_reason_position_and_original_bytes() -> None:
    raw = b"\x00garbage"
    record = orjson.loads(dead_letter(raw, b"u1", InvalidEvent("malformed_json", "x"), SRC, NOW))
    assert record["reason"] == "malformed_json"
    assert record["source"] == {"topic": "clicks", "partition": 3, "offset": 42}
    assert base64.b64decode(record["value_b64"]) == raw
    assert base64.b64decode(record["key_b64"]) == b"u1"


def test_recommendation_round_trip() -> None:
    rec = Recommendation("u1", (RecommendedItem("a", 0.5), RecommendedItem("b", 0.25)), "v1", "click", "e1",
                         NOW, NOW + 0.002)
    wire = orjson.loads(rec.to_json())
    assert [i["rank"] for i in wire["items"]] == [1, 2]
    assert Recommendation.from_json(rec.to_json()) == rec


def test_a_search_of_whitespace_or_symbols_is_valid_and_an_empty_or_long_one_is_not() -> None:
    assert decode_event("search", body(query="   "), SRC, now=NOW).query == "   "  # answered, matches no text
    assert decode_event("search", body(query="🚀 space"), SRC, now=NOW).query == "🚀 space"
    for query in ("", "x" * 1025):
        with pytest.raises(InvalidEvent) as caught:
            decode_event("search", body(query=query), SRC, now=NOW)
        assert caught.value.reason == "invalid_value"
    with pytest.raises(InvalidEvent) as caught:
        decode_event("search", b'{"schema_version": 1, "user_id": "u", "query": "\xff\xfe", "ts": 1}', SRC, now=NOW)
    assert caught.value.reason == "malformed_json"  # invalid UTF-8
