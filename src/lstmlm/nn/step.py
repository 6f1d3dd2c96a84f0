"""One time step of a recurrent layer or of the decoder, for sampling token by token.

A fused `nn.LSTM`/`nn.GRU` call has a large fixed cost per call on CPU (tens of ms for a
650-unit layer here, whatever its length), which a token-by-token loop pays on every
token. For the layouts it knows (single-layer unidirectional fused layers with biases,
and lstmlm's hand-written LSTM/GRU, which have the same weights and equations) a step
here runs the layer's weights through `torch.lstm_cell` / `gru_cell` instead.

precision "bf16" runs the matmuls with bfloat16 copies of the weights, made when the
step function is made: one token's step reads every weight once, so halving their bytes
is the win at batch 1 (the samples then differ slightly from fp32 ones). States, gates
and biases stay fp32. `LanguageModel.stepper` puts these together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmlm.nn.manual import ManualGRU, ManualLSTM

CellStep = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]

# Layers a step runs with torch.lstm_cell / gru_cell. The hand-written ones have
# nn.LSTM's / nn.GRU's parameter names, gate order and equations (tests/nn/manual), so
# the same cell computes them, in fp32 whatever precision they were trained in.
_LSTMS = (nn.LSTM, ManualLSTM)


def has_cell_step(layer: nn.Module) -> bool:
    """Whether `cell_step` knows `layer` (else the caller runs the layer's forward)."""
    if type(layer) in (ManualLSTM, ManualGRU):
        return True  # always single-layer, unidirectional, time-first, with biases
    return bool(
        type(layer) in (nn.LSTM, nn.GRU)
        and layer.num_layers == 1
        and not layer.bidirectional
        and layer.bias
        and not layer.batch_first
        and getattr(layer, "proj_size", 0) == 0
    )


def cell_step(layer: nn.Module, precision: str = "fp32") -> CellStep:
    """One time step of a plain layer: `(x (B, I), (h,) or (h, c)) -> (h,) or (h, c)`.

    fp32: torch.lstm_cell / gru_cell on the layer's weights. bf16: the two matmuls with
    bfloat16 copies of the weights made here (fp32 accumulation), the gates in fp32.
    """
    w: tuple[Tensor, Tensor, Tensor, Tensor] = (
        layer.weight_ih_l0,
        layer.weight_hh_l0,
        layer.bias_ih_l0,
        layer.bias_hh_l0,
    )  # type: ignore[assignment]  # a layer's parameters, by nn.LSTM's names
    lstm = type(layer) in _LSTMS
    if precision != "bf16":
        if lstm:
            return lambda x, hx: torch.lstm_cell(x, hx, *w)
        return lambda x, hx: (torch.gru_cell(x, hx[0], *w),)
    w_ih, w_hh = (t.detach().to(torch.bfloat16) for t in w[:2])  # (G*H, I), (G*H, H)
    b_ih, b_hh = (t.detach() for t in w[2:])  # (G*H,)
    return _lstm_bf16(w_ih, w_hh, b_ih + b_hh) if lstm else _gru_bf16(w_ih, w_hh, b_ih, b_hh)


def _mm(a: Tensor, weight: Tensor) -> Tensor:
    return F.linear(a.to(torch.bfloat16), weight).float()  # (B, G*H)


def _lstm_bf16(w_ih: Tensor, w_hh: Tensor, bias: Tensor) -> CellStep:
    def step(x: Tensor, hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        h, c = hx
        i, f, g, o = (_mm(x, w_ih) + _mm(h, w_hh) + bias).chunk(4, 1)  # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    return step


def _gru_bf16(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> CellStep:
    def step(x: Tensor, hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (h,) = hx
        xr, xz, xn = (_mm(x, w_ih) + b_ih).chunk(3, 1)  # (B, H) each
        hr, hz, hn = (_mm(h, w_hh) + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)

    return step


def decoder_step(decoder: nn.Module, precision: str = "fp32") -> Callable[[Tensor], Tensor]:
    """`x (B, D) -> scores (B, V)` of the output head, for one position.

    bf16: the full softmax's product with a bfloat16 copy of its weight. fp32 on CPU: from
    a (D, V) copy of the weight, which runs a (1, D) x (D, V) product about 2x faster here
    than nn.Linear's (V, D). Any other head (adaptive softmax) is called as it is.
    """
    if not isinstance(decoder, nn.Linear):
        return decoder
    if precision == "bf16":
        w16 = decoder.weight.detach().to(torch.bfloat16)  # (V, D)
        b16 = decoder.bias.detach().to(torch.bfloat16)  # (V,)
        return lambda x: F.linear(x.to(torch.bfloat16), w16, b16).float()  # (B, V)
    if decoder.weight.device.type != "cpu":
        return decoder
    transposed = decoder.weight.detach().t().contiguous()  # (D, V)
    bias = decoder.bias.detach()  # (V,)
    return lambda x: torch.addmm(bias, x, transposed)  # (B, V)
