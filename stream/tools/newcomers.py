"""Items a model was not trained on, timed from their first event to their first list for another user: how
fast the worker learns them from the stream (``make demo`` and ``streamrec bench learning`` print it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from stream.core.schemas import Event, Recommendation


class Newcomers:
    """Feed it the events as they are sent and the lists as they are read."""

    def __init__(self, known: set[str]) -> None:
        self.known = known  # the model's items
        self.first_sent: dict[str, float] = {}
        self.actors: dict[str, set[str]] = defaultdict(set)  # item -> users who had an event on it
        self.seconds: dict[str, float] = {}  # item -> first event to first list of another user
        self.listed_before = set[str]()  # listed before any event named it (say, by its catalog text): not learned

    def sent(self, event: Event, at: float) -> None:
        """An event sent at wall-clock time ``at``."""
        item = event.item_id
        if item is not None and item not in self.known:
            self.first_sent.setdefault(item, at)
            self.actors[item].add(event.user_id)

    def listed(self, rec: Recommendation) -> None:
        """A list read back."""
        for entry in rec.items:
            item = entry.item_id
            if item in self.known or item in self.seconds or item in self.listed_before:
                continue
            if item not in self.first_sent:
                self.listed_before.add(item)
            elif rec.user_id not in self.actors[item]:
                self.seconds[item] = rec.generated_at - self.first_sent[item]

    def first(self) -> tuple[str, float] | None:
        """The newcomer listed soonest after its first event (None: none was)."""
        return min(self.seconds.items(), key=lambda pair: pair[1]) if self.seconds else None

    def summary(self) -> dict[str, Any]:
        """Newcomers seen and listed, and the seconds to their first list."""
        seconds = np.array(list(self.seconds.values()) or [np.nan])
        return {"new_items_seen": len(self.first_sent), "new_items_listed": len(self.seconds),
                "seconds_to_first_list_p50": round(float(np.nanpercentile(seconds, 50)), 2),
                "seconds_to_first_list_p90": round(float(np.nanpercentile(seconds, 90)), 2),
                "seconds_to_first_list_max": round(float(np.nanmax(seconds)), 2)}
