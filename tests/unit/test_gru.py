"""The incremental serving step equals the full-sequence forward, for GRU and LSTM."""

from __future__ import annotations

import pytest
import torch

from encoders.models.gru import RecurrentConfig, RecurrentModel
from encoders.models.inputs import query_tokens


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_step_by_step_equals_forward(cell: str) -> None:
    torch.manual_seed(0)
    model = RecurrentModel(RecurrentConfig(n_items=50, cell=cell, dim=16, hidden=24)).eval()
    t = 12
    items = torch.randint(0, 51, (1, t))
    types = torch.randint(1, 4, (1, t))
    tokens = torch.tensor([[query_tokens("funny dark comedy", 16384, 8) for _ in range(t)]])
    with torch.no_grad():
        full, _ = model(items, types, tokens)  # (1, T, dim)
        state = model.initial_state()
        for i in range(t):
            state = model.step(state, items[:, i], types[:, i], tokens[:, i])
            assert torch.allclose(model.query(state), full[:, i], atol=1e-5, rtol=0)
    assert state.shape == (1, model.config.state_size)


def test_loss_ignores_positions_without_target() -> None:
    torch.manual_seed(0)
    model = RecurrentModel(RecurrentConfig(n_items=20, dim=8, hidden=8))
    items = torch.randint(1, 21, (2, 5))
    types = torch.ones(2, 5, dtype=torch.long)
    tokens = torch.zeros(2, 5, 8, dtype=torch.long)
    _, loss = model(items, types, tokens, torch.zeros(2, 5, dtype=torch.long).index_fill_(1, torch.tensor([0]), 3))
    assert loss is not None and torch.isfinite(loss)


def test_query_tokens_are_stable_and_padded() -> None:
    a = query_tokens("Dark Comedy!", 1000, 4)
    assert a == query_tokens("dark comedy", 1000, 4)
    assert a[2:] == [0, 0] and all(0 < t < 1000 for t in a[:2])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_numpy_serving_step_equals_torch(cell: str) -> None:
    import numpy as np

    from encoders.models.gru import NumpyRecurrentStep

    torch.manual_seed(1)
    model = RecurrentModel(RecurrentConfig(n_items=40, cell=cell, dim=16, hidden=12)).eval()
    fast = NumpyRecurrentStep(model)
    state_t = model.initial_state(3)
    state_n = state_t.numpy().copy()
    for t in range(10):
        rows = torch.tensor([t % 41, 0, (7 * t) % 41])
        types = torch.tensor([1, 2, 3])
        tokens = torch.tensor([[0] * 8, query_tokens("noir detective", 16384, 8), [0] * 8])
        with torch.no_grad():
            state_t = model.step(state_t, rows, types, tokens)
            query_t = model.query(state_t)
        before = state_n
        state_n = fast.step(state_n, rows.numpy(), types.numpy(), tokens.numpy())
        assert state_n.dtype == np.float32  # float64 creeping in made the batched step 30x slower
        for j in (0, 2):  # events without text: the tabled input gates give the same step
            plain = fast.step_plain(before[j], int(rows[j]), int(types[j]))
            assert plain.dtype == np.float32 and np.abs(plain - state_n[j]).max() <= 1e-6
        assert fast.inputs(rows.numpy(), types.numpy(), tokens.numpy()).dtype == np.float32
        assert np.abs(state_n - state_t.numpy()).max() <= 1e-5
        assert np.abs(fast.query(state_n) - query_t.numpy()).max() <= 1e-5
