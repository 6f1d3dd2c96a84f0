"""AWD-LSTM regularizers (Merity et al. 2017), as plain functions.

Every dropout here draws its mask with `dropout_mask`; what differs is the
shape of the mask, i.e. what one dropped unit is:

    dropout             mask like x     every element on its own
    locked dropout      mask (1, B, H)  one mask per sequence, shared by every time step
    embedding dropout   mask (V, 1)     a dropped word loses its whole vector, wherever it occurs
    weight drop         mask like W_hh  DropConnect on the hidden-to-hidden weights

Weight drop is functional: the dropped matrix is computed on every forward and
handed to the layer with `torch.func.functional_call`, so the module's
registered parameters, its state dict and its optimizer entries never change.
This works for any layer that reads `weight_hh_l0` at call time (nn.LSTM,
nn.GRU, and the hand-written layers of nn/manual/).

AR and TAR are loss terms computed from what the model returns; they hold no
state. Variable-length BPTT draws window lengths from an explicit generator so
a trainer can checkpoint its state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

WEIGHT_HH = "weight_hh_l0"


# Masks are drawn from 16-bit random numbers: four per 64-bit draw of the generator.
# On CPU `bernoulli_` draws one number per element: `F.dropout` of a (35, 20, 650)
# activation takes 7.7 ms against 0.9 ms for this (benchmarks/bench_ops.py, AMD EPYC,
# 2 threads). The drop probability is rounded to a multiple of 1/65536 (at most
# 65535/65536) and the scale uses the rounded value, so E[mask] = 1 exactly.
_LEVELS = 1 << 16
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def dropout_mask(like: Tensor, p: float) -> Tensor:
    """A mask shaped like `like`: 0 with probability p, else 1/(1-p) (so E[mask] = 1)."""
    if not (0.0 <= p < 1.0):
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = like.numel()
    words = torch.randint(
        _INT64_MIN, _INT64_MAX, ((n + 3) // 4,), dtype=torch.int64, device=like.device
    )
    u = words.view(torch.int16)[:n].view(like.shape)  # uniform on [-2^15, 2^15)
    dropped_levels = min(round(p * _LEVELS), _LEVELS - 1)
    keep = u >= dropped_levels - _LEVELS // 2  # P(keep) = 1 - dropped_levels / 2^16
    return keep.to(like.dtype).mul_(_LEVELS / (_LEVELS - dropped_levels))


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Standard (per-element) dropout: x * dropout_mask(x, p) in training, x otherwise."""
    if not training or p == 0.0:
        return x
    return x * dropout_mask(x, p)


def locked_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Variational dropout on x (T, B, H): one mask per sequence, the same at every step."""
    if not training or p == 0.0:
        return x
    return x * dropout_mask(x[:1], p)  # mask (1, B, H), broadcast over T


def embedding_dropout(
    embedding: nn.Embedding, tokens: Tensor, p: float, training: bool = True
) -> Tensor:
    """Look up tokens (T, B) -> (T, B, E) in a weight whose rows (words) are dropped with prob p.

    Every occurrence of a dropped word in the batch gets the zero vector; kept
    rows are scaled by 1/(1-p). The module's weight itself is not modified.
    """
    weight = embedding.weight  # (V, E)
    if training and p > 0.0:
        weight = weight * dropout_mask(weight[:, :1], p)  # mask (V, 1)
    return F.embedding(
        tokens,
        weight,
        embedding.padding_idx,
        embedding.max_norm,
        embedding.norm_type,
        embedding.scale_grad_by_freq,
        embedding.sparse,
    )


def weight_dropped_call(
    layer: nn.Module, x: Tensor, hx: Any, p: float, training: bool = True
) -> tuple[Tensor, Any]:
    """Call `layer(x, hx)` with DropConnect on its `weight_hh_l0` (train mode, p > 0).

    The dropped weight is a fresh tensor each call; gradients flow to the
    layer's own parameter through the mask.
    """
    if not training or p == 0.0:
        return layer(x, hx)
    weight = getattr(layer, WEIGHT_HH)  # (G*H, H)
    dropped = weight * dropout_mask(weight, p)  # (G*H, H)
    return functional_call(layer, {WEIGHT_HH: dropped}, (x, hx))


def activation_regularization(dropped_output: Tensor, alpha: float) -> Tensor:
    """AR: alpha * mean(h^2) over the last layer's output after dropout (T, B, H)."""
    if alpha == 0.0:
        return dropped_output.new_zeros(())
    return alpha * dropped_output.float().pow(2).mean()


def temporal_activation_regularization(output: Tensor, beta: float) -> Tensor:
    """TAR: beta * mean((h_t - h_{t-1})^2) over the last layer's output before dropout (T, B, H)."""
    if beta == 0.0 or output.size(0) < 2:
        return output.new_zeros(())
    h = output.float()
    return beta * (h[1:] - h[:-1]).pow(2).mean()


# --- variable-length BPTT ------------------------------------------------------------

VBPTT_P_FULL = 0.95  # probability of centring the length on bptt (else on bptt / 2)
VBPTT_STD = 5.0
VBPTT_MIN = 5
VBPTT_MAX_DELTA = 20  # cap at bptt + 20 (4 standard deviations) to bound memory


def sample_bptt(bptt: int, generator: torch.Generator) -> int:
    """One window length: centre bptt (p=0.95) or bptt/2, then ~ N(centre, 5), in [5, bptt+20].

    Draws exactly two numbers from `generator` per call, so its state is all a
    checkpoint needs to reproduce the sequence.
    """
    u = torch.rand((), generator=generator).item()
    z = torch.randn((), generator=generator).item()
    centre = bptt if u < VBPTT_P_FULL else bptt / 2
    length = math.floor(centre + VBPTT_STD * z)
    return int(min(max(VBPTT_MIN, length), bptt + VBPTT_MAX_DELTA))
