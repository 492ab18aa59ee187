"""A SASRec-style causal Transformer next-item model over a user's last ``window`` events.

The query after event t is the model run over the last ``window`` events up to t (positions counted from
the oldest event of that window), read at the newest one. Training runs ``forward`` over windows of a
sequence (causal attention, so every position of a window is a prediction); serving keeps the window itself
as the user's state (item row, type and query tokens of each event, as float32) and recomputes it per query.

Serving is a window recompute, not a key/value cache, by size and by measurement: a cache holds
2 * layers * window * dim floats per user (3,072 at the defaults, 12 KB) against the 1 KB state budget, and
once the window slides every cached position changes (positions count from the window's start). The
recompute of the 12-event window of 2 layers fits the 50 us per user budget at batch 256 and grows with the
window (``streamrec bench encoders``; figures in docs/benchmarks.md). Scores are inner products with the
item embeddings (inner-product index) plus the session head's bonus (encoders/models/session_head.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from encoders.models.inputs import TYPE_IDS
from encoders.models.session_head import SessionHeadConfig, WithSessionHead, build_heads, next_item_loss
from stream.errors import ConfigError


@dataclass(frozen=True)
class SasrecConfig(WithSessionHead):
    """Hyper-parameters of :class:`SasrecModel`; saved as JSON inside the artifact."""

    n_items: int  # items in the vocabulary; row 0 of the embedding is padding / unknown item
    dim: int = 64  # item embedding, model width and query vector size
    heads: int = 2  # attention heads (dim must divide by it)
    layers: int = 2  # Transformer blocks
    window: int = 12  # events the model sees; the serving state holds this many (cost grows ~linearly)
    dropout: float = 0.2  # on embeddings, attention and MLP outputs, training only
    query_buckets: int = 16384  # hashed token vocabulary for search queries
    max_query_tokens: int = 8  # tokens of a query that are used
    # The session head and re-ranker: SessionHeadConfig's defaults, the same for every model (its comments say why)
    head: SessionHeadConfig = field(default_factory=SessionHeadConfig)

    @property
    def cell(self) -> str:
        """The model type name, as ``RecurrentConfig.cell`` names GRU and LSTM."""
        return "sasrec"

    @property
    def state_size(self) -> int:
        """Floats per user: the window's item rows, types and query tokens."""
        return self.window * (2 + self.max_query_tokens)


class Block(nn.Module):
    """Pre-norm causal self-attention and ReLU MLP, each with a residual connection."""

    def __init__(self, config: SasrecConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.ln1 = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.ln2 = nn.LayerNorm(config.dim)
        self.fc = nn.Linear(config.dim, 2 * config.dim)
        self.fc_out = nn.Linear(2 * config.dim, config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, dim) -> (B, T, dim), position t attending to positions <= t."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, dh)
        att = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, d)))
        out: Tensor = x + self.drop(self.fc_out(functional.relu(self.fc(self.ln2(x)))))
        return out


