"""The live neighbour lists a served model votes with (published by the co-views agent, see cooccurrence.py),
kept in the model's scoring rows, and the votes they cast for a user's next list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from encoders.models.live_neighbours import VOTE_DECAY
from encoders.models.ranker import Extra
from encoders.models.session_head import NEIGHBOUR_HISTORY
from stream.core.cooccurrence import CoView

_DECAY = [VOTE_DECAY ** rank for rank in range(NEIGHBOUR_HISTORY)]


@dataclass(frozen=True)
class LiveList:
    """One item's successors: scoring rows, normalised weights, and the row's raw mass at event time ``ts``."""

    rows: np.ndarray
    weights: np.ndarray
    mass: float
    ts: float


class LiveLists:
    """Every applied list, by item id, and the votes of a user's recent items.

    A list answering an event counts the event's own co-views too (``pending``): the co-views agent has not
    counted them yet, but the offline streaming evaluation, which the votes follow, scores the next target after
    them."""

    def __init__(self, weight: float, new_item_offset: float, first_live_row: int, half_life_s: float) -> None:
        self.weight = weight  # one vote's worth (the fitted weight times the mix's kNN weight)
        self.new_item_offset = new_item_offset
        self.first_live_row = first_live_row
        self.half_life_s = half_life_s
        self.lists: dict[str, LiveList] = {}

    def __len__(self) -> int:
        return len(self.lists)

    def votes(self, recent: list[tuple[str, str]], pending: Sequence[CoView],
              row_of: Callable[[str], int]) -> Extra | None:
        """The votes after a user's item events (oldest first), as the offline evaluation casts them: each of
        the last 10 events votes ``0.8 ** rank`` times each successor's normalised weight, times ``weight``;
        the items first seen in the stream get ``new_item_offset``. (rows, votes), a row possibly repeated
        (its votes add up); None: no votes."""
        if not (self.weight or self.new_item_offset) or not (self.lists or pending):
            return None
        new: dict[str, list[CoView]] = {}
        for view in pending:
            new.setdefault(view.source, []).append(view)
        rows: list[np.ndarray] = []
        votes: list[np.ndarray] = []
        for rank, (_, item) in enumerate(reversed(recent[-NEIGHBOUR_HISTORY:])):
            found = self.lists.get(item)
            views = new.get(item)
            vote = self.weight * _DECAY[rank]
            if views is None:
                if found is not None:
                    rows.append(found.rows)
                    votes.append(found.weights * vote)
                continue
            # The source's list with the transitions it has not counted: its weights back to their mass (decayed
            # to now) plus the new ones, normalised again; repeated rows are summed with the rest below.
            added = np.fromiter((v.weight for v in views), dtype=np.float64, count=len(views))
            mass = found.mass * 0.5 ** (max(views[-1].ts - found.ts, 0.0) / self.half_life_s) if found else 0.0
            total = mass + float(added.sum())
            if found is not None:
                rows.append(found.rows)
                votes.append(found.weights * (vote * mass / total))
            rows.append(np.fromiter((row_of(v.item) for v in views), dtype=np.int64, count=len(views)))
            votes.append(added * (vote / total))
        if not rows:
            return None
        # A row may come more than once: the session head sums repeated rows with its own (ranker.first_stage),
        # so they are not merged here. The new-item offset goes once to each item first seen in the stream.
        all_rows, all_votes = np.concatenate(rows), np.concatenate(votes)
        if self.new_item_offset:
            fresh = np.unique(all_rows[all_rows >= self.first_live_row])
            if fresh.size:
                all_rows = np.concatenate([all_rows, fresh])
                all_votes = np.concatenate([all_votes, np.full(fresh.size, self.new_item_offset)])
        return all_rows, all_votes
