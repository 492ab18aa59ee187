"""The user-state table as the data path sees it: a plain mapping over the Faust table's store, whose changelog
records the agent sends itself, straight to the producer.

A Faust ``Table`` sends each write's changelog record through ``Topic.send_soon``: a future message, a buffer
and a background task per record before it reaches the producer. Here a write goes to the table's store (as
``Table.__setitem__`` does after its changelog send) and is queued; the agent then sends the queued records with
``ProducerT.send``, as it sends the lists, keyed and partitioned exactly as Faust would (the key's UTF-8 bytes,
the input record's partition), so a restore or a standby replica reads them as its own. At-least-once holds as
before: the agent enqueues the records before it takes the next event, and Faust flushes the producer before
it commits an offset. A RocksDB store is told each record's changelog offset once the broker acks it (what
Faust's own callback does), so a restart replays only the changelog's tail.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.types import TP


class StateTable(MutableMapping[str, bytes]):
    """Reads and writes the Faust table's store; ``flush`` sends the changelog records of the writes since."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()
        self.pending: list[tuple[str, bytes | None]] = []  # (key, value or None for a tombstone), in order

    @property
    def store(self) -> MutableMapping[str, bytes]:
        """The table's store (memory or RocksDB), made by Faust on first use."""
        store: MutableMapping[str, bytes] = self.table.data
        return store

    def __getitem__(self, key: str) -> bytes:
        return self.store[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The stored bytes, or ``default``."""
        return self.store.get(key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.store[key] = value
        self.pending.append((key, value))

    def __delitem__(self, key: str) -> None:
        del self.store[key]
        self.pending.append((key, None))

    def __contains__(self, key: object) -> bool:
        return key in self.store

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    async def flush(self, producer: Any, partition: int) -> None:
        """Send the queued changelog records to the input record's partition (enqueued, not awaited)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for key, value in pending:
            ack = await producer.send(self.changelog, key.encode(), value, partition, None, None)
            ack.add_done_callback(self._persisted)

    def _persisted(self, ack: Any) -> None:
        if ack.cancelled() or ack.exception() is not None:
            return  # the producer logs it; Faust's commit flush fails the same way
        metadata = ack.result()
        self.store.set_persisted_offset(TP(metadata.topic, metadata.partition), metadata.offset)  # type: ignore[attr-defined]
