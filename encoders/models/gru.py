"""A recurrent next-item model (GRU or LSTM) over a user's event sequence.

Training runs ``forward`` over whole (B, T) sequences; the worker calls ``step`` once per event with the
user's stored state and ``query`` to get the vector searched in the item index. Scores are inner products
between the query vector and item vectors (inner-product index), plus the optional session head's bonus for
recent and co-occurring items (encoders/models/session_head.py). With ``text_dim`` > 0 the item vectors include the item
tower's projected title vectors and searches add their projected query vector (encoders/models/item_tower.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from encoders.models.inputs import TYPE_IDS
from encoders.models.item_tower import TextProjection
from encoders.models.session_head import SessionHeadConfig, WithSessionHead, build_heads, next_item_loss
from stream.errors import ConfigError


@dataclass(frozen=True)
class RecurrentConfig(WithSessionHead):
    """Hyper-parameters of :class:`RecurrentModel`; saved as JSON inside the artifact."""

    n_items: int  # items in the vocabulary; row 0 of the embedding is padding / unknown item
    cell: str = "gru"  # "gru" or "lstm"
    dim: int = 64  # item embedding and query vector size
    hidden: int = 64  # recurrent state size (an LSTM stores h and c, so 2x this)
    query_buckets: int = 16384  # hashed token vocabulary for search queries
    max_query_tokens: int = 8  # tokens of a query that are used
    dropout: float = 0.1  # on the step inputs, training only
    text_dim: int = 0  # MiniLM vector size of the item tower's text half (0 = id embeddings only)
    id_dropout: float = 0.1  # share of item ids hidden per training batch when text_dim > 0 (cold start)
    # The session head and re-ranker: SessionHeadConfig's defaults, the same for every model (its comments say why)
    head: SessionHeadConfig = field(default_factory=SessionHeadConfig)

    @property
    def state_size(self) -> int:
        """Floats per user in the stored recurrent state."""
        return self.hidden * (2 if self.cell == "lstm" else 1)


class RecurrentModel(nn.Module):
    """Embeds each event (item + type + query tokens), runs a GRU/LSTM, projects to a query vector."""

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__()
        if config.cell not in ("gru", "lstm"):
            raise ConfigError("cell", f"must be 'gru' or 'lstm', got {config.cell!r}")
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.dim, padding_idx=0)
        self.type_emb = nn.Embedding(len(TYPE_IDS) + 1, config.dim, padding_idx=0)
        self.query_emb = nn.EmbeddingBag(config.query_buckets, config.dim, mode="mean", padding_idx=0)
        rnn_cls = nn.GRU if config.cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(config.dim, config.hidden, batch_first=True)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden, config.dim)
        self.repeat, self.ranker = build_heads(config.head, config.dim, config.n_items)
        self.text = TextProjection(config.n_items, config.text_dim, config.dim, config.id_dropout) \
            if config.text_dim else None
        nn.init.normal_(self.item_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def item_weight(self) -> Tensor:
        """Item vectors (n_items + 1, dim): id embeddings, plus the projected title vectors with a text tower."""
        weight: Tensor = self.item_emb.weight
        return self.text.item_weight(weight) if self.text is not None else weight

    def embed(self, items: Tensor, types: Tensor, tokens: Tensor, text: Tensor | None = None,
              item_weight: Tensor | None = None) -> Tensor:
        """Step inputs: items, types (B, T), tokens (B, T, Q), query text vectors (B, T, text_dim) -> (B, T, dim)."""
        b, t, q = tokens.shape
        weight = self.item_weight() if item_weight is None else item_weight
        x = functional.embedding(items, weight) + self.type_emb(types)
        x = x + self.query_emb(tokens.reshape(b * t, q)).reshape(b, t, -1)
        if text is not None and self.text is not None:
            x = x + self.text(text)
        out: Tensor = self.drop(x)
        return out

    def forward(self, items: Tensor, types: Tensor, tokens: Tensor, targets: Tensor | None = None,
                text: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Query vectors after each step (B, T, dim) and, given next-item targets (B, T; 0 = none), the loss.
        ``text`` (B, T, text_dim) holds the MiniLM vectors of search queries (zero elsewhere)."""
        weight = self.item_weight()  # once per batch: the id dropout must be the same for inputs and outputs
        hidden, _ = self.rnn(self.embed(items, types, tokens, text, weight))  # (B, T, H)
        queries = self.out(hidden)  # (B, T, dim)
        if targets is None:
            return queries, None
        return queries, next_item_loss(queries, weight, self.repeat, items, types, targets)

    def history_queries(self, items: Tensor, types: Tensor, tokens: Tensor, ends: list[int],
                        text: Tensor | None = None) -> Tensor:
        """The query after the first ``end`` events of one sequence (T,), for each end: (P, dim)."""
        queries, _ = self(items[None], types[None], tokens[None], text=None if text is None else text[None])
        out: Tensor = queries[0, [e - 1 for e in ends]]
        return out

    def initial_state(self, batch: int = 1) -> Tensor:
        """Zero state, (B, state_size)."""
        return torch.zeros(batch, self.config.state_size)

    def step(self, state: Tensor, items: Tensor, types: Tensor, tokens: Tensor,
             text: Tensor | None = None) -> Tensor:
        """Advance B users by one event: state (B, S), items/types (B,), tokens (B, Q), text (B, text_dim)
        -> new state (B, S)."""
        x = self.embed(items[:, None], types[:, None], tokens[:, None, :],
                       None if text is None else text[:, None])  # (B, 1, dim)
        if self.config.cell == "gru":
            _, h = self.rnn(x, state[None])  # h: (1, B, H)
            new: Tensor = h[0]
            return new
        h0, c0 = state.chunk(2, dim=-1)
        _, (h, c) = self.rnn(x, (h0[None].contiguous(), c0[None].contiguous()))
        return torch.cat([h[0], c[0]], dim=-1)

    def query(self, state: Tensor) -> Tensor:
        """Query vector for the item index from a state (B, S) -> (B, dim)."""
        q: Tensor = self.out(state[:, : self.config.hidden])
        return q

    def item_vectors(self) -> Tensor:
        """Item embeddings in index order, without the padding row: (n_items, dim)."""
        return self.item_weight()[1:]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (np.tanh(0.5 * x) + 1.0)  # overflow-free logistic
    return out


