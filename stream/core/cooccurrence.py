"""Live item co-occurrence on the stream: the records it moves and the table rows it keeps, without Kafka.

Three steps, each on its own partitioning:

1. Per applied item event the data path (pipeline.py) emits the user's recent transitions into the item as
   ``co-views`` records, keyed by the source item: a re-keying, since the user state is partitioned by user
   and the counts by item. At most ``history`` of them per event.
2. The co-views agent keeps, per source item, its successors in a changelog-backed table
   (:class:`CoOccurrence`): time-decayed in event time, at most ``neighbours`` of them (space-saving: see
   encoders/models/live_neighbours.py, the one implementation offline and online). A row remembers the
   offset of the last record it applied, so a record redelivered after a crash is not counted twice: every
   record of an item lands in the same partition, in order.
3. When an item's top successors change (their order, or a share by a point), the agent publishes the whole
   row, normalised, to the compacted ``item-neighbours`` topic, at most once per ``publish_interval_s`` per
   item. Every worker follows that topic whole and votes with it (live_lists.py).
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

import orjson

from encoders.models.inputs import TYPE_IDS
from encoders.models.live_neighbours import LiveConfig, Successors, transitions
from stream.core.schemas import SCHEMA_VERSION, _identifier, _object
from stream.errors import InvalidEvent

PUBLISH_TOP = 10  # a list is republished when this many top successors change (order, or shares by a point)
_HEADER = struct.Struct("<dqdIH")  # ts, offset of the last record applied, published at, top hash, successors
_LENGTH = struct.Struct("<H")


@dataclass(frozen=True)
class CoView:
    """One transition of a user from ``source`` into ``item`` at event time ``ts``, with its weight."""

    source: str
    item: str
    weight: float
    ts: float

    def key(self) -> bytes:
        """The record key: the source item, so one item's transitions meet in one partition."""
        return self.source.encode()

    def to_json(self) -> bytes:
        """The ``co-views`` record value."""
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "source": self.source, "item": self.item,
                             "weight": self.weight, "ts": self.ts})


def co_views(recent: list[tuple[str, str]], item: str, event_type: str, ts: float,
             config: LiveConfig) -> list[CoView]:
    """The co-views of one item event, given the user's item events before it (oldest first)."""
    earlier = [source for _, source in recent[-config.history * 4:]]  # enough for ``history`` distinct ones
    return [CoView(source, item, weight, ts)
            for source, weight in transitions(earlier, item, TYPE_IDS[event_type], config)]


def decode_co_view(raw: bytes | None, key: bytes | None, *, max_bytes: int) -> CoView:
    """Parse and check a ``co-views`` record (its key must be its source item)."""
    body = _object(raw, max_bytes)
    source, item = _identifier(body, "source", required=True), _identifier(body, "item", required=True)
    weight, ts = body.get("weight"), body.get("ts")
    for name, value in (("weight", weight), ("ts", ts)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value <= 0:
            raise InvalidEvent("invalid_value", f"{name} must be a positive finite number")
    assert source is not None and item is not None and isinstance(weight, (int, float)) \
        and isinstance(ts, (int, float))
    if source == item:
        raise InvalidEvent("invalid_value", "source and item must differ")
    if key is None or key != source.encode():
        raise InvalidEvent("key_mismatch", "the record key must be the source item")
    return CoView(source, item, float(weight), float(ts))


@dataclass
class Row:
    """One item's row of the live table: its successors, the last record applied, what was last published."""

    successors: Successors
    offset: int = -1  # of the last co-views record applied (records of one item share a partition)
    published_at: float = -math.inf  # wall clock of the last publication
    published_top: int = 0  # hash of the top successors' order then

    def to_bytes(self) -> bytes:
        """Header, float64 weights, then each successor id as uint16 length + UTF-8."""
        s = self.successors
        out = bytearray(_HEADER.pack(s.ts, self.offset, self.published_at, self.published_top, len(s.items)))
        out += struct.pack(f"<{len(s.weights)}d", *s.weights)
        for item in s.items:
            data = str(item).encode()
            out += _LENGTH.pack(len(data)) + data
        return bytes(out)

    @staticmethod
    def from_bytes(raw: bytes | None) -> Row:
        """A stored row (a fresh one for None)."""
        if raw is None:
            return Row(Successors())
        ts, offset, published_at, top, n = _HEADER.unpack_from(raw)
        pos = _HEADER.size
        weights = list(struct.unpack_from(f"<{n}d", raw, pos))
        pos += 8 * n
        items = []
        for _ in range(n):
            (length,) = _LENGTH.unpack_from(raw, pos)
            pos += _LENGTH.size
            items.append(raw[pos:pos + length].decode())
            pos += length
        return Row(Successors(items, weights, ts), offset, published_at, top)

    def top_hash(self) -> int:
        """A hash of the top successors and their normalised weights to two decimals: a change of it (one
        moved up or down, a share moved by a point or more) is a change that moves lists."""
        s = self.successors
        total = max(sum(s.weights), 1e-300)
        order = sorted(range(len(s.items)), key=lambda n: -s.weights[n])[:PUBLISH_TOP]
        return zlib.crc32("\n".join(f"{s.items[n]} {round(100 * s.weights[n] / total)}" for n in order).encode())


@dataclass(frozen=True)
class NeighbourList:
    """An item's live successors as published to ``item-neighbours``: normalised weights, heaviest first."""

    item_id: str
    neighbours: tuple[tuple[str, float], ...]
    ts: float  # event time of the newest transition counted
    published_at: float  # wall clock
    mass: float = 1.0  # the row's raw weight at ``ts``: what a worker adds an event's own co-views to

    @staticmethod
    def of(item_id: str, row: Row, now: float) -> NeighbourList:
        """The list a row publishes."""
        s = row.successors
        total = max(sum(s.weights), 1e-300)
        pairs = sorted(zip(s.items, s.weights, strict=True), key=lambda p: -p[1])
        return NeighbourList(item_id, tuple((str(item), weight / total) for item, weight in pairs), s.ts, now,
                             total)

    def to_json(self) -> bytes:
        """The ``item-neighbours`` record value (the key is the item id)."""
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "item_id": self.item_id,
                             "neighbours": [list(pair) for pair in self.neighbours], "ts": self.ts,
                             "published_at": self.published_at, "mass": self.mass})


