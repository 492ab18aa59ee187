"""The SASRec window step equals the full forward; the session head's numpy form equals its torch form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.models.inputs import query_tokens
from encoders.models.session_head import NumpyRepeatHead, SessionHeadConfig
from encoders.models.transformer import NumpySasrecStep, SasrecConfig, SasrecModel


@pytest.mark.parametrize("layers", [1, 2])
def test_window_step_equals_forward(layers: int) -> None:
    torch.manual_seed(0)
    config = SasrecConfig(n_items=50, dim=16, heads=2, layers=layers, window=6, max_query_tokens=4)
    model = SasrecModel(config).eval()
    fast = NumpySasrecStep(model)
    t = 15  # longer than the window: the oldest events drop out
    items = torch.randint(1, 51, (t,))
    types = torch.randint(1, 4, (t,))
    tokens = torch.tensor([query_tokens("dark comedy" if k % 3 else "", 16384, 4) for k in range(t)])
    state = np.zeros((2, config.state_size), dtype=np.float32)  # two users: one steps, one stays empty
    with torch.no_grad():
        expected = model.history_queries(items, types, tokens, list(range(1, t + 1)))  # (T, dim)
    for k in range(t):
        state[:1] = fast.step(state[:1], items[k:k + 1].numpy(), types[k:k + 1].numpy(), tokens[k:k + 1].numpy())
        got = fast.query(state)
        assert np.abs(got[0] - expected[k].numpy()).max() <= 1e-5
        assert not got[1].any()
    with torch.no_grad():  # history_queries is the plain forward while the history fits the window
        full, _ = model(items[None, :6], types[None, :6], tokens[None, :6])
        assert torch.allclose(full[0], expected[:6], atol=1e-6)


def test_loss_is_finite_and_trains() -> None:
    torch.manual_seed(0)
    model = SasrecModel(SasrecConfig(n_items=20, dim=8, heads=2, window=5, max_query_tokens=2))
    items = torch.randint(1, 21, (3, 5))
    types = torch.ones(3, 5, dtype=torch.long)
    _, loss = model(items, types, torch.zeros(3, 5, 2, dtype=torch.long), items.roll(-1, 1))
    assert loss is not None and torch.isfinite(loss)
    loss.backward()
    assert model.item_emb.weight.grad is not None


@pytest.mark.parametrize("neighbours", [0, 3])
def test_session_head_numpy_equals_torch(neighbours: int) -> None:
    torch.manual_seed(2)
    model = SasrecModel(SasrecConfig(n_items=10, dim=8, heads=2, window=8, max_query_tokens=2,
                                     head=SessionHeadConfig(repeat_window=4, neighbours=neighbours)))
    head = model.repeat
    assert head is not None
    rng = np.random.default_rng(0)
    with torch.no_grad():
        head.weight.normal_()
        head.nbr_weight.normal_()
    if neighbours:
        head.set_neighbours(rng.integers(0, 11, (11, neighbours)), rng.random((11, neighbours), np.float32))
    items = torch.tensor([[3, 0, 5, 3, 7, 3, 9, 5]])
    types = torch.tensor([[1, 2, 1, 3, 1, 1, 1, 1]])  # position 1 is a search
    queries = torch.randn(1, 8, 8)
    with torch.no_grad():
        dense = head.add_to_logits(torch.zeros(8, 11), queries, items, types, torch.ones(1, 8, dtype=torch.bool))
    fast = NumpyRepeatHead(head)
    for t in range(8):
        kept = [s for s in range(t + 1) if types[0, s] != 2]
        rows, bonus = fast.bonus(queries[0, t].numpy(), items[0, kept].numpy(), types[0, kept].numpy())
        got = np.zeros(11)
        got[rows] = bonus
        assert np.abs(got[1:] - dense[t, 1:].numpy()).max() <= 1e-5
        if not neighbours:
            assert set(rows) == set(items[0, kept[-4:]].tolist())  # only the last 4 item events count
