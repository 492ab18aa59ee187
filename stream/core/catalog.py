"""The live item catalog: what the ``items`` topic says about each item (title, category, price,
availability), as every worker holds it.

The topic is compacted and keyed by item id, and every worker reads all of it (stream/kafka/follow.py), so every
worker holds the whole catalog and the whole index. Each change gets a sequence number: a model swap built
in the background replays the changes made while it was building (stream/core/indexed_model.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from stream.core.schemas import ItemRecord


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One item as the catalog last described it."""

    item_id: str
    title: str | None
    category: str | None
    price: float | None
    available: bool

    @property
    def text(self) -> str | None:
        """The text an item tower encodes: title and category, in the form of the training texts
        (stream.tools.datasets.item_texts: "title. genre, genre")."""
        if self.title is None:
            return None
        return f"{self.title}. {self.category}" if self.category else self.title


class Catalog:
    """Items by id, with the sequence number of each item's last change (deletes included)."""

    def __init__(self) -> None:
        self._items: dict[str, CatalogItem] = {}
        self._changed: dict[str, int] = {}
        self._by_category: dict[str, set[str]] = {}  # category -> its items (request-time category filters)
        self.seq = 0

    def apply(self, record: ItemRecord) -> bool:
        """Apply an upsert or delete; returns whether the item's text changed (its vector must follow)."""
        before = self._items.get(record.item_id)
        self.seq += 1
        self._changed[record.item_id] = self.seq
        if before is not None and before.category is not None:
            members = self._by_category[before.category]
            members.discard(record.item_id)
            if not members:
                del self._by_category[before.category]
        if record.deleted:
            self._items.pop(record.item_id, None)
            return before is not None
        after = CatalogItem(record.item_id, record.title, record.category, record.price, record.available)
        self._items[record.item_id] = after
        if after.category is not None:
            self._by_category.setdefault(after.category, set()).add(record.item_id)
        return before is None or before.text != after.text

    def get(self, item_id: str) -> CatalogItem | None:
        """The item, or None when the catalog never described it (or deleted it)."""
        return self._items.get(item_id)

    def categories(self) -> Collection[str]:
        """The categories of the catalog's items (a live view)."""
        return self._by_category.keys()

    def in_category(self, category: str) -> set[str]:
        """The ids of the items of a category (empty for an unknown one)."""
        return self._by_category.get(category, set())

    def was_deleted(self, item_id: str) -> bool:
        """Whether the catalog deleted this item (a model may still know it, but it must not be served)."""
        return item_id in self._changed and item_id not in self._items

    def changed_since(self, seq: int) -> list[str]:
        """Ids of the items changed after sequence number ``seq``."""
        return [item for item, at in self._changed.items() if at > seq]

    def copy(self) -> Catalog:
        """An independent copy (a background model build reads it while the live catalog changes)."""
        other = Catalog()
        other._items, other._changed, other.seq = dict(self._items), dict(self._changed), self.seq
        other._by_category = {category: set(members) for category, members in self._by_category.items()}
        return other

    def items(self) -> list[CatalogItem]:
        """Every item currently in the catalog."""
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
