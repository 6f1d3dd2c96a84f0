"""The Mogrifier LSTM layer (Melis et al. 2020), called like a single-layer ``nn.LSTM``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmlm.nn.manual.cells import (
    LSTMState,
    build_mogrifier,
    mogrify,
    reset_uniform,
)
from lstmlm.nn.manual.common import (
    add_layer_parameters,
    split_input,
    state_in,
    state_out,
)


class MogrifierLSTM(nn.Module):
    """Single-layer Mogrifier LSTM (Melis et al. 2020), called like ``nn.LSTM``.

    LSTM parameters are named as in ``nn.LSTM`` (``weight_ih_l0``, ...); mogrifier
    matrices are ``mog_q.{j}`` / ``mog_r.{j}`` (see ``lstmlm.nn.manual.cells``), so the state
    dict loads into ``nn.LSTM`` only with ``strict=False``. ``rounds=0`` is a plain
    LSTM. x changes every step, so there is no window-wide input projection; each
    step does one matmul of ``[x, h]`` against ``[W_ih, W_hh]``. Plain autograd loop.
    """

    input_size: int
    hidden_size: int
    num_layers: int
    weight_ih_l0: nn.Parameter
    weight_hh_l0: nn.Parameter
    bias_ih_l0: nn.Parameter
    bias_hh_l0: nn.Parameter

    def __init__(
        self, input_size: int, hidden_size: int, rounds: int = 5, rank: int | None = None
    ) -> None:
        super().__init__()
        self.rounds = rounds
        self.rank = rank
        add_layer_parameters(self, input_size, hidden_size, 4)
        self.mog_q, self.mog_r = build_mogrifier(input_size, hidden_size, rounds, rank)
        reset_uniform(self, hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``nn.LSTM``."""

    def forward(self, x: Tensor, hx: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        x, batched = split_input(x, self.input_size, "MogrifierLSTM")
        T, B, _ = x.shape
        H = self.hidden_size
        h0_in, c0_in = (None, None) if hx is None else hx
        h = state_in(h0_in, batched, B, H, x, "MogrifierLSTM h")
        c = state_in(c0_in, batched, B, H, x, "MogrifierLSTM c")
        w_cat = torch.cat((self.weight_ih_l0, self.weight_hh_l0), dim=1).t()  # (I + H, 4H)
        bias = self.bias_ih_l0 + self.bias_hh_l0  # (4H,)
        outs = []
        for t in range(T):
            x_t, h = mogrify(x[t], h, self.mog_q, self.mog_r)  # (B, I), (B, H)
            gates = torch.addmm(bias, torch.cat((x_t, h), dim=1), w_cat)  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        out = torch.stack(outs)  # (T, B, H)
        if not batched:
            out = out.squeeze(1)
        return out, (state_out(h, batched), state_out(c, batched))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, rounds={self.rounds}, rank={self.rank}"
