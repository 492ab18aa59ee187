"""Trending items: time-decayed popularity counted from the stream itself, for cold-start users.

Each worker counts the clicks and purchases of the partitions it owns. Partitions are keyed by user, so a
worker sees a uniform sample of all users and its counts estimate the global popularity. Counts decay with
a half-life in *event* time (a replayed day decays like a live one). Each partition's counter is kept in a
changelog-backed table under the key ``p<partition>`` and written at most once per second, so a restarted
or rebalanced worker resumes it; at most the last second of counts is lost in a crash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, MutableMapping

import orjson

EVENT_WEIGHTS = {"click": 1.0, "purchase": 2.0}  # a purchase says more than a view
FLUSH_INTERVAL_S = 1.0  # how often a partition's counter is written to the table
CACHE_S = 1.0  # how long a computed top list is reused
REBASE = 30.0  # rebase a partition's counts when exp(rate * (ts - reference)) would pass e^30


class Trending:
    """Decayed item counts per partition, and the merged top list."""

    def __init__(self, half_life_s: float, capacity: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = math.log(2) / half_life_s
        self.capacity = capacity  # items kept per partition; the tail is pruned
        self._counts: dict[int, dict[str, float]] = {}  # partition -> item -> count at the partition's time
        self._time: dict[int, float] = {}  # partition -> reference event time of the counts
        self._flushed: dict[int, float] = {}
        self._top: list[tuple[str, float]] = []
        self._top_at = -math.inf
        self._clock = clock

    def observe(self, partition: int, item_id: str, event_type: str, ts: float,
                table: MutableMapping[str, bytes] | None = None) -> None:
        """Count one click or purchase; load the partition's counter from ``table`` first, and write it back
        when a flush is due."""
        weight = EVENT_WEIGHTS.get(event_type)
        if weight is None:
            return
        if partition not in self._counts:
            self._restore(partition, table.get(_key(partition)) if table is not None else None)
        # Counts are kept in units of the partition's reference time: adding exp(rate * (ts - ref)) is O(1)
        # per event, and only a rebase (rarely: once the exponent passes REBASE) touches every count.
        counts, ref = self._counts[partition], self._time[partition]
        exponent = self.rate * (ts - ref)
        if exponent > REBASE:
            factor = math.exp(-exponent)
            for item in counts:
                counts[item] *= factor
            self._time[partition], exponent = ts, 0.0
        counts[item_id] = counts.get(item_id, 0.0) + weight * math.exp(max(exponent, -700.0))
        if len(counts) > 2 * self.capacity:
            keep = sorted(counts.items(), key=lambda kv: -kv[1])[: self.capacity]
            self._counts[partition] = dict(keep)
        if table is not None:
            wall = self._clock()
            if wall - self._flushed.get(partition, -math.inf) >= FLUSH_INTERVAL_S:
                table[_key(partition)] = self.snapshot(partition)
                self._flushed[partition] = wall

    def top(self, n: int) -> list[tuple[str, float]]:
        """The n most popular items now, over every partition this worker counted (cached for a second)."""
        wall = self._clock()
        if wall - self._top_at >= CACHE_S or len(self._top) < n:
            latest = max(self._time.values(), default=0.0)
            merged: dict[str, float] = {}
            for partition, counts in self._counts.items():
                factor = math.exp(-self.rate * (latest - self._time[partition]))
                for item, count in counts.items():
                    merged[item] = merged.get(item, 0.0) + count * factor
            self._top = sorted(merged.items(), key=lambda kv: -kv[1])[: max(n, 100)]
            self._top_at = wall
        return self._top[:n]

    def snapshot(self, partition: int) -> bytes:
        """The partition's counter as bytes for the table."""
        return orjson.dumps({"t": self._time.get(partition, 0.0), "c": self._counts.get(partition, {})})

    def _restore(self, partition: int, raw: bytes | None) -> None:
        counts: dict[str, float] = {}
        at = 0.0
        if raw is not None:
            try:
                body = orjson.loads(raw)
                at = float(body["t"])
                counts = {str(k): float(v) for k, v in body["c"].items()}
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                counts, at = {}, 0.0  # a corrupt counter restarts from zero; trending recovers in minutes
        self._counts[partition], self._time[partition] = counts, at


def _key(partition: int) -> str:
    return f"p{partition}"
