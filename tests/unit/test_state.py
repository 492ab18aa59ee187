"""UserState: bounded history and a lossless byte form."""

from __future__ import annotations

import base64
import uuid

import numpy as np
import orjson
import pytest

from stream.core.state import SEEN_EVENT_IDS, UserState
from stream.errors import StreamrecError


def test_round_trip_is_exact() -> None:
    s = UserState(vector=np.arange(8, dtype=np.float32) / 3, model_version="v1")
    s.remember("click", "a", "e1", 10.0, history_size=5, max_purchased=5)
    s.remember("purchase", "b", "e2", 11.0, history_size=5, max_purchased=5)
    s.remember("search", None, "e3", 9.0, history_size=5, max_purchased=5)
    back = UserState.from_bytes(s.to_bytes())
    assert np.array_equal(back.vector, s.vector)
    assert back.recent == [("click", "a"), ("purchase", "b")]
    assert back.purchased == ["b"]
    assert (back.events, back.last_ts, back.seen_event_ids) == (3, 11.0, ["e1", "e2", "e3"])


def test_history_lists_are_bounded() -> None:
    s = UserState(vector=np.zeros(4, np.float32), model_version="v1")
    for n in range(100):
        s.remember("purchase", f"i{n}", f"e{n}", float(n), history_size=10, max_purchased=20)
    assert len(s.recent) == 10 and s.recent[-1] == ("purchase", "i99")
    assert len(s.purchased) == 20 and s.purchased[0] == "i80"
    assert len(s.seen_event_ids) == SEEN_EVENT_IDS


def test_corrupt_bytes_raise() -> None:
    with pytest.raises(StreamrecError):
        UserState.from_bytes(b'{"f": 1}')


def _full_state() -> UserState:
    """A user with full windows: decimal item ids (movielens) and uuid4 hex event ids, as the worker sees."""
    rng = np.random.default_rng(3)
    s = UserState(vector=rng.standard_normal(64).astype(np.float32), model_version="gru-movielens-20261124T035017-x")
    for n in range(300):
        kind = "purchase" if n % 2 else "click"
        s.remember(kind, str(int(rng.integers(1, 200_000))), uuid.UUID(int=int(rng.integers(1 << 62))).hex,
                   1.7e9 + n, history_size=50, max_purchased=500, position=f"{kind}s:{n % 4}", offset=n)
    s.last_list = [str(int(i)) for i in rng.integers(1, 10_000, 10)]
    return s


def _same(a: UserState, b: UserState) -> bool:
    return (np.array_equal(a.vector, b.vector) and a.vector.dtype == b.vector.dtype
            and (a.model_version, a.recent, a.purchased, a.seen_event_ids, a.last_list, a.offsets, a.events,
                 a.last_ts) == (b.model_version, b.recent, b.purchased, b.seen_event_ids, b.last_list, b.offsets,
                                b.events, b.last_ts))


def test_full_state_round_trips_in_compact_form() -> None:
    s = _full_state()
    raw = s.to_bytes()
    assert _same(UserState.from_bytes(raw), s)
    # 256 bytes of vector, 16 bytes an event id, under 3.5 bytes a 6-digit item id (210 of them), 4 offsets
    assert len(raw) < 256 + 16 * 16 + 210 * 3.5 + 150


@pytest.mark.parametrize("ids", [["007", "7", "0"], ["a1", "B2", "é"], ["", "12"], ["ab", "abc"], ["1,2", "3;4"]])
def test_any_ids_round_trip(ids: list[str]) -> None:
    s = UserState(vector=np.ones(3, np.float32), model_version="v")
    for n, item in enumerate(ids):
        s.remember("purchase", item, item or "-", float(n), history_size=5, max_purchased=5)
    s.last_list = list(reversed(ids))
    assert _same(UserState.from_bytes(s.to_bytes()), s)


def test_unknown_event_types_and_empty_state_round_trip() -> None:
    s = UserState(vector=np.zeros(0, np.float32), model_version="")
    assert _same(UserState.from_bytes(s.to_bytes()), s)
    s.remember("view", "1", "e1", 1.0, history_size=5, max_purchased=5)
    assert UserState.from_bytes(s.to_bytes()).recent == [("view", "1")]


def test_format_1_states_of_earlier_workers_are_read() -> None:
    vector = np.arange(4, dtype=np.float32) / 7
    old = orjson.dumps({"f": 1, "m": "v1", "v": base64.b64encode(vector.tobytes()).decode(),
                        "r": [["click", "a"], ["purchase", "b"]], "p": ["b"], "s": ["e1", "e2"], "l": ["c"],
                        "o": {"clicks:0": 7}, "n": 2, "t": 11.0})
    s = UserState.from_bytes(old)
    assert np.array_equal(s.vector, vector) and s.recent == [("click", "a"), ("purchase", "b")]
    assert (s.purchased, s.seen_event_ids, s.last_list, s.offsets, s.events) == (["b"], ["e1", "e2"], ["c"],
                                                                                  {"clicks:0": 7}, 2)
    assert _same(UserState.from_bytes(s.to_bytes()), s)


def test_truncated_or_foreign_bytes_raise() -> None:
    raw = _full_state().to_bytes()
    for bad in (raw[:-1], raw[: len(raw) // 2], b"", b'{"f": 1, "v": ""}', b'{"f": 3}', b"{", raw + b"x"):
        with pytest.raises(StreamrecError):
            UserState.from_bytes(bad)


def test_the_carried_intent_round_trips_and_format_2_states_are_read() -> None:
    state = UserState(vector=np.arange(4, dtype=np.float32), model_version="v", recent=[("click", "12")],
                      offsets={"clicks:0": 3}, events=2, last_ts=5.0)
    plain = state.to_bytes()
    state.searched(b"\x01" * 8, 4.5)
    state.remember("click", "13", "e3", 6.0, 50, 500)
    back = UserState.from_bytes(state.to_bytes())
    assert (back.intent, back.intent_events, back.intent_ts) == (b"\x01" * 8, 1, 4.5)
    assert back.recent == [("click", "12"), ("click", "13")]
    offsets = orjson.dumps({"clicks:0": 3})
    assert plain[-len(offsets) - 1:] == b"\x00" + offsets  # format 3 without an intent: one zero byte
    format_2 = b"\x02" + plain[1:-len(offsets) - 1] + offsets
    old = UserState.from_bytes(format_2)
    assert old.intent == b"" and old.vector.tolist() == [0.0, 1.0, 2.0, 3.0] and old.offsets == {"clicks:0": 3}
