"""UserState: bounded history and a lossless byte form."""

from __future__ import annotations

import numpy as np
import pytest

from stream.errors import StreamrecError
from stream.state import SEEN_EVENT_IDS, UserState


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
