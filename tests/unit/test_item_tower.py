"""The item tower: text-projected item vectors, search queries through the same projection, served equally."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from encoders.artifact import ModelArtifact
from encoders.models.gru import NumpyRecurrentStep, RecurrentConfig, RecurrentModel
from encoders.models.item_tower import TextTable
from encoders.serving import UserEncoder
from encoders.text import DIM
from tests.recommenders import single_model


def _model() -> RecurrentModel:
    torch.manual_seed(4)
    model = RecurrentModel(RecurrentConfig(n_items=6, dim=8, hidden=8, text_dim=DIM)).eval()
    assert model.text is not None
    model.text.set_item_text(np.vstack([np.zeros((1, DIM)), np.eye(6, DIM)]).astype(np.float32))  # row 0: padding
    return model


def test_text_table_rows_and_zero_row() -> None:
    table = TextTable(["b", None, "a", "b"], lambda texts: np.ones((len(texts), 3), np.float32), 3)
    assert table.rows == {"b": 1, "a": 2}
    assert table.vectors.shape == (3, 3) and not table.vectors[0].any()
    assert table.index(["a", None, "zz"]).tolist() == [2, 0, 0]
    assert TextTable([None], lambda texts: np.ones((len(texts), 3), np.float32), 3).vectors.shape == (1, 3)


def test_item_vectors_include_the_projected_text() -> None:
    model = _model()
    assert model.text is not None
    with torch.no_grad():
        expected = model.item_emb.weight + model.text.proj(model.text.item_text)
        assert torch.allclose(model.item_vectors(), expected[1:])
        model.train()
        torch.manual_seed(0)
        dropped = model.item_weight()  # id dropout: some rows keep their text part only
        assert torch.isfinite(dropped).all()


def test_served_search_step_equals_torch_and_text_only_items_get_vectors() -> None:
    model = _model()
    encoder = UserEncoder(ModelArtifact(model, [f"m{n}" for n in range(1, 7)], "v", "test", {}, Path(".")))
    text = encoder.encode_text("dark comedy")
    assert text.shape == (8 + DIM,) and text.dtype == np.float32
    served = encoder.step(encoder.initial_state(), "search", None, text)
    with torch.no_grad():
        expected = model.step(model.initial_state(), torch.tensor([0]), torch.tensor([2]),
                              torch.from_numpy(text[:8].astype(np.int64))[None], torch.from_numpy(text[8:])[None])
    assert np.abs(served - expected.numpy()[0]).max() <= 1e-5
    fast = NumpyRecurrentStep(model)
    assert fast.text_proj is not None
    vector = encoder.text_item_vector("Toy Story (1995). Animation, Comedy")
    assert vector is not None and vector.shape == (8,)
    assert np.allclose(vector, text_vector(encoder, "Toy Story (1995). Animation, Comedy") @ fast.text_proj,
                       atol=1e-6)


def text_vector(encoder: UserEncoder, text: str) -> np.ndarray:
    """The MiniLM part of the encoder's query form."""
    return encoder.encode_text(text)[8:]


def test_an_unseen_query_is_encoded_before_recommend_and_then_served_from_the_cache() -> None:
    from prometheus_client import CollectorRegistry

    from index.brute import BruteForceIndex
    from stream.core.metrics import Metrics
    from stream.core.pipeline import Outcome, Rules
    from stream.core.schemas import Event, Source

    encoder = UserEncoder(ModelArtifact(_model(), [f"m{n}" for n in range(1, 7)], "v", "test", {}, Path(".")))
    index = BruteForceIndex(encoder.dim)
    index.add(encoder.item_ids, encoder.item_vectors())
    registry = CollectorRegistry()
    recommender = single_model(encoder, index, Rules(top_k=3), metrics=Metrics(registry), clock=lambda: 1e9)
    raw = b'{"schema_version": 1, "user_id": "u", "query": "heist thriller", "ts": 999999999.0}'
    source = Source("searches", 0, 0)
    search = recommender.validate("search", raw, b"u", source)
    assert isinstance(search, Event)
    slow = recommender.pending_text(search)
    assert slow is not None  # a model with a text path, a query it has not seen
    slow()
    assert recommender.pending_text(search) is None  # now cached
    out = recommender.recommend(search, source, {})
    assert out.recommendation is not None and len(out.recommendation.items) == 3
    decoded = registry.get_sample_value("streamrec_pipeline_stage_seconds_count", {"stage": "decode"})
    assert decoded == 1  # the search was decoded once, for the text model and the data path alike
    click = recommender.validate("click", b'{"schema_version": 1, "user_id": "u", "item_id": "m1", "ts": 999999999.0}',
                                 b"u", Source("clicks", 0, 0))
    assert isinstance(click, Event) and recommender.pending_text(click) is None  # no text
    invalid = recommender.validate("search", b'{"query": 1}', b"u", source)
    assert isinstance(invalid, Outcome) and invalid.dead_letter  # answered by its dead letter, never encoded
