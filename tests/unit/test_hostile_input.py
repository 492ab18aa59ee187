"""Property tests: no input bytes make the decoder or the data path raise anything but a dead letter."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.models.inputs import EVENT_TYPES
from stream.core.pipeline import Recommender
from stream.core.schemas import REASONS, Event, Source, decode_event
from stream.errors import InvalidEvent

SRC = Source("clicks", 0, 0)
NOW = 1_700_000_000.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
field_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=300),
    st.just(""), st.just("x" * 2000), st.lists(st.integers(), max_size=3), st.just({"a": 1}),
    st.sampled_from([-1, 0, NOW, NOW * 1000, 1e308, -1e308, 2**70]),
)
events = st.fixed_dictionaries(
    {},
    optional={"schema_version": st.one_of(st.just(1), field_values), "user_id": field_values,
              "item_id": field_values, "query": field_values, "ts": field_values, "event_id": field_values,
              "session_id": field_values, "quantity": field_values, "price": field_values,
              "unexpected": field_values},
)


def decode_or_reason(event_type: str, raw: bytes) -> Event | str:
    try:
        return decode_event(event_type, raw, SRC, now=NOW)  # type: ignore[arg-type]
    except InvalidEvent as error:
        assert error.reason in REASONS
        return error.reason


@given(st.sampled_from(EVENT_TYPES), st.binary(max_size=2000))
def test_any_bytes_decode_or_get_a_reason(event_type: str, raw: bytes) -> None:
    decode_or_reason(event_type, raw)


@given(st.sampled_from(EVENT_TYPES), json_values)
def test_any_json_decodes_or_gets_a_reason(event_type: str, value: object) -> None:
    decode_or_reason(event_type, json.dumps(value).encode())


@given(st.sampled_from(EVENT_TYPES), events)
def test_event_shaped_objects_are_valid_only_when_every_field_is(event_type: str, body: dict[str, object]) -> None:
    out = decode_or_reason(event_type, json.dumps(body).encode())
    if isinstance(out, Event):
        assert body.get("schema_version") == 1
        assert out.user_id and len(out.user_id) <= 256 and out.user_id.isprintable()
        assert math.isfinite(out.ts) and 0 < out.ts <= NOW + 86_400
        if event_type == "search":
            assert out.query and out.item_id is None
        else:
            assert out.item_id and out.query is None


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.sampled_from(EVENT_TYPES), st.one_of(st.binary(max_size=500), events.map(lambda b: json.dumps(b).encode())),
       st.one_of(st.none(), st.binary(max_size=20)))
def test_the_data_path_never_raises(recommender: Recommender, event_type: str, raw: bytes,
                                    key: bytes | None) -> None:
    states: dict[str, bytes] = {}
    out = recommender.process(event_type, raw, key, SRC, states)  # type: ignore[arg-type]
    if out.dead_letter:
        assert out.reason in REASONS and not states
    else:
        assert out.recommendation is not None and out.key in (key,)


def test_named_hostile_cases() -> None:
    base = '{"schema_version": 1, "user_id": "u", "item_id": "i", "ts": %s}'
    assert decode_or_reason("click", (base % "NaN").encode()) == "malformed_json"
    assert decode_or_reason("click", (base % "Infinity").encode()) == "malformed_json"
    assert decode_or_reason("click", (base % "-1").encode()) == "invalid_value"
    assert decode_or_reason("click", (base % "1e300").encode()) == "ts_in_future"
    assert decode_or_reason("click", b'{"schema_version": 1, "user_id": "\\ud800", "item_id": "i", "ts": 1}') in (
        "malformed_json", "invalid_value")
    huge = json.dumps({"schema_version": 1, "user_id": "u", "query": "q" * 1_000_000, "ts": 1}).encode()
    assert decode_or_reason("search", huge) == "too_large"
    assert decode_or_reason("click", b"\xc3\x28") == "malformed_json"  # invalid UTF-8
