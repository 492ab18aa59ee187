"""Fit the re-ranker (encoders/ranker.py) on the validation slice and attach it to a model.

The examples are the validation targets scored by the mixed model that was trained on the events before the
slice: for each target, the features of the first stage's best ``candidates`` and the target's position among
them (-1 when it is not among them; such targets do not train the MLP). The final model gets the fitted MLP
and the rule and popularity tables of the whole training period.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from encoders.evaluation import held_out, sequence_queries
from encoders.events import SEARCH_TYPE
from encoders.models import SequenceModel, model_from_config
from encoders.ranker import NumpyRanker, Ranker, RankerConfig, RankerTables, ranker_example
from encoders.repeat import NumpyRepeatHead
from encoders.sequences import UserSequence


def with_ranker(model: SequenceModel, config: RankerConfig, tables: RankerTables,
                fitted: Ranker | None = None) -> SequenceModel:
    """A copy of ``model`` with a re-ranker holding ``tables`` (and the MLP and scaling of ``fitted``)."""
    fields: dict[str, Any] = {"ranker_hidden": config.hidden, "ranker_rules": config.rules,
                              "ranker_candidates": config.candidates}
    ranked = model_from_config(model.config.cell, model.config.to_dict() | fields)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ranker.")}
    ranked.load_state_dict(state, strict=False)
    assert ranked.ranker is not None
    if fitted is not None:
        ranked.ranker.load_state_dict(fitted.state_dict())
    ranked.ranker.set_tables(tables)
    return ranked.eval()


def ranker_examples(model: SequenceModel, sequences: dict[str, UserSequence], since: float, until: float,
                    max_events: int, query_vectors: np.ndarray | None = None) -> list[tuple[np.ndarray, int]]:
    """(features of the candidates, position of the target among them or -1) per validation target in
    [since, until), for a mixed model with a re-ranker (its MLP is not used here)."""
    assert model.repeat is not None and model.ranker is not None, "needs the session head and a ranker"
    head = NumpyRepeatHead(model.repeat)
    ranker = NumpyRanker(model.ranker, model.config.ranker_candidates)
    item_emb = model.item_weight().detach().numpy()
    examples: list[tuple[np.ndarray, int]] = []
    for _, seq, positions in held_out(sequences, since, max_events, until):
        q = sequence_queries(model, seq, positions, query_vectors)
        item_events = np.flatnonzero((seq.types != 0) & (seq.types != SEARCH_TYPE))
        for p, t in enumerate(positions):
            recent = item_events[item_events < t]
            examples.append(ranker_example(head, ranker, q[p], item_emb, seq.items[recent], seq.types[recent],
                                           int(seq.items[t])))
    return examples