class NumpyRecurrentStep:
    """The serving step of a trained :class:`RecurrentModel` in plain numpy.

    Same arithmetic as ``RecurrentModel.step``/``query`` in eval mode (a test holds them within 1e-5), without
    torch's per-call dispatch, which cost ~1 ms per event here against a few microseconds of math.
    """

    def __init__(self, model: RecurrentModel) -> None:
        c = model.config
        self.cell = c.cell
        self.hidden = c.hidden
        self.state_size = c.state_size

        def array(t: object) -> np.ndarray:
            assert isinstance(t, Tensor)
            return t.detach().cpu().numpy().astype(np.float32).copy()

        self.item_emb = array(model.item_weight())  # (n_items + 1, dim), id + projected text (eval mode)
        self.text_proj = array(model.text.proj.weight).T.copy() if model.text is not None else None  # (384, dim)
        self.type_emb = array(model.type_emb.weight)  # (types + 1, dim)
        self.query_emb = array(model.query_emb.weight)  # (buckets, dim); row 0 is padding
        self.w_ih = array(model.rnn.weight_ih_l0).T.copy()  # (dim, G*H), G = 3 (GRU) or 4 (LSTM)
        self.w_hh = array(model.rnn.weight_hh_l0).T.copy()  # (H, G*H)
        self.b_ih = array(model.rnn.bias_ih_l0)
        self.b_hh = array(model.rnn.bias_hh_l0)
        self.w_out = array(model.out.weight).T.copy()  # (H, dim)
        self.b_out = array(model.out.bias)
        # An event without text has input gates linear in its item and type rows, so they are tabled once
        # ((n_items + 1) x G*H floats, 6.6 MB for MovieLens's GRU) and its step skips the input product.
        self.item_gates = (self.item_emb @ self.w_ih).astype(np.float32)
        self.type_gates = (self.type_emb @ self.w_ih + self.b_ih).astype(np.float32)

    def inputs(self, rows: np.ndarray, types: np.ndarray, tokens: np.ndarray,
               text: np.ndarray | None = None) -> np.ndarray:
        """Step inputs for B events: rows, types (B,), tokens (B, Q), query vectors (B, text_dim) -> (B, dim)."""
        x = self.item_emb[rows] + self.type_emb[types]
        if text is not None and self.text_proj is not None:
            x = x + text @ self.text_proj
        mask = tokens != 0
        counts = mask.sum(axis=1, keepdims=True)
        if counts.any():  # EmbeddingBag(mode="mean", padding_idx=0): mean over non-padding tokens
            text = (self.query_emb[tokens] * mask[..., None]).sum(axis=1)
            x = x + text / np.maximum(counts, 1).astype(np.float32)  # int counts would promote to float64
        out: np.ndarray = x
        return out

    def step(self, state: np.ndarray, rows: np.ndarray, types: np.ndarray, tokens: np.ndarray,
             text: np.ndarray | None = None) -> np.ndarray:
        """New states (B, S) after one event each."""
        return self.cell_step(state, self.input_gates(rows, types, tokens, text))

    def input_gates(self, rows: np.ndarray, types: np.ndarray, tokens: np.ndarray,
                    text: np.ndarray | None = None) -> np.ndarray:
        """The input gates with their bias (B, G*H) of B events: what :meth:`cell_step` takes."""
        out: np.ndarray = self.inputs(rows, types, tokens, text) @ self.w_ih + self.b_ih
        return out

    def step_plain(self, state: np.ndarray, row: int, type_id: int) -> np.ndarray:
        """:meth:`step` for one user's event without text (a click or purchase), from the tabled gates:
        state (S,) -> (S,)."""
        gates = self.item_gates[row] + self.type_gates[type_id]
        out: np.ndarray = self.cell_step(state[None], gates[None])[0]
        return out

    def cell_step(self, state: np.ndarray, gi: np.ndarray) -> np.ndarray:
        """The recurrent cell: states (B, S) and input gates with their bias (B, G*H) -> new states."""
        h_size = self.hidden
        if self.cell == "gru":
            h = state
            gh = h @ self.w_hh + self.b_hh
            r = _sigmoid(gi[:, :h_size] + gh[:, :h_size])
            z = _sigmoid(gi[:, h_size:2 * h_size] + gh[:, h_size:2 * h_size])
            n = np.tanh(gi[:, 2 * h_size:] + r * gh[:, 2 * h_size:])
            new: np.ndarray = ((1.0 - z) * n + z * h).astype(np.float32)
            return new
        h, c = state[:, :h_size], state[:, h_size:]
        g = gi + h @ self.w_hh + self.b_hh  # (B, 4H): i, f, g, o
        i, f = _sigmoid(g[:, :h_size]), _sigmoid(g[:, h_size:2 * h_size])
        cand, o = np.tanh(g[:, 2 * h_size:3 * h_size]), _sigmoid(g[:, 3 * h_size:])
        c_new = f * c + i * cand
        return np.concatenate([o * np.tanh(c_new), c_new], axis=1).astype(np.float32)

    def query(self, state: np.ndarray) -> np.ndarray:
        """Query vectors (B, dim) from states (B, S)."""
        q: np.ndarray = state[:, : self.hidden] @ self.w_out + self.b_out
        return q
