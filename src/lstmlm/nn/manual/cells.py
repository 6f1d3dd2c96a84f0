"""Hand-written single-step recurrent cells with PyTorch parameter names and gate order.

Two layers of API:

* pure step functions, ``lstm_cell`` and ``gru_cell``, that take the input
  projection of one time step (``W_ih x + b_ih``, already computed) plus the
  recurrent weights, so that a layer can project a whole window in one matmul;
* ``nn.Module`` cells, ``LSTMCell`` / ``GRUCell`` (drop-in for ``nn.LSTMCell``
  / ``nn.GRUCell``: same parameter names, shapes and initialisation) and
  ``MogrifierLSTMCell`` (Melis et al. 2020, "Mogrifier LSTM").

Gate order follows PyTorch: LSTM rows of the weights are ``i, f, g, o``; GRU rows
are ``r, z, n``.

Mogrifier parameter naming (this module's own convention):

* ``mog_q.{j}`` for the odd rounds 1, 3, 5, ... (j = 0, 1, 2, ...); it maps
  ``h`` to input size and updates ``x = 2 sigmoid(Q h) * x``;
* ``mog_r.{j}`` for the even rounds 2, 4, ... ; it maps ``x`` to hidden size and
  updates ``h = 2 sigmoid(R x) * h``;
* each is a ``MogrifierMatrix``: full rank holds ``weight`` (out, in); low rank
  ``k`` holds ``left`` (out, k) and ``right`` (k, in), with ``Q = left @ right``.
  No biases, as in the paper's formulas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LSTMState = tuple[Tensor, Tensor]


def check_sizes(**sizes: int | None) -> None:
    """Raise ``ValueError`` unless every given size is a positive int (``None`` is skipped)."""
    for name, value in sizes.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def reset_uniform(module: nn.Module, hidden_size: int) -> None:
    """Initialise every parameter of ``module`` like PyTorch's RNNs: U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            p.uniform_(-bound, bound)


def _recurrent_mm(h: Tensor, weight_hh: Tensor, mm_dtype: torch.dtype | None) -> Tensor:
    """``h @ weight_hh.T``; with ``mm_dtype`` the product runs in that dtype, result in h's."""
    if mm_dtype is None or mm_dtype == h.dtype:
        return h @ weight_hh.t()
    return (h.to(mm_dtype) @ weight_hh.to(mm_dtype).t()).to(h.dtype)


def lstm_cell(
    x_proj_t: Tensor,
    h: Tensor,
    c: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None = None,
    mm_dtype: torch.dtype | None = None,
) -> LSTMState:
    """One LSTM step.

    x_proj_t: (B, 4H), ``W_ih x_t + b_ih``; h, c: (B, H); weight_hh: (4H, H);
    bias_hh: (4H,) or None (e.g. when already folded into ``x_proj_t``).
    ``mm_dtype`` (e.g. ``torch.bfloat16``) runs the recurrent matmul in that dtype
    while the state stays in h's dtype. Returns the new (h, c), each (B, H).
    """
    gates = x_proj_t + _recurrent_mm(h, weight_hh, mm_dtype)  # (B, 4H)
    if bias_hh is not None:
        gates = gates + bias_hh
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_cell(
    x_proj_t: Tensor,
    h: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None = None,
    mm_dtype: torch.dtype | None = None,
) -> Tensor:
    """One GRU step.

    x_proj_t: (B, 3H), ``W_ih x_t + b_ih``; h: (B, H); weight_hh: (3H, H); bias_hh: (3H,)
    or None. Unlike the LSTM, ``b_hn`` cannot be folded into the input projection:
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``. Returns the new h, (B, H).
    """
    h_proj = _recurrent_mm(h, weight_hh, mm_dtype)  # (B, 3H)
    if bias_hh is not None:
        h_proj = h_proj + bias_hh
    x_r, x_z, x_n = x_proj_t.chunk(3, dim=1)  # each (B, H)
    h_r, h_z, h_n = h_proj.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return n + z * (h - n)  # == (1 - z) * n + z * h


def _batch_input(x: Tensor, input_size: int, name: str) -> tuple[Tensor, bool]:
    """Accept (B, I) or unbatched (I,) input like nn.LSTMCell; return (B, I) and batched flag."""
    if x.dim() not in (1, 2) or x.shape[-1] != input_size:
        raise ValueError(
            f"{name} expects input of shape (B, {input_size}) or ({input_size},), "
            f"got {tuple(x.shape)}"
        )
    return (x, True) if x.dim() == 2 else (x.unsqueeze(0), False)


