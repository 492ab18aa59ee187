"""The user-state table's direct changelog writes (stream/kafka/state_table.py): each write lands in the store at once
and, at ``flush``, goes to the producer as the changelog record Faust would write (key bytes, value, the input
record's partition), tombstones included, in order; acked offsets reach the store. The seams faked are Faust's
table (a store and its changelog topic's name) and the producer; a real worker restoring from these records is
tests/integration/test_worker.py's restart test."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from stream.kafka.state_table import StateTable


class _Store(dict[str, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[TP, int] = {}

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


class _Topic:
    def get_topic_name(self) -> str:
        return "app-user-state-changelog"


class _Table:
    def __init__(self) -> None:
        self.data = _Store()
        self.changelog_topic = _Topic()


@dataclass
class _Metadata:
    topic: str
    partition: int
    offset: int


class _Producer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.fail = fail

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: Any) -> asyncio.Future[_Metadata]:
        self.sent.append((topic, key, value, partition))
        ack: asyncio.Future[_Metadata] = asyncio.get_running_loop().create_future()
        if self.fail:
            ack.set_exception(RuntimeError("broker gone"))
        else:
            ack.set_result(_Metadata(topic, partition or 0, 100 + len(self.sent)))
        return ack


def test_writes_reach_the_store_at_once_and_the_changelog_at_flush_in_order() -> None:
    table = _Table()
    states = StateTable(table)
    producer = _Producer()
    states["u1"] = b"one"
    states["u2"] = b"two"
    assert states.get("u1") == b"one" and states["u2"] == b"two" and len(states) == 2 and "u1" in states
    assert producer.sent == []  # nothing sent before the agent flushes
    del states["u1"]
    assert states.get("u1") is None and "u1" not in table.data

    async def flush() -> None:
        await states.flush(producer, 3)
        await asyncio.sleep(0)  # the ack callbacks run

    asyncio.run(flush())
    name = "app-user-state-changelog"
    assert producer.sent == [(name, b"u1", b"one", 3), (name, b"u2", b"two", 3), (name, b"u1", None, 3)]
    assert table.data.persisted == {TP(name, 3): 103}  # the last acked offset of the partition
    asyncio.run(flush())
    assert len(producer.sent) == 3, "a flush sends each record once"


def test_a_failed_send_leaves_the_persisted_offset_alone() -> None:
    table = _Table()
    states = StateTable(table)
    states["u1"] = b"one"

    async def flush() -> None:
        await states.flush(_Producer(fail=True), 0)
        await asyncio.sleep(0)

    asyncio.run(flush())
    assert table.data.persisted == {}
    assert states["u1"] == b"one"
