"""Decoder matmul + softmax cross-entropy as one autograd node (the full-softmax training loss).

`F.cross_entropy(linear(x).float(), y)` walks the (N, V) scores many times: a cast to
fp32, log_softmax, a zero-filled gradient, the scatter of the targets, log_softmax's
backward and a cast back for the matmuls. Here the forward takes each block of rows
once through max / exp / sum while it is in cache and leaves behind what the backward
needs, the gradient of the scores `softmax - onehot` (in the matmul dtype), in the
scores' own buffer; the backward is then just the two matmuls (and a sum for the bias),
scaled by the incoming gradient. Softmax arithmetic is fp32 whatever the matmul dtype.

Memory: one (N, V) buffer in the matmul dtype (the scores, then their gradient), the
same as the plain path's autocast output, without its fp32 copies.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

ROWS_PER_BLOCK = 64  # (64, 10k) fp32 is 2.5 MB: stays in cache through the five passes


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        mm_dtype: torch.dtype,
    ) -> Tensor:
        xm, wm = x.to(mm_dtype), weight.to(mm_dtype)
        scores = xm @ wm.t()  # (N, V) in mm_dtype; becomes the gradient below
        if bias is not None:
            scores += bias.to(mm_dtype)
        nll = torch.empty(x.size(0), dtype=torch.float32, device=x.device)  # (N,)
        for start in range(0, x.size(0), ROWS_PER_BLOCK):
            block = scores[start : start + ROWS_PER_BLOCK]  # (n, V), a view
            y = targets[start : start + ROWS_PER_BLOCK].unsqueeze(1)  # (n, 1)
            s = block.float()  # (n, V)
            s -= s.amax(dim=1, keepdim=True)
            picked = s.gather(1, y).squeeze(1)  # (n,) shifted score of the target
            s.exp_()
            total = s.sum(dim=1, keepdim=True)  # (n, 1)
            nll[start : start + y.size(0)] = total.squeeze(1).log() - picked
            s /= total  # softmax
            s.scatter_add_(1, y, s.new_full(y.shape, -1.0))  # softmax - onehot
            block.copy_(s)
        ctx.save_for_backward(xm, wm, scores)
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype)
        return nll

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, d_nll: Tensor
    ) -> tuple[Tensor | None, ...]:
        xm, wm, grad = ctx.saved_tensors  # grad: d nll_i / d scores_i, (N, V)
        g = grad * d_nll.to(grad.dtype).unsqueeze(1)  # (N, V)
        x_dtype, w_dtype = ctx.dtypes
        d_x = (g @ wm).to(x_dtype) if ctx.needs_input_grad[0] else None  # (N, D)
        d_w = (g.t() @ xm).to(w_dtype) if ctx.needs_input_grad[1] else None  # (V, D)
        d_b = g.sum(dim=0, dtype=torch.float32).to(w_dtype) if ctx.has_bias else None  # (V,)
        return d_x, d_w, d_b, None, None


def linear_cross_entropy(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    reduction: str = "mean",
    mm_dtype: torch.dtype | None = None,
) -> Tensor:
    """NLL of `targets` (N,) under softmax(x @ weight.T + bias), x (N, D), weight (V, D).

    Equal to `F.cross_entropy(F.linear(x, weight, bias).float(), targets, reduction=...)`
    (fp32 softmax; the matmuls in `mm_dtype`, default x's dtype). reduction: mean | sum | none.
    """
    if x.dim() != 2 or targets.shape != x.shape[:1]:
        raise ValueError(f"expected x (N, D) and targets (N,), got {tuple(x.shape)}, "
                         f"{tuple(targets.shape)}")
    nll = _LinearCrossEntropy.apply(x, weight, bias, targets, mm_dtype or x.dtype)  # (N,)
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
