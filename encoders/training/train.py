"""Train a next-item model (GRU, LSTM or SASRec) on a shared dataset with a temporal split and a fixed seed.

Split: all events (searches included) are ordered by time; the cutoff is the timestamp at the
``1 - test_fraction`` quantile (default 0.9), and events at or after it are held out. The model, the
vocabulary, the item-kNN similarity of the session head and both baselines see only the earlier events;
the recurrent models train on 64-event windows of them, SASRec on windows of its ``window``. Evaluation
ranks all items for each held-out click/purchase, predicted from the user's entire history before it (see
evaluation.py); a session that straddles the cutoff keeps its earlier part as history. Dropping searches
(``searches=False``) happens after the cutoff is fixed, so both variants share the split and test events.

The default recipe (``mix_fraction`` 0.1, item_knn_mix.py): the latest share of the training events is a
validation slice. A model trained on the events before it is validated after each epoch, which chooses the
epoch count and the weights of the item-kNN mix; no choice that loses to item-kNN alone on that slice is
taken, and when every one loses, training fails with both figures rather than write the model. The
re-ranker is fitted on the same slice and kept only when it beats the mix's order on the slice's last
quarter. The final model is then trained afresh on all training events for the chosen epochs and gets the
chosen mix with the kNN similarity of the whole training period (and the re-ranker with its tables).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from encoders.models.gru import RecurrentModel
from encoders.models.item_tower import TextTable
from encoders.models.live_neighbours import LiveConfig
from encoders.models.ranker import NumpyRanker, Ranker, RankerConfig
from encoders.models.registry import SequenceModel, build_model
from encoders.models.search_blend import SearchBlend
from encoders.models.session_head import neighbour_table
from encoders.models.transformer import SasrecConfig
from encoders.training.baselines import ItemKnn, Popularity
from encoders.training.evaluation import evaluate_model
from encoders.training.events import DatasetEvent
from encoders.training.item_knn_mix import Mix, best_fit, fit_mix, knn_table, with_mix
from encoders.training.ranker_fit import (
    candidate_mrr,
    fit_ranker,
    ranker_examples,
    ranker_tables,
    with_ranker,
)
from encoders.training.search_fit import fit_search_blend
from encoders.training.sequences import (
    UserSequence,
    build_sequences,
    build_vocabulary,
    temporal_cutoff,
    training_windows,
)
from encoders.training.streaming_eval import fit_live_weight
from stream.errors import ConfigError

# A trained model's session head is the model config's default (encoders/models/session_head.py
# SessionHeadConfig: the repeat part on, the co-occurrence part off) unless ``options`` say otherwise. Stacking
# (``head_fraction``) is off: on yoochoose it measured worse (docs/models.md).

RANKER = RankerConfig()  # the re-ranker's shape and fit, when TrainConfig.ranker is set
RANKER_HOLDOUT = 0.25  # share of the validation targets that judges whether the fitted re-ranker pays


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; saved with the artifact's metrics."""

    epochs: int = 4  # at most: with a validation slice (mix_fraction) the count is chosen there
    batch_size: int = 64
    window: int = 64  # training sequence length of the recurrent models (truncated back-propagation)
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 42
    test_fraction: float = 0.1  # latest share of events (by time) held out for evaluation
    max_eval_events: int = 20_000
    searches: bool = True  # False drops search events (after the split), for the with/without comparison
    head_fraction: float = 0.0  # latest share of the training events held back to fit the session head (0 = off)
    head_epochs: int = 4
    head_lr: float = 5e-2  # the head's few parameters and the output layer move far from their start
    # The latest share of the training events: it chooses the epochs and the kNN mix, and no model that loses
    # to item-kNN there is written. 0: no validation slice, the bare model (tests, ablations).
    mix_fraction: float = 0.1
    mix_neighbours: int = 100  # co-occurring items kept per item for the mix (itself included); 93% of rows fit
    max_val_events: int = 10_000  # validation events scored after each epoch when mixing
    ranker: bool = True  # the re-ranker (ranker.py): fitted on the validation slice (if any), kept where it pays
    learning: bool = True  # fit the live co-occurrence votes' weight on the validation slice (live_neighbours.py)
    max_live_events: int = 5_000  # validation targets each live setting is scored on (9 walks of the slice)


