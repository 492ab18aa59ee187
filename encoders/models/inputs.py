"""Model inputs shared by every user encoder: event types and their ids, and the hashed tokens of a search query."""

from __future__ import annotations

import re
import zlib
from typing import Literal

EventType = Literal["click", "search", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = ("click", "search", "purchase")

# Event-type ids fed to the models; 0 pads sequences.
TYPE_IDS = {"click": 1, "search": 2, "purchase": 3}
SEARCH_TYPE = TYPE_IDS["search"]  # searches carry no item
PURCHASE_TYPE = TYPE_IDS["purchase"]
_TOKEN = re.compile(r"[a-z0-9]+")


def has_words(query: str) -> bool:
    """Whether a query holds any letter or digit (in any script); one of emoji, symbols or spaces only
    claims no text match."""
    return any(ch.isalnum() for ch in query)


def query_tokens(text: str, buckets: int, max_tokens: int) -> list[int]:
    """Hash a free-text query into at most ``max_tokens`` bucket ids in 1..buckets-1 (0 pads).

    crc32 rather than hash() so ids are stable across processes (PYTHONHASHSEED).
    """
    words = _TOKEN.findall(text.lower())[:max_tokens]
    tokens = [zlib.crc32(w.encode()) % (buckets - 1) + 1 for w in words]
    return tokens + [0] * (max_tokens - len(tokens))
