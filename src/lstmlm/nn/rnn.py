"""A stack of single-layer recurrent modules, time-first, state in and out.

Each layer is its own `nn.LSTM`/`nn.GRU` (num_layers=1), so layers may differ
in size and anything between layers (dropout, regularizers) is explicit.
Parameter names inside a layer are PyTorch's (`weight_ih_l0`, ...).

AWD-LSTM regularization lives here as calls, not as module surgery: locked
dropout between layers (`dropout_h`) and weight drop on each layer's
`weight_hh_l0` (`wdrop`, through `torch.func.functional_call`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lstmlm.nn.manual import ManualGRU, ManualLSTM, MogrifierLSTM
from lstmlm.nn.regularize import dropout, locked_dropout, weight_dropped_call
from lstmlm.nn.step import cell_step, has_cell_step

# Per layer: (h, c) for LSTM, (h,) for GRU; each (1, B, H).
LayerState = tuple[Tensor, ...]
State = list[LayerState]
LayerStep = Callable[[Tensor, State], tuple[Tensor, State]]


def make_layer(
    kind: str,
    cell: str,
    input_size: int,
    hidden_size: int,
    mogrifier_rounds: int = 5,
    mogrifier_rank: int | None = None,
) -> nn.Module:
    """One recurrent layer with nn.LSTM's call signature and parameter names.

    cell "fused" is torch's nn.LSTM/nn.GRU; "manual" is lstmlm's hand-written layer
    (whole-window autograd Function, bf16 matmuls under a bf16 autocast). The
    Mogrifier LSTM exists only as a hand-written layer.
    """
    if kind == "mogrifier":
        return MogrifierLSTM(input_size, hidden_size, mogrifier_rounds, mogrifier_rank)
    if cell == "fused":
        if kind == "lstm":
            return nn.LSTM(input_size, hidden_size)
        if kind == "gru":
            return nn.GRU(input_size, hidden_size)
    elif cell == "manual":
        if kind == "lstm":
            return ManualLSTM(input_size, hidden_size)
        if kind == "gru":
            return ManualGRU(input_size, hidden_size)
    else:
        raise ValueError(f"unknown cell implementation {cell!r}")
    raise ValueError(f"unknown rnn kind {kind!r}")


def has_cell_state(kind: str) -> bool:
    return kind in ("lstm", "mogrifier")


class RNNStack(nn.Module):
    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_sizes: Sequence[int],
        cell: str = "fused",
        dropout: float = 0.0,
        dropout_h: float = 0.0,
        wdrop: float = 0.0,
        mogrifier_rounds: int = 5,
        mogrifier_rank: int | None = None,
    ):
        super().__init__()
        self.kind = kind
        self.hidden_sizes = list(hidden_sizes)
        sizes = [input_size, *self.hidden_sizes]
        self.layers = nn.ModuleList(
            make_layer(kind, cell, sizes[i], sizes[i + 1], mogrifier_rounds, mogrifier_rank)
            for i in range(len(self.hidden_sizes))
        )
        self.dropout = dropout  # standard dropout between layers
        self.dropout_h = dropout_h  # locked dropout between layers
        self.wdrop = wdrop  # DropConnect on weight_hh_l0

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        n = 2 if has_cell_state(self.kind) else 1
        return [
            tuple(torch.zeros(1, batch_size, h, device=device) for _ in range(n))
            for h in self.hidden_sizes
        ]

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State, list[Tensor]]:
        """x (T, B, I) -> last layer's output (T, B, H_last), new state, each layer's output."""
        new_state: State = []
        outputs: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = dropout(x, self.dropout, self.training)
                x = locked_dropout(x, self.dropout_h, self.training)  # (T, B, H_{i-1})
            hx = state[i] if has_cell_state(self.kind) else state[i][0]
            x, hx = weight_dropped_call(layer, x, hx, self.wdrop, self.training)  # (T, B, H_i)
            new_state.append(tuple(hx) if has_cell_state(self.kind) else (hx,))
            outputs.append(x)
        return x, new_state, outputs

    def stepper(self, precision: str = "fp32") -> LayerStep | None:
        """`(x (B, I), state) -> (last layer's h (B, H_last), state)` for one time step of
        the whole stack (eval mode: no dropout), or None when a layer has no one-step form
        (`nn.step.has_cell_step`)."""
        if not all(has_cell_step(layer) for layer in self.layers):
            return None
        cells = [cell_step(layer, precision) for layer in self.layers]

        def step(x: Tensor, state: State) -> tuple[Tensor, State]:
            new: State = []
            for cell, layer_state in zip(cells, state, strict=True):
                out = cell(x, tuple(s[0] for s in layer_state))  # (h,) or (h, c), (B, H)
                new.append(tuple(s.unsqueeze(0) for s in out))
                x = out[0]  # (B, H)
            return x, new

        return step


def detach_state(state: State) -> State:
    return [tuple(t.detach() for t in layer) for layer in state]