@dataclass
class TrainResult:
    """A trained model with its vocabulary and measured quality."""

    model: SequenceModel
    item_ids: list[str]
    metrics: dict[str, Any]
    search_blend: SearchBlend | None = None  # for a model with an item tower on a dataset of targeted searches
    live: LiveConfig | None = None  # the live table's settings, with its weight fitted on the validation slice


def seed_everything(seed: int) -> None:
    """Fix every random source that training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(events: Sequence[DatasetEvent], cell: str = "gru", config: TrainConfig = TrainConfig(),
          progress: bool = True, options: dict[str, Any] | None = None,
          item_texts: dict[str, str] | None = None) -> TrainResult:
    """Fit a model (gru, lstm or sasrec) on the pre-cutoff events and evaluate it on the rest; ``options``
    are fields of the model's config dataclass. With ``item_texts`` (item id -> title) a GRU/LSTM gets the
    text half of the item tower, and search queries enter through the same projection."""
    seed_everything(config.seed)
    started = time.perf_counter()
    cutoff = temporal_cutoff(events, config.test_fraction)
    events = events if config.searches else [e for e in events if e.type != "search"]
    vocabulary = build_vocabulary(events, cutoff)
    queries: TextTable | None = None
    texts = item_texts or {}
    if texts and cell != "sasrec":
        from encoders.text import DIM, TextEncoder

        encoder = TextEncoder()
        titles = TextTable((texts.get(item) for item in vocabulary), encoder.encode, DIM)
        queries = TextTable((e.query for e in events), encoder.encode, DIM)
        options = {"text_dim": DIM} | (options or {})
    model_options = options or {}  # flat: the model config's fields and the session head's (registry.py)

    def fresh() -> SequenceModel:
        built = build_model(cell, len(vocabulary), model_options)
        if queries is not None and isinstance(built, RecurrentModel) and built.text is not None:
            built.text.set_item_text(titles.vectors[titles.index([None, *(texts.get(i) for i in vocabulary)])])
        return built

    model = fresh()
    model_config = model.config
    sequences = build_sequences(events, vocabulary, model_config.query_buckets, model_config.max_query_tokens,
                                queries.rows if queries is not None else None)
    window = model_config.window if isinstance(model_config, SasrecConfig) else config.window
    query_vectors = torch.from_numpy(queries.vectors) if queries is not None else None
    epochs, mix, fitted, live = config.epochs, None, None, None
    mix_record: dict[str, Any] = {}
    if config.mix_fraction > 0 and config.head_fraction > 0:
        raise ConfigError("mix_fraction", "mix_fraction and head_fraction are alternatives: set one of them")
    if config.mix_fraction > 0:
        since = temporal_cutoff([e for e in events if e.ts < cutoff], config.mix_fraction)
        mix, mix_record, fitted, live = _choose_mix(model, cell, sequences, since, cutoff, len(vocabulary), window,
                                                    config, query_vectors, progress)
        epochs = int(mix_record["mix"]["chosen_epochs"])
        seed_everything(config.seed)  # the final model starts as a run without the mix would
        model = fresh()
    head = model.repeat
    # Stacking: the sequence model fits the events before `fit_cutoff`; the session head (and the output layer,
    # which sets the scale of the inner product) is then fitted on the later training events, which the frozen
    # model has not seen, so the mix reflects how far the inner product generalises, not how well it memorised.
    fit_cutoff = cutoff
    if head is not None and config.head_fraction > 0:
        fit_cutoff = temporal_cutoff([e for e in events if e.ts < cutoff], config.head_fraction)
    if head is not None and head.neighbours:  # the item-kNN similarity of the events the mix is fitted on
        head.set_neighbours(*neighbour_table(ItemKnn(sequences, fit_cutoff, len(vocabulary)).similarity,
                                             head.neighbours))
    arrays = [torch.from_numpy(a) for a in training_windows(sequences, fit_cutoff, window)]
    losses = _fit(model, arrays, list(model.parameters()), epochs, config.lr, config, query_vectors,
                  progress, f"train {cell}")
    head_losses: list[float] = []
    if head is not None and fit_cutoff < cutoff:
        arrays = [torch.from_numpy(a) for a in training_windows(sequences, cutoff, window, since=fit_cutoff)]
        output = model.out if isinstance(model, RecurrentModel) else model.ln_f  # rescales the inner product
        head_losses = _fit(model, arrays, [*head.parameters(), *output.parameters()], config.head_epochs,
                           config.head_lr, config, query_vectors, progress, f"fit {cell} session head",
                           frozen=True)
        if head.neighbours:  # serve and evaluate with the similarity of the whole training period
            head.set_neighbours(*neighbour_table(ItemKnn(sequences, cutoff, len(vocabulary)).similarity,
                                                 head.neighbours))
    if mix is not None:  # the kNN votes of the whole training period, mixed as chosen on validation
        model = with_mix(model, knn_table(ItemKnn(sequences, cutoff, len(vocabulary)).similarity,
                                          config.mix_neighbours), mix)
    if fitted is not None:  # the re-ranker fitted on validation, with the tables of the whole training period
        model = with_ranker(model, RANKER, ranker_tables(sequences, cutoff, len(vocabulary), RANKER.rules), fitted)
    quality = evaluate_model(cell, model, sequences, cutoff, len(vocabulary), config.max_eval_events,
                             queries.vectors if queries is not None else None)
    model.eval()
    blend: SearchBlend | None = None
    blend_record: dict[str, object] = {}
    if queries is not None and any(s.search_targets is not None and s.search_targets.any()
                                   for s in sequences.values()):
        blend, blend_record = fit_search_blend(model, sequences, queries.vectors,
                                               Popularity(sequences, cutoff, len(vocabulary)).counts, cutoff,
                                               config.seed)
    metrics = {
        "split": {"kind": "temporal", "test_fraction": config.test_fraction, "cutoff_ts": cutoff,
                  "train_events": int(sum(1 for e in events if e.ts < cutoff)),
                  "test_events": int(sum(1 for e in events if e.ts >= cutoff))},
        "train": asdict(config) | {"epoch_losses": [round(x, 4) for x in losses],
                                   "head_losses": [round(x, 4) for x in head_losses], "fit_cutoff_ts": fit_cutoff,
                                   "seconds": round(time.perf_counter() - started, 1)} | mix_record,
        "eval": quality,
    } | ({"search_blend": blend_record} if blend is not None else {})
    return TrainResult(model=model, item_ids=vocabulary, metrics=metrics, search_blend=blend, live=live)


def _choose_mix(model: SequenceModel, cell: str, sequences: dict[str, UserSequence], since: float, cutoff: float,
                n_items: int, window: int, config: TrainConfig, query_vectors: torch.Tensor | None,
                progress: bool) -> tuple[Mix, dict[str, Any], Ranker | None, LiveConfig | None]:
    """Train ``model`` on the training events before ``since`` and, after each epoch, fit the kNN mix on the
    validation events in [since, cutoff); the epoch count and mix with the best validation MRR@20 are chosen.
    With ``config.ranker`` the re-ranker is then fitted on the same events, over the chosen epoch's mixed
    model; with ``config.learning`` the live votes' weight is chosen there last (streaming_eval.py). The test
    period is never looked at."""
    table = knn_table(ItemKnn(sequences, since, n_items).similarity, config.mix_neighbours)
    vectors = query_vectors.numpy() if query_vectors is not None else None
    fits: list[Mix] = []
    rows: list[dict[str, Any]] = []
    weights: list[dict[str, torch.Tensor]] = []

    def validate(epoch: int, loss: float) -> None:
        fits.append(fit_mix(model, sequences, since, cutoff, table, config.max_val_events, vectors))
        rows.append({"epoch": epoch, "loss": round(loss, 4), "repeat_scale": fits[-1].repeat_scale,
                     "knn_weight": fits[-1].knn_weight, "validation": fits[-1].validation})
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        if progress:
            tqdm.write(f"validation after epoch {epoch}: {rows[-1]}")

    arrays = [torch.from_numpy(a) for a in training_windows(sequences, since, window)]
    _fit(model, arrays, list(model.parameters()), config.epochs, config.lr, config, query_vectors, progress,
         f"train {cell} before the validation slice", after_epoch=validate)
    best = best_fit(fits)  # raises when every epoch's mix loses to item-kNN on the validation slice
    record: dict[str, Any] = {"mix": {"fraction": config.mix_fraction, "since_ts": since,
                                      "neighbours": config.mix_neighbours, "epochs": rows, "chosen_epochs": best + 1,
                                      "repeat_scale": fits[best].repeat_scale, "knn_weight": fits[best].knn_weight,
                                      "validation": fits[best].validation}}
    model.load_state_dict(weights[best])
    mixed = with_mix(model, table, fits[best])
    if not config.ranker:
        return fits[best], record, None, _fit_live(mixed, sequences, since, cutoff, config, vectors, record, progress)
    ranked = with_ranker(mixed, RANKER, ranker_tables(sequences, since, n_items, RANKER.rules))
    examples = ranker_examples(ranked, sequences, since, cutoff, RANKER.max_events, vectors)
    assert ranked.ranker is not None
    # Kept only where it pays: fitted on the first users' validation targets, it must beat the mix's own order
    # on the last quarter's (users in sorted order); then it is fitted again on all of them.
    split = len(examples) - int(len(examples) * RANKER_HOLDOUT)
    mix_mrr = ranker_mrr = 0.0
    if any(y >= 0 for _, y in examples[:split]):  # else there is nothing to fit it on
        fit_ranker(ranked.ranker, examples[:split], RANKER, config.seed)
        mix_mrr, ranker_mrr = candidate_mrr(NumpyRanker(ranked.ranker, ranked.config.ranker_candidates),
                                            examples[split:])
    kept = ranker_mrr > mix_mrr
    losses = fit_ranker(ranked.ranker, examples, RANKER, config.seed) if kept else []
    hits = sum(1 for _, y in examples if y >= 0)
    record["ranker"] = RANKER.to_dict() | {
        "examples": len(examples), "target_among_candidates": hits, "losses": [round(x, 4) for x in losses],
        "holdout": {"targets": len(examples) - split, "mix_mrr@20": round(mix_mrr, 4),
                    "ranker_mrr@20": round(ranker_mrr, 4)}, "kept": kept}
    if progress:
        tqdm.write(f"ranker: {record['ranker']}")
    live = _fit_live(ranked if kept else mixed, sequences, since, cutoff, config, vectors, record, progress)
    return fits[best], record, ranked.ranker if kept else None, live


def _fit_live(validated: SequenceModel, sequences: dict[str, UserSequence], since: float, cutoff: float,
              config: TrainConfig, vectors: np.ndarray | None, record: dict[str, Any],
              progress: bool) -> LiveConfig | None:
    """The live table's settings with the weight that scored best on the validation slice (``record["live"]``
    gets every weight's figures), for the model as validated (trained before it, mixed, re-ranked)."""
    if not config.learning:
        return None
    live, record["live"] = fit_live_weight(validated, sequences, since, cutoff, config.max_live_events,
                                           query_vectors=vectors)
    if progress:
        tqdm.write(f"live neighbours: weight {live.weight}, new-item offset {live.new_item_offset}, validation "
                   f"{ {k: v['overall'] for k, v in record['live']['validation'].items()} }")
    return live


