"""The MiniLM (BERT) forward for one search query in plain numpy: the worker's per-search text encoding.

For a single short query the cost is reading the weights, not arithmetic, and torch's eager BERT adds its
own overhead on top; numpy does the same products in less CPU (figures: docs/benchmarks.md). Same weights,
same arithmetic (a test holds the vectors within 1e-5 of the transformers model): token + position +
token-type embeddings, six post-LayerNorm blocks of 12-head self-attention and a GELU MLP, mean pooling over
the tokens and L2 normalisation, as ``TextEncoder`` computes with torch for batches.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import erf

if TYPE_CHECKING:  # transformers is imported by TextEncoder, after it has set the offline switches
    from transformers import PreTrainedModel

_Linear = tuple[np.ndarray, np.ndarray]  # (in, out) weight, bias


class NumpyBert:
    """A BERT encoder's weights as numpy arrays, and its forward for one token sequence."""

    def __init__(self, model: PreTrainedModel) -> None:
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.eps = float(config.layer_norm_eps)
        weights = {name: t.detach().cpu().numpy().astype(np.float32) for name, t in model.state_dict().items()}

        def linear(prefix: str) -> _Linear:
            return weights[f"{prefix}.weight"].T.copy(), weights[f"{prefix}.bias"]

        def norm(prefix: str) -> _Linear:
            return weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]

        self.words = weights["embeddings.word_embeddings.weight"]
        # Position and token type 0 (a single sentence) are added together once.
        self.positions = weights["embeddings.position_embeddings.weight"] + weights[
            "embeddings.token_type_embeddings.weight"][0]
        self.embed_norm = norm("embeddings.LayerNorm")
        self.layers = []
        for i in range(int(config.num_hidden_layers)):
            p = f"encoder.layer.{i}"
            q, k, v = (linear(f"{p}.attention.self.{name}") for name in ("query", "key", "value"))
            self.layers.append({
                "qkv": (np.concatenate([q[0], k[0], v[0]], axis=1), np.concatenate([q[1], k[1], v[1]])),
                "attn_out": linear(f"{p}.attention.output.dense"),
                "attn_norm": norm(f"{p}.attention.output.LayerNorm"),
                "mlp_in": linear(f"{p}.intermediate.dense"),
                "mlp_out": linear(f"{p}.output.dense"),
                "out_norm": norm(f"{p}.output.LayerNorm"),
            })

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """The unit-length mean-pooled vector (dim,) of one token id sequence (T,), [CLS] and [SEP] included."""
        t = ids.shape[0]
        x = self._norm(self.words[ids] + self.positions[:t], self.embed_norm)
        d = x.shape[1]
        h, dh = self.heads, d // self.heads
        scale = np.float32(1.0 / math.sqrt(dh))
        for layer in self.layers:
            qkv = x @ layer["qkv"][0] + layer["qkv"][1]  # (T, 3d)
            q, k, v = (qkv[:, n * d:(n + 1) * d].reshape(t, h, dh).transpose(1, 0, 2) for n in range(3))
            scores = (q @ k.transpose(0, 2, 1)) * scale  # (H, T, T); one sequence: nothing is masked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ v  # (H, T, dh)
            attended = context.transpose(1, 0, 2).reshape(t, d) @ layer["attn_out"][0] + layer["attn_out"][1]
            x = self._norm(x + attended, layer["attn_norm"])
            hidden = x @ layer["mlp_in"][0] + layer["mlp_in"][1]
            hidden = 0.5 * hidden * (1.0 + erf(hidden * np.float32(1.0 / math.sqrt(2.0))))  # exact GELU
            x = self._norm(x + hidden @ layer["mlp_out"][0] + layer["mlp_out"][1], layer["out_norm"])
        pooled = x.mean(axis=0)
        out: np.ndarray = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
        return out

    def _norm(self, x: np.ndarray, params: _Linear) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=-1, keepdims=True)
        out: np.ndarray = centred / np.sqrt(var + np.float32(self.eps)) * params[0] + params[1]
        return out
