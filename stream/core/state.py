"""Per-user state kept in the changelog-backed Faust table, and its compact byte form.

The recurrent vector belongs to one model version. When the serving model changes, the pipeline rebuilds
the vector by replaying the recent items kept here, so a model swap never feeds one model another's state.

Byte form (format 3). The state is read and written once per event, so each part is decoded by one C call
(numpy, ``bytes.hex``, ``str.split``, orjson), never by a Python loop over bytes::

    format (1 byte) | events (varint) | last_ts (float64) | model_version (text)
    | vector: varint n, n float32 (exact: the audit compares replayed vectors to 1e-5)
    | recent types: varint n, n codes (click 0, search 1, purchase 2; 0xff: JSON list follows)
    | item lists: mode byte, then recent items, purchased and last_list
    | seen_event_ids: varint n, then hex mode (varint id length, raw bytes) or JSON
    | intent: 1 byte n (0: none), n bytes of the last search's query hash, then varint item events since
      and float64 ts of the search
    | offsets: JSON object of position -> offset

A text is a varint length and its UTF-8 bytes. Item lists of decimal ids (movielens) are three varint counts
and one string "a,b,c;d,e;f" packed as 4-bit nibbles (digits 0-9, ',' 10, ';' 11, pad 15), 2.8 bytes an id
instead of 7 in JSON; other ids take a JSON array of the three lists. uuid4 hex event ids take 16 bytes
instead of 35. Every field round-trips exactly. ``streamrec bench state`` measures the bytes per user.

States written by earlier workers (format 1: a JSON object, the vector as base64 float32; format 2: no intent)
are still read, so an upgrade keeps every user's vector, history and input offsets; the next event stores
them in format 3.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from stream.errors import StateError

STATE_FORMAT = 3
READ_FORMATS = (2, 3)  # format 2 is format 3 without the intent part
INTENT_KEY_BYTES = 8
SEEN_EVENT_IDS = 16  # recent event ids kept to skip records a producer sent twice
_TYPES = ("click", "search", "purchase")  # the event type codes of ``recent``
_TYPE_CODE = {name: code for code, name in enumerate(_TYPES)}
_NIBBLES, _JSON, _HEX = 0, 1, 2  # encodings of a part (module docstring)
_F64 = struct.Struct("<d")
_DIGITS_OR_SEPARATORS = b"0123456789,;"
# Nibbles go through hex text, so packing is bytes.fromhex and unpacking bytes.hex: "," <-> "a", ";" <-> "b",
# and "f" pads an odd count.
_TO_HEX = str.maketrans(",;", "ab")
_FROM_HEX = str.maketrans("ab", ",;", "f")


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
    # The last search while its query still shapes the lists: a compact hash of the query (the worker keeps
    # the query and its vector by that hash), the item events since, and when it was made (empty: none).
    intent: bytes = b""
    intent_events: int = 0
    intent_ts: float = 0.0

    def searched(self, key: bytes, ts: float) -> None:
        """A search whose query shapes the next lists: ``key`` is its hash (INTENT_KEY_BYTES)."""
        self.intent, self.intent_events, self.intent_ts = key, 0, ts

    def forget_intent(self) -> None:
        """The last search no longer shapes the lists."""
        self.intent, self.intent_events, self.intent_ts = b"", 0, 0.0

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
            if self.intent:
                self.intent_events += 1
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
        """The compact binary form described in the module docstring."""
        out = bytearray((STATE_FORMAT,))
        _put_uint(out, self.events)
        out += _F64.pack(self.last_ts)
        _put_bytes(out, self.model_version.encode())
        vector = self.vector.astype("<f4", copy=False)
        _put_uint(out, len(vector))
        out += vector.tobytes()
        types, items = zip(*self.recent, strict=True) if self.recent else ((), ())
        _put_uint(out, len(types))
        try:
            out += bytes(map(_TYPE_CODE.__getitem__, types))
        except KeyError:
            out.append(0xFF)
            _put_bytes(out, orjson.dumps(types))
        _put_item_lists(out, [list(items), self.purchased, self.last_list])
        _put_event_ids(out, self.seen_event_ids)
        out.append(len(self.intent))
        if self.intent:
            out += self.intent
            _put_uint(out, self.intent_events)
            out += _F64.pack(self.intent_ts)
        out += orjson.dumps(self.offsets)
        return bytes(out)

    @staticmethod
    def from_bytes(raw: bytes) -> UserState:
        """Inverse of :meth:`to_bytes`; raises StateError on a foreign or corrupt record."""
        try:
            if raw[:1] == b"{":
                return _from_format_1(raw)
            if not raw or raw[0] not in READ_FORMATS:
                raise ValueError(f"format {raw[:1]!r} is not one of {READ_FORMATS}")
            r = _Reader(raw, 1)
            events = r.uint()
            (last_ts,) = _F64.unpack(r.take(8))
            version = r.take(r.uint()).decode()
            vector = np.frombuffer(r.take(4 * r.uint()), dtype="<f4").astype(np.float32)
            n = r.uint()
            codes = r.take(n)
            types = (_strings(orjson.loads(r.take(r.uint()))) if n and codes[0] == 0xFF
                     else list(map(_TYPES.__getitem__, codes)))
            items, purchased, last_list = r.item_lists()
            seen = r.event_ids()
            intent, intent_events, intent_ts = b"", 0, 0.0
            if raw[0] == 3:
                intent = r.take(r.take(1)[0])
                if intent:
                    intent_events = r.uint()
                    (intent_ts,) = _F64.unpack(r.take(8))
            offsets = orjson.loads(raw[r.pos:])
            if len(types) != len(items) or not isinstance(offsets, dict):
                raise ValueError("recent types and items disagree, or offsets are not an object")
            return UserState(vector=vector, model_version=version, recent=list(zip(types, items, strict=True)),
                             purchased=purchased, seen_event_ids=seen, last_list=last_list,
                             offsets={str(k): int(v) for k, v in offsets.items()}, events=events, last_ts=last_ts,
                             intent=intent, intent_events=intent_events, intent_ts=intent_ts)
        except (IndexError, KeyError, ValueError, TypeError, UnicodeDecodeError, struct.error,
                binascii.Error) as exc:
            raise StateError(f"corrupt user state: {exc!r}") from None


def _from_format_1(raw: bytes) -> UserState:
    """A state stored by a worker before format 2 (orjson; JSONDecodeError is a ValueError)."""
    body = orjson.loads(raw)
    if body["f"] != 1:
        raise ValueError(f"user state format {body['f']!r} is not 1 or {STATE_FORMAT}")
    return UserState(
        vector=np.frombuffer(base64.b64decode(body["v"]), dtype=np.float32).copy(),
        model_version=body["m"], recent=[(t, i) for t, i in body["r"]], purchased=list(body["p"]),
        seen_event_ids=list(body["s"]), last_list=list(body.get("l", [])),
        offsets={str(k): int(v) for k, v in body.get("o", {}).items()}, events=int(body["n"]), last_ts=float(body["t"]))


def _put_uint(out: bytearray, value: int) -> None:
    """LEB128: seven bits a byte, low bits first, the high bit set on every byte but the last."""
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_bytes(out: bytearray, data: bytes) -> None:
    _put_uint(out, len(data))
    out += data


def _put_item_lists(out: bytearray, lists: list[list[str]]) -> None:
    """Decimal ids as one nibble-packed "a,b;c" string, anything else as a JSON array of the lists."""
    text = ";".join(",".join(ids) for ids in lists)
    separators = sum(max(len(ids) - 1, 0) for ids in lists)  # no id may hold a "," or ";" of its own
    if (text.isascii() and not text.encode().translate(None, _DIGITS_OR_SEPARATORS)
            and text.count(",") == separators and text.count(";") == len(lists) - 1):
        out.append(_NIBBLES)
        for ids in lists:
            _put_uint(out, len(ids))
        hex_text = text.translate(_TO_HEX)
        _put_bytes(out, bytes.fromhex(hex_text + "f" if len(hex_text) % 2 else hex_text))
    else:
        out.append(_JSON)
        _put_bytes(out, orjson.dumps(lists))


def _put_event_ids(out: bytearray, ids: list[str]) -> None:
    """Same-length lowercase hex ids (uuid4 hex) as raw bytes, anything else as JSON."""
    _put_uint(out, len(ids))
    joined = "".join(ids)
    length = len(ids[0]) if ids else 0
    if length and len(joined) == length * len(ids):
        try:
            data = bytes.fromhex(joined)
        except ValueError:
            data = b""
        if data.hex() == joined:
            out.append(_HEX)
            _put_uint(out, length)
            out += data
            return
    out.append(_JSON)
    _put_bytes(out, orjson.dumps(ids))


def _strings(values: object) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a list of strings")
    return values


class _Reader:
    """Reads the parts of one state record in order."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def uint(self) -> int:
        data, pos = self.data, self.pos
        byte = data[pos]
        value, shift = byte & 0x7F, 7
        while byte & 0x80:
            pos += 1
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            shift += 7
        self.pos = pos + 1
        return value

    def take(self, n: int) -> bytes:
        start, self.pos = self.pos, self.pos + n
        if self.pos > len(self.data):
            raise ValueError("a part runs past the end")
        return self.data[start:self.pos]

    def item_lists(self) -> list[list[str]]:
        mode = self.take(1)[0]
        if mode == _JSON:
            lists = orjson.loads(self.take(self.uint()))
            if not isinstance(lists, list) or len(lists) != 3:
                raise ValueError("expected three item lists")
            return [_strings(ids) for ids in lists]
        if mode != _NIBBLES:
            raise ValueError(f"unknown item list mode {mode}")
        counts = [self.uint() for _ in range(3)]
        parts = self.take(self.uint()).hex().translate(_FROM_HEX).split(";")
        if len(parts) != 3:
            raise ValueError("expected three item lists")
        lists = [part.split(",") if n else [] for part, n in zip(parts, counts, strict=True)]
        if [len(ids) for ids in lists] != counts:
            raise ValueError("item list counts disagree")
        return lists

    def event_ids(self) -> list[str]:
        n = self.uint()
        mode = self.take(1)[0]
        if mode == _JSON:
            ids = _strings(orjson.loads(self.take(self.uint())))
        elif mode == _HEX:
            length = self.uint()
            text = self.take(n * length // 2).hex()
            ids = [text[i:i + length] for i in range(0, n * length, length)]
        else:
            raise ValueError(f"unknown event id mode {mode}")
        if len(ids) != n:
            raise ValueError("event id count disagrees")
        return ids


class DecodedStates:
    """The decoded states of the most recently active users, each kept with the exact bytes object it was
    stored as: a table value that is still that object needs no decoding (17-35 us an event). A restore or
    another writer puts another object in the table, and that one is decoded afresh."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: dict[str, tuple[bytes, UserState]] = {}  # dict order: least recently used first

    def take(self, user_id: str, stored: bytes | None) -> UserState | None:
        """The user's decoded state if ``stored`` is the very object it was kept with. The entry leaves the
        cache either way, so a failure half-way through an event can never leave a mutated state behind."""
        entry = self._entries.pop(user_id, None)
        if entry is None or stored is None or entry[0] is not stored:
            return None
        return entry[1]

    def peek(self, user_id: str, stored: bytes | None) -> UserState | None:
        """Like :meth:`take`, but the entry stays: for a reader that never mutates the state (a request)."""
        entry = self._entries.get(user_id)
        if entry is None or stored is None or entry[0] is not stored:
            return None
        return entry[1]

    def put(self, user_id: str, stored: bytes, state: UserState) -> None:
        """Keep ``state`` as the decoded form of ``stored``; the least recently used user goes past capacity."""
        self._entries[user_id] = (stored, state)
        if len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]

    def forget(self, user_id: str) -> None:
        """Drop the user's entry (an erasure)."""
        self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)
