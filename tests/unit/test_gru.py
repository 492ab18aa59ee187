"""The incremental serving step equals the full-sequence forward, for GRU and LSTM."""

from __future__ import annotations

import pytest
import torch

from encoders.gru import RecurrentConfig, RecurrentModel, query_tokens


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
