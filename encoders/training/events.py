"""One event of a dataset, as training and evaluation read it (stream/tools/datasets.py makes them)."""

from __future__ import annotations

from dataclasses import dataclass

from encoders.models.inputs import EventType


@dataclass(frozen=True, slots=True)
class DatasetEvent:
    """One event of a dataset, before it gets an event id and goes on the wire."""

    type: EventType
    user_id: str
    ts: float
    item_id: str | None = None
    query: str | None = None
    quantity: int | None = None
    price: float | None = None
    target: str | None = None  # the item a search was for, where the dataset names it (movielens: the tagged movie)