def _fit(model: SequenceModel, arrays: list[torch.Tensor], params: list[torch.nn.Parameter], epochs: int,
         lr: float, config: TrainConfig, query_vectors: torch.Tensor | None, progress: bool, desc: str,
         frozen: bool = False, after_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam over ``params`` on training windows; ``frozen`` keeps the model in eval mode (no dropout) while
    only the given parameters move; ``after_epoch(epoch, loss)`` runs after each epoch. Returns the mean loss
    per epoch."""
    optimiser = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    if frozen:  # no gradients for the rest of the model
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
    generator = torch.Generator().manual_seed(config.seed)
    n = arrays[0].shape[0]
    losses: list[float] = []
    bar = tqdm(total=epochs * ((n + config.batch_size - 1) // config.batch_size), disable=not progress,
               desc=desc, unit="batch", mininterval=1.0)
    for epoch in range(epochs):
        model.train(not frozen)
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            items, types, tokens, targets, query_rows = (a[idx] for a in arrays)
            length = int((types != 0).sum(dim=1).max())  # windows are padded at the end: trim the batch
            items, types, tokens, targets, query_rows = (a[:, :length] for a in (items, types, tokens, targets,
                                                                                 query_rows))
            text = query_vectors[query_rows] if query_vectors is not None else None  # (B, T, text_dim)
            _, loss = model(items, types, tokens, targets, text=text)
            assert loss is not None
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimiser.step()
            total += loss.item() * len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(total / n)
        if after_epoch is not None:
            after_epoch(epoch + 1, losses[-1])
    bar.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses
