"""Hand-written cells against PyTorch's nn.LSTMCell / nn.GRUCell on the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lstmlm.nn.manual.cells import (
    GRUCell,
    LSTMCell,
    MogrifierLSTMCell,
    MogrifierMatrix,
    gru_cell,
    lstm_cell,
)

IN, H, B = 5, 7, 3
ATOL = 1e-10


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def test_lstm_cell_matches_torch() -> None:
    torch.manual_seed(0)
    ours = LSTMCell(IN, H).double()
    ref = nn.LSTMCell(IN, H).double()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x, h, c = _randn(B, IN), _randn(B, H), _randn(B, H)
    h1, c1 = ours(x, (h, c))
    h2, c2 = ref(x, (h, c))
    torch.testing.assert_close(h1, h2, atol=ATOL, rtol=0)
    torch.testing.assert_close(c1, c2, atol=ATOL, rtol=0)
    g1 = _grads((h1**2).sum() + c1.sum(), [x, h, c, *ours.parameters()])
    g2 = _grads((h2**2).sum() + c2.sum(), [x, h, c, *ref.parameters()])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_gru_cell_matches_torch() -> None:
    torch.manual_seed(1)
    ours = GRUCell(IN, H).double()
    ref = nn.GRUCell(IN, H).double()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x, h = _randn(B, IN), _randn(B, H)
    h1, h2 = ours(x, h), ref(x, h)
    torch.testing.assert_close(h1, h2, atol=ATOL, rtol=0)
    g1 = _grads((h1**2).sum(), [x, h, *ours.parameters()])
    g2 = _grads((h2**2).sum(), [x, h, *ref.parameters()])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_step_functions_take_precomputed_projection() -> None:
    torch.manual_seed(2)
    lstm, gru = nn.LSTMCell(IN, H).double(), nn.GRUCell(IN, H).double()
    x, h, c = _randn(B, IN), _randn(B, H), _randn(B, H)
    h1, c1 = lstm_cell(
        F.linear(x, lstm.weight_ih, lstm.bias_ih), h, c, lstm.weight_hh, lstm.bias_hh
    )
    h2, c2 = lstm(x, (h, c))
    torch.testing.assert_close(h1, h2, atol=ATOL, rtol=0)
    torch.testing.assert_close(c1, c2, atol=ATOL, rtol=0)
    # Folding b_hh into the projection is the same for the LSTM.
    x_proj = F.linear(x, lstm.weight_ih, lstm.bias_ih + lstm.bias_hh)
    h3, _ = lstm_cell(x_proj, h, c, lstm.weight_hh)
    torch.testing.assert_close(h3, h2, atol=ATOL, rtol=0)
    g1 = gru_cell(F.linear(x, gru.weight_ih, gru.bias_ih), h, gru.weight_hh, gru.bias_hh)
    torch.testing.assert_close(g1, gru(x, h), atol=ATOL, rtol=0)


def test_cells_default_state_is_zeros_and_unbatched_input() -> None:
    torch.manual_seed(3)
    lstm, gru = LSTMCell(IN, H), GRUCell(IN, H)
    x = torch.randn(B, IN)
    zeros = torch.zeros(B, H)
    for a, b in zip(lstm(x), lstm(x, (zeros, zeros)), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(gru(x), gru(x, zeros))
    ref = nn.LSTMCell(IN, H)
    ref.load_state_dict(lstm.state_dict())
    h1, c1 = lstm(x[0])
    h2, c2 = ref(x[0])
    assert h1.shape == (H,)
    torch.testing.assert_close(h1, h2, atol=1e-6, rtol=0)
    torch.testing.assert_close(c1, c2, atol=1e-6, rtol=0)


def test_parameters_are_initialised_like_torch() -> None:
    cell = LSTMCell(IN, 16)
    bound = 1 / 16**0.5
    for p in cell.parameters():
        assert p.abs().max() <= bound
        assert p.std() > bound / 4  # not all zeros / constant


def test_mogrifier_rounds_zero_is_plain_lstm() -> None:
    torch.manual_seed(4)
    mog = MogrifierLSTMCell(IN, H, rounds=0).double()
    assert len(mog.mog_q) == 0 and len(mog.mog_r) == 0
    ref = nn.LSTMCell(IN, H).double()
    ref.load_state_dict(mog.state_dict(), strict=True)
    x, h, c = _randn(B, IN), _randn(B, H), _randn(B, H)
    for a, b in zip(mog(x, (h, c)), ref(x, (h, c)), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_mogrifier_follows_the_paper_formula() -> None:
    torch.manual_seed(5)
    mog = MogrifierLSTMCell(IN, H, rounds=3).double()
    q1, r2, q3 = mog.mog_q[0].weight, mog.mog_r[0].weight, mog.mog_q[1].weight
    x, h, c = _randn(B, IN), _randn(B, H), _randn(B, H)
    x1 = 2 * torch.sigmoid(h @ q1.t()) * x  # round 1: x from h
    h2 = 2 * torch.sigmoid(x1 @ r2.t()) * h  # round 2: h from x
    x3 = 2 * torch.sigmoid(h2 @ q3.t()) * x1  # round 3: x from h
    ref = nn.LSTMCell(IN, H).double()
    ref.load_state_dict(
        {k: v for k, v in mog.state_dict().items() if not k.startswith("mog_")}, strict=True
    )
    for a, b in zip(mog(x, (h, c)), ref(x3, (h2, c)), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_mogrifier_parameter_names_and_low_rank_shapes() -> None:
    mog = MogrifierLSTMCell(IN, H, rounds=5, rank=2)
    shapes = {k: tuple(v.shape) for k, v in mog.state_dict().items()}
    assert shapes["weight_ih"] == (4 * H, IN)
    assert shapes["weight_hh"] == (4 * H, H)
    for j in range(3):  # rounds 1, 3, 5: Q maps h -> x
        assert shapes[f"mog_q.{j}.left"] == (IN, 2)
        assert shapes[f"mog_q.{j}.right"] == (2, H)
    for j in range(2):  # rounds 2, 4: R maps x -> h
        assert shapes[f"mog_r.{j}.left"] == (H, 2)
        assert shapes[f"mog_r.{j}.right"] == (2, IN)
    assert "mog_q.3.left" not in shapes and "mog_r.2.left" not in shapes
    full = MogrifierLSTMCell(IN, H, rounds=2)
    assert tuple(full.mog_q[0].weight.shape) == (IN, H)
    assert tuple(full.mog_r[0].weight.shape) == (H, IN)
    h, c = mog(torch.randn(B, IN))
    assert h.shape == c.shape == (B, H)


def test_low_rank_matrix_is_product() -> None:
    m = MogrifierMatrix(6, 4, rank=2)
    v = torch.randn(3, 6)
    torch.testing.assert_close(m(v), v @ (m.left @ m.right).t())


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTMCell(0, 3),
        lambda: LSTMCell(3, -1),
        lambda: GRUCell(-2, 3),
        lambda: GRUCell(3, 0),
        lambda: MogrifierLSTMCell(3, 0),
        lambda: MogrifierLSTMCell(3, 4, rounds=-1),
        lambda: MogrifierLSTMCell(3, 4, rank=0),
        lambda: LSTMCell(2.5, 3),  # type: ignore[arg-type]
    ],
)
def test_bad_sizes_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_wrong_input_size_raises_value_error() -> None:
    with pytest.raises(ValueError, match="LSTMCell"):
        LSTMCell(IN, H)(torch.randn(B, IN + 1))
    with pytest.raises(ValueError, match="GRUCell"):
        GRUCell(IN, H)(torch.randn(2, B, IN))
