"""The item tower's text half: MiniLM vectors of item texts and search queries, projected into the model space.

An item's vector is its learned id embedding plus ``proj(text vector of its title)``; a search event's input
is ``proj(text vector of its query)`` through the same projection, so a search moves the user's state toward
items whose titles match. Id embeddings are dropped for a random share of items in each training batch, so
the projection alone must rank well: an item with no interactions (id embedding zero) gets a usable vector
from its text. The item text vectors are computed once per training run and saved in the artifact (a buffer
of the model), so the worker never re-encodes the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn


class TextProjection(nn.Module):
    """Holds the items' text vectors (row 0 and text-less items zero) and the projection into ``dim``."""

    def __init__(self, n_items: int, text_dim: int, dim: int, id_dropout: float) -> None:
        super().__init__()
        self.id_dropout = id_dropout
        self.item_text: Tensor
        self.register_buffer("item_text", torch.zeros(n_items + 1, text_dim))  # (n_items + 1, text_dim)
        self.proj = nn.Linear(text_dim, dim, bias=False)

    def set_item_text(self, vectors: np.ndarray) -> None:
        """Store the items' text vectors (n_items + 1, text_dim), row 0 zero."""
        with torch.no_grad():
            self.item_text.copy_(torch.from_numpy(vectors))

    def item_weight(self, id_weight: Tensor) -> Tensor:
        """Item vectors (n_items + 1, dim) from the id embeddings, dropping some ids in training."""
        if self.training and self.id_dropout > 0:
            keep = torch.rand(id_weight.shape[0], 1) >= self.id_dropout
            id_weight = id_weight * keep
        text: Tensor = self.proj(self.item_text)
        return id_weight + text

    def forward(self, vectors: Tensor) -> Tensor:
        """Project text vectors (..., text_dim) -> (..., dim)."""
        out: Tensor = self.proj(vectors)
        return out


class TextTable:
    """Distinct texts (item titles or search queries) and their MiniLM vectors; row 0 (no text) is zero."""

    def __init__(self, texts: Iterable[str | None], encode: Callable[[Sequence[str]], np.ndarray],
                 dim: int) -> None:
        self.rows: dict[str, int] = {}
        for text in texts:
            if text and text not in self.rows:
                self.rows[text] = len(self.rows) + 1
        vectors = encode(list(self.rows)) if self.rows else np.zeros((0, dim), np.float32)
        self.vectors = np.concatenate([np.zeros((1, dim), np.float32), vectors]).astype(np.float32)

    def index(self, texts: Sequence[str | None]) -> np.ndarray:
        """Rows of the texts (0 for none or unknown)."""
        return np.array([self.rows.get(t, 0) if t else 0 for t in texts], dtype=np.int64)


def item_text_vectors(model: nn.Module) -> np.ndarray | None:
    """The items' MiniLM text vectors (n_items + 1, text_dim; row 0 zero) of a model with an item tower (None
    without one)."""
    text = getattr(model, "text", None)
    if not isinstance(text, TextProjection):
        return None
    vectors: np.ndarray = text.item_text.detach().numpy().astype(np.float32)
    return vectors