class LSTMCell(nn.Module):
    """Drop-in for ``nn.LSTMCell``: ``forward(x (B, I), (h, c) or None) -> (h, c)``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_uniform(self, self.hidden_size)

    def forward(self, x: Tensor, state: LSTMState | None = None) -> LSTMState:
        x, batched = _batch_input(x, self.input_size, "LSTMCell")
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            h, c = zeros, zeros
        else:
            h, c = state
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        x_proj = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 4H)
        h, c = lstm_cell(x_proj, h, c, self.weight_hh, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class GRUCell(nn.Module):
    """Drop-in for ``nn.GRUCell``: ``forward(x (B, I), h or None) -> h``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_uniform(self, self.hidden_size)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        x, batched = _batch_input(x, self.input_size, "GRUCell")
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        elif not batched:
            h = h.unsqueeze(0)
        x_proj = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 3H)
        h = gru_cell(x_proj, h, self.weight_hh, self.bias_hh)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class MogrifierMatrix(nn.Module):
    """A bias-free linear map ``in_features -> out_features``, full rank or ``left @ right``."""

    def __init__(self, in_features: int, out_features: int, rank: int | None = None) -> None:
        super().__init__()
        check_sizes(in_features=in_features, out_features=out_features, rank=rank)
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        if rank is None:
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
        else:
            self.left = nn.Parameter(torch.empty(out_features, rank))
            self.right = nn.Parameter(torch.empty(rank, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.rank is None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.weight.uniform_(-bound, bound)
            else:
                self.right.uniform_(
                    -1.0 / math.sqrt(self.in_features), 1.0 / math.sqrt(self.in_features)
                )
                self.left.uniform_(-1.0 / math.sqrt(self.rank), 1.0 / math.sqrt(self.rank))

    def forward(self, v: Tensor) -> Tensor:
        # v: (B, in) -> (B, out)
        if self.rank is None:
            return v @ self.weight.t()
        return (v @ self.right.t()) @ self.left.t()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}"


def build_mogrifier(
    input_size: int, hidden_size: int, rounds: int, rank: int | None
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``(mog_q, mog_r)`` for ``rounds`` rounds: ceil(r/2) Q's (h -> x), floor(r/2) R's (x -> h)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}")
    check_sizes(rank=rank)
    mog_q = nn.ModuleList(
        MogrifierMatrix(hidden_size, input_size, rank) for _ in range((rounds + 1) // 2)
    )
    mog_r = nn.ModuleList(
        MogrifierMatrix(input_size, hidden_size, rank) for _ in range(rounds // 2)
    )
    return mog_q, mog_r


def mogrify(
    x: Tensor, h: Tensor, mog_q: nn.ModuleList, mog_r: nn.ModuleList
) -> tuple[Tensor, Tensor]:
    """Mutually gate x (B, I) and h (B, H): round 1 updates x from h, round 2 h from x, ..."""
    for k in range(len(mog_q) + len(mog_r)):
        if k % 2 == 0:  # rounds 1, 3, 5, ...
            x = 2.0 * torch.sigmoid(mog_q[k // 2](h)) * x
        else:  # rounds 2, 4, ...
            h = 2.0 * torch.sigmoid(mog_r[k // 2](x)) * h
    return x, h


class MogrifierLSTMCell(nn.Module):
    """Mogrifier LSTM step (Melis et al. 2020); ``rounds=0`` is a plain ``LSTMCell``.

    LSTM parameters are named as in ``nn.LSTMCell``; mogrifier matrices are
    ``mog_q.{j}`` / ``mog_r.{j}`` (see the module docstring). ``rank`` makes every
    mogrifier matrix low rank.
    """

    def __init__(
        self, input_size: int, hidden_size: int, rounds: int = 5, rank: int | None = None
    ) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.rounds = rounds
        self.rank = rank
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.mog_q, self.mog_r = build_mogrifier(input_size, hidden_size, rounds, rank)
        reset_uniform(self, hidden_size)

    def forward(self, x: Tensor, state: LSTMState | None = None) -> LSTMState:
        x, batched = _batch_input(x, self.input_size, "MogrifierLSTMCell")
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            h, c = zeros, zeros
        else:
            h, c = state
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        x, h = mogrify(x, h, self.mog_q, self.mog_r)
        x_proj = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 4H)
        h, c = lstm_cell(x_proj, h, c, self.weight_hh, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, rounds={self.rounds}, rank={self.rank}"