def decode_neighbour_list(raw: bytes | None, *, max_bytes: int) -> NeighbourList:
    """Parse and check an ``item-neighbours`` record."""
    body = _object(raw, max_bytes)
    item_id = _identifier(body, "item_id", required=True)
    assert item_id is not None
    raw_pairs, ts, published_at, mass = (body.get("neighbours"), body.get("ts"), body.get("published_at"),
                                         body.get("mass"))
    if not isinstance(raw_pairs, list) or not raw_pairs:
        raise InvalidEvent("wrong_type", "neighbours must be a non-empty list of [item_id, weight]")
    pairs = []
    for pair in raw_pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise InvalidEvent("wrong_type", "each neighbour must be [item_id, weight]")
        other = _identifier({"item_id": pair[0]}, "item_id", required=True)
        weight = pair[1]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise InvalidEvent("invalid_value", "a neighbour's weight must be a number in [0, 1]")
        assert other is not None
        pairs.append((other, float(weight)))
    for name, value in (("ts", ts), ("published_at", published_at), ("mass", mass)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidEvent("wrong_type", f"{name} must be a number")
    assert isinstance(ts, (int, float)) and isinstance(published_at, (int, float)) and isinstance(mass, (int, float))
    if mass <= 0:
        raise InvalidEvent("invalid_value", "mass must be positive")
    return NeighbourList(item_id, tuple(pairs), float(ts), float(published_at), float(mass))


class CoOccurrence:
    """The co-views agent's work on its table partitions (any MutableMapping[str, bytes] of rows)."""

    def __init__(self, config: LiveConfig, publish_interval_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.publish_interval_s = publish_interval_s
        self.clock = clock
        self.pending: dict[str, int] = {}  # items whose list changed within the interval -> their partition

    def apply(self, view: CoView, partition: int, offset: int,
              table: MutableMapping[str, bytes]) -> tuple[bool, NeighbourList | None]:
        """Count one record: (whether it was counted, the list to publish now). A record applied before (a
        redelivery after a crash) changes nothing."""
        counted, lists = self.apply_batch([(view, partition, offset)], table)
        return counted == 1, lists[0] if lists else None

    def apply_batch(self, records: list[tuple[CoView, int, int]], table: MutableMapping[str, bytes]
                    ) -> tuple[int, list[NeighbourList]]:
        """Count a batch of records (view, partition, offset), in order: each row touched is read, written and
        considered for publication once, so a hot item costs one table write and at most one list per batch.
        Returns how many records were counted (the rest were redeliveries) and the lists to publish now."""
        rows: dict[str, tuple[Row, int]] = {}
        counted = 0
        for view, partition, offset in records:
            found = rows.get(view.source)
            row = found[0] if found is not None else Row.from_bytes(table.get(view.source))
            if offset <= row.offset:
                if found is None:
                    rows[view.source] = (row, -1)  # read once; unchanged unless a later record counts
                continue
            row.successors.add(view.item, view.weight, view.ts, self.config)
            row.offset = offset
            rows[view.source] = (row, partition)
            counted += 1
        lists = []
        for item, (row, partition) in rows.items():
            if partition < 0:
                continue
            published = self._publish(item, row, partition)
            table[item] = row.to_bytes()
            if published is not None:
                lists.append(published)
        return counted, lists

    def due(self, table: MutableMapping[str, bytes], held: Callable[[int], bool]) -> list[tuple[int, NeighbourList]]:
        """The held-back lists whose interval has passed, with their partitions (``held``: whether this worker
        still holds a partition; a revoked one's lists are its new owner's to publish)."""
        now = self.clock()
        out = []
        for item, partition in list(self.pending.items()):
            raw = table.get(item) if held(partition) else None
            if raw is None:
                del self.pending[item]
                continue
            row = Row.from_bytes(raw)
            if now - row.published_at < self.publish_interval_s:
                continue
            del self.pending[item]
            published = self._publish(item, row, partition)
            if published is not None:
                table[item] = row.to_bytes()
                out.append((partition, published))
        return out

    def _publish(self, item: str, row: Row, partition: int) -> NeighbourList | None:
        """The list to publish for a changed row now (recording it in the row), or None: unchanged in its top
        order, or published too recently (then it waits in ``pending``)."""
        top = row.top_hash()
        if top == row.published_top and math.isfinite(row.published_at):
            self.pending.pop(item, None)
            return None
        now = self.clock()
        if now - row.published_at < self.publish_interval_s:
            self.pending[item] = partition
            return None
        row.published_at, row.published_top = now, top
        return NeighbourList.of(item, row, now)
