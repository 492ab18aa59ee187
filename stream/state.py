"""Per-user state kept in the changelog-backed Faust table, and its compact byte form.

The recurrent vector belongs to one model version. When the serving model changes, the pipeline rebuilds
the vector by replaying the recent items kept here, so a model swap never feeds one model another's state.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import numpy as np
import orjson

from stream.errors import StreamrecError

STATE_FORMAT = 1
SEEN_EVENT_IDS = 16  # recent event ids kept to skip records a producer sent twice


@dataclass
class UserState:
    """What the worker remembers about one user."""

    vector: np.ndarray  # recurrent state (float32), meaningful only for ``model_version``
    model_version: str
    recent: list[tuple[str, str]] = field(default_factory=list)  # (event type, item id), oldest first
    purchased: list[str] = field(default_factory=list)  # purchased item ids, oldest first
    seen_event_ids: list[str] = field(default_factory=list)
    last_list: list[str] = field(default_factory=list)  # item ids of the last list sent (live hit-rate)
    # Last applied offset per input "topic:partition": Kafka redelivers from the last commit after a crash,
    # possibly many of a user's events, so offsets (not a window of ids) make the update exactly-once.
    offsets: dict[str, int] = field(default_factory=dict)
    events: int = 0
    last_ts: float = 0.0

    def already_applied(self, event_id: str, position: str, offset: int) -> bool:
        """Whether this record was applied before: its offset is not past the last applied one of its
        partition, or (a producer's resend) its event id is among the latest applied."""
        return offset <= self.offsets.get(position, -1) or event_id in self.seen_event_ids

    def remember(self, event_type: str, item_id: str | None, event_id: str, ts: float, history_size: int,
                 max_purchased: int, position: str = "", offset: int = -1) -> None:
        """Record an applied event in the bounded history lists and its input position."""
        if position:
            self.offsets[position] = offset
        if item_id is not None:
            self.recent.append((event_type, item_id))
            del self.recent[:-history_size]
            if event_type == "purchase" and item_id not in self.purchased:
                self.purchased.append(item_id)
                if max_purchased:
                    del self.purchased[:-max_purchased]
                else:
                    self.purchased.clear()
        self.seen_event_ids.append(event_id)
        del self.seen_event_ids[:-SEEN_EVENT_IDS]
        self.events += 1
        self.last_ts = max(self.last_ts, ts)

    def to_bytes(self) -> bytes:
        """Compact JSON with the vector as base64 of its float32 bytes."""
        return orjson.dumps({
            "f": STATE_FORMAT, "m": self.model_version,
            "v": base64.b64encode(self.vector.astype(np.float32).tobytes()).decode(),
            "r": self.recent, "p": self.purchased, "s": self.seen_event_ids, "l": self.last_list,
            "o": self.offsets, "n": self.events, "t": self.last_ts,
        })

    @staticmethod
    def from_bytes(raw: bytes) -> UserState:
        """Inverse of :meth:`to_bytes`; raises StreamrecError on a foreign or corrupt record."""
        try:
            body = orjson.loads(raw)
            if body["f"] != STATE_FORMAT:
                raise StreamrecError(f"user state format {body['f']!r} is not {STATE_FORMAT}")
            return UserState(
                vector=np.frombuffer(base64.b64decode(body["v"]), dtype=np.float32).copy(),
                model_version=body["m"],
                recent=[(t, i) for t, i in body["r"]],
                purchased=list(body["p"]),
                seen_event_ids=list(body["s"]),
                last_list=list(body.get("l", [])),
                offsets={str(k): int(v) for k, v in body.get("o", {}).items()},
                events=int(body["n"]),
                last_ts=float(body["t"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise StreamrecError(f"corrupt user state: {exc}") from None