class SasrecModel(nn.Module):
    """Embeds each event (item + type + query tokens + position), runs causal blocks, normalises."""

    def __init__(self, config: SasrecConfig) -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ConfigError("heads", f"dim {config.dim} is not divisible by heads {config.heads}")
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.dim, padding_idx=0)
        self.type_emb = nn.Embedding(len(TYPE_IDS) + 1, config.dim, padding_idx=0)
        self.query_emb = nn.EmbeddingBag(config.query_buckets, config.dim, mode="mean", padding_idx=0)
        self.pos_emb = nn.Embedding(config.window, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.dim)
        self.repeat, self.ranker = build_heads(config.head, config.dim, config.n_items)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, items: Tensor, types: Tensor, tokens: Tensor, targets: Tensor | None = None,
                text: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Query vectors after each step (B, T, dim), T <= window, and, given next-item targets (B, T;
        0 = none), the loss. ``text`` is unused: this model reads queries as hashed tokens only."""
        b, t, q = tokens.shape
        if t > self.config.window:
            raise ConfigError("window", f"a sequence of {t} events is longer than the window {self.config.window}")
        text = self.query_emb(tokens.reshape(b * t, q)).reshape(b, t, -1)
        x = self.item_emb(items) + self.type_emb(types) + text + self.pos_emb.weight[:t]
        x = self.drop(x)  # (B, T, dim)
        for block in self.blocks:
            x = block(x)
        queries: Tensor = self.ln_f(x)
        if targets is None:
            return queries, None
        return queries, next_item_loss(queries, self.item_emb.weight, self.repeat, items, types, targets)

    def history_queries(self, items: Tensor, types: Tensor, tokens: Tensor, ends: list[int],
                        text: Tensor | None = None) -> Tensor:
        """The query after the first ``end`` events of one sequence (T,), for each end: (P, dim); ``text`` is
        unused (this model reads queries as hashed tokens only)."""
        w = self.config.window
        starts = [max(0, e - w) for e in ends]
        length = max(e - s for s, e in zip(starts, ends, strict=True))

        def windows(a: Tensor) -> Tensor:
            rows = [functional.pad(a[s:e], (0, 0) * (a.dim() - 1) + (0, length - (e - s)))
                    for s, e in zip(starts, ends, strict=True)]
            return torch.stack(rows)

        queries, _ = self(windows(items), windows(types), windows(tokens))  # (P, L, dim)
        last = torch.as_tensor([e - s - 1 for s, e in zip(starts, ends, strict=True)])
        out: Tensor = queries[torch.arange(len(ends)), last]
        return out

    def item_weight(self) -> Tensor:
        """Item vectors (n_items + 1, dim), row 0 padding."""
        weight: Tensor = self.item_emb.weight
        return weight

    def item_vectors(self) -> Tensor:
        """Item embeddings in index order, without the padding row: (n_items, dim)."""
        weights: Tensor = self.item_emb.weight[1:]
        return weights


def _layer_norm(x: np.ndarray, ln: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: np.ndarray = (x - mean) / np.sqrt(var + 1e-5) * ln[0] + ln[1]
    return out


class NumpySasrecStep:
    """The serving side of a trained :class:`SasrecModel` in numpy: the window state and its recompute.

    State layout per user (float32, exact for ids < 2**24): rows (W), types (W), tokens (W * Q), events
    oldest first and type 0 after the last one. ``query`` equals the model's forward over the window read at
    its newest event (a test holds them within 1e-5).
    """

    def __init__(self, model: SasrecModel) -> None:
        c = model.config
        self.window, self.q_tokens, self.heads = c.window, c.max_query_tokens, c.heads
        self.state_size = c.state_size

        def array(t: object) -> np.ndarray:
            assert isinstance(t, Tensor)
            return t.detach().cpu().numpy().astype(np.float32).copy()

        self.item_emb = array(model.item_emb.weight)  # (n_items + 1, dim)
        self.type_emb = array(model.type_emb.weight)
        self.query_emb = array(model.query_emb.weight)  # (buckets, dim); row 0 is padding
        self.pos_emb = array(model.pos_emb.weight)  # (W, dim)
        self.blocks = []
        for blk in model.blocks:
            assert isinstance(blk, Block)
            self.blocks.append({
                "ln1": (array(blk.ln1.weight), array(blk.ln1.bias)),
                "qkv": (array(blk.qkv.weight).T.copy(), array(blk.qkv.bias)),
                "proj": (array(blk.proj.weight).T.copy(), array(blk.proj.bias)),
                "ln2": (array(blk.ln2.weight), array(blk.ln2.bias)),
                "fc": (array(blk.fc.weight).T.copy(), array(blk.fc.bias)),
                "fc_out": (array(blk.fc_out.weight).T.copy(), array(blk.fc_out.bias)),
            })
        self.ln_f = (array(model.ln_f.weight), array(model.ln_f.bias))

    def step(self, state: np.ndarray, rows: np.ndarray, types: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """New states (B, S) with one more event each (the oldest drops out of a full window)."""
        w, q = self.window, self.q_tokens
        b = state.shape[0]
        r, t, k = state[:, :w], state[:, w:2 * w], state[:, 2 * w:].reshape(b, w, q)
        n = (t != 0).sum(axis=1)  # events held
        full = n == w
        r = np.where(full[:, None], np.roll(r, -1, axis=1), r)
        t = np.where(full[:, None], np.roll(t, -1, axis=1), t)
        k = np.where(full[:, None, None], np.roll(k, -1, axis=1), k)
        at = np.minimum(n, w - 1)
        users = np.arange(b)
        r[users, at], t[users, at], k[users, at] = rows, types, tokens
        return np.concatenate([r, t, k.reshape(b, w * q)], axis=1).astype(np.float32)

    def query(self, state: np.ndarray) -> np.ndarray:
        """Query vectors (B, dim) from window states (B, S); a user with no events gets the zero vector."""
        w, q = self.window, self.q_tokens
        b = state.shape[0]
        types = state[:, w:2 * w].astype(np.int64)
        n = (types != 0).sum(axis=1)
        length = max(int(n.max()), 1)  # only the held events are computed
        rows = state[:, :length].astype(np.int64)
        types = types[:, :length]
        tokens = state[:, 2 * w:].reshape(b, w, q)[:, :length].astype(np.int64)
        x = self.item_emb[rows] + self.type_emb[types] + self.pos_emb[:length]  # (B, L, dim)
        mask = tokens != 0
        searches = mask.any(axis=2)  # (B, L): only these events have tokens to embed
        if searches.any():  # EmbeddingBag(mode="mean", padding_idx=0): mean over non-padding tokens
            tok, tok_mask = tokens[searches], mask[searches]  # (M, Q)
            text = (self.query_emb[tok] * tok_mask[..., None]).sum(axis=1)
            x[searches] += text / tok_mask.sum(axis=1, keepdims=True).astype(np.float32)
        last = np.maximum(n - 1, 0)
        users = np.arange(b)
        causal = np.triu(np.full((length, length), -np.inf, dtype=np.float32), k=1)
        for i, blk in enumerate(self.blocks):
            if i == len(self.blocks) - 1:  # the last block is needed at the newest event only
                x = self._block(x, blk, causal[last][:, None, None, :], x[users, last][:, None, :])
            else:
                x = self._block(x, blk, causal[None, None], x)
        out: np.ndarray = _layer_norm(x[:, 0] if len(self.blocks) else x[users, last], self.ln_f)
        return np.where(n[:, None] > 0, out, 0.0).astype(np.float32)

    def _block(self, x: np.ndarray, blk: dict[str, tuple[np.ndarray, np.ndarray]], mask: np.ndarray,
               queries_at: np.ndarray) -> np.ndarray:
        """One block: keys/values from all of x (B, L, dim), outputs for the rows of ``queries_at`` (B, M, dim)."""
        b, length, d = x.shape
        h, dh = self.heads, d // self.heads
        w_qkv, b_qkv = blk["qkv"]
        m = queries_at.shape[1]
        if m == length:  # every position is queried: one projection for q, k and v
            qkv = _layer_norm(x, blk["ln1"]) @ w_qkv + b_qkv  # (B, L, 3d)
            qv, kv = qkv[..., :d].reshape(b, m, h, dh), qkv[..., d:]
        else:
            kv = _layer_norm(x, blk["ln1"]) @ w_qkv[:, d:] + b_qkv[d:]  # (B, L, 2d)
            qv = (_layer_norm(queries_at, blk["ln1"]) @ w_qkv[:, :d] + b_qkv[:d]).reshape(b, m, h, dh)
        k = kv[..., :d].reshape(b, length, h, dh).transpose(0, 2, 3, 1)  # (B, H, dh, L)
        v = kv[..., d:].reshape(b, length, h, dh).transpose(0, 2, 1, 3)  # (B, H, L, dh)
        scores = qv.transpose(0, 2, 1, 3) @ k / np.float32(math.sqrt(dh)) + mask  # (B, H, M, L)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = (scores / scores.sum(axis=-1, keepdims=True)) @ v  # (B, H, M, dh)
        y = queries_at + att.transpose(0, 2, 1, 3).reshape(b, m, d) @ blk["proj"][0] + blk["proj"][1]
        hidden = np.maximum(_layer_norm(y, blk["ln2"]) @ blk["fc"][0] + blk["fc"][1], 0.0)
        out: np.ndarray = y + hidden @ blk["fc_out"][0] + blk["fc_out"][1]
        return out
