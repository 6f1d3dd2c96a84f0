"""Decoder matmul + softmax cross-entropy as one autograd node (the full-softmax training loss).

`F.cross_entropy(linear(x).float(), y)` walks the (N, V) scores many times: a cast to
fp32, log_softmax, a zero-filled gradient, the scatter of the targets, log_softmax's
backward and a cast back for the matmuls. Here the forward takes each block of rows
through one fused softmax while it is in cache and leaves behind what the backward
needs, the gradient of the scores `softmax - onehot` (in the matmul dtype), in the
scores' own buffer; the backward is then just the two matmuls (and a vector-matrix
product for the bias), with the incoming per-row gradient applied to the small
operands. Softmax arithmetic is fp32 whatever the matmul dtype.

Memory: one (N, V) buffer in the matmul dtype (the scores, then their gradient), the
same as the plain path's autocast output, without its fp32 copies.

When no gradient is wanted (evaluation, `torch.inference_mode`), `_nll_only` runs
instead: one matmul per chunk of rows (at most `MAX_LOGITS` scores at once, so a huge
vocabulary is scored in bounded memory), then per block of rows an fp32 cross-entropy
while the block is in cache, and no softmax gradient. Measured against alternatives
for (350 | 3200, 650) x (650, 10k): block-wise matmuls with `torch.logsumexp` were
1.2-1.4x slower, the plain `F.cross_entropy(linear(x).float())` the same at 350 rows
and 1.6x slower at 3200 in bf16.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import bf16_gemm, shadows
from lstmlm.nn.manual.common import needs_grad
from lstmlm.nn.tied import Mailbox

ROWS_PER_BLOCK = 64  # (64, 10k) fp32 is 2.5 MB: stays in cache while a block is worked on
# Inference scores at most this many logits at once (64 MB in fp32), so evaluating a
# 540k-word vocabulary takes chunks of 31 rows, not one (N, V) buffer of gigabytes.
MAX_LOGITS = 2**24


def _scores(xm: Tensor, wm: Tensor, bias: Tensor | None) -> Tensor:
    """xm (N, D) @ wm.T (+ bias, added before the one rounding to the matmul dtype): (N, V)."""
    if bias is None:
        return xm @ wm.t()
    return torch.addmm(bias.to(wm.dtype), xm, wm.t())


def transposed_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """weight (V, D) as a contiguous (D, V) copy in `dtype`, kept while the weight is
    unchanged (see nn/manual/shadows.py).

    Why: oneDNN's bf16 GEMM with AMX ran the evaluation decoder's (3200, 650) x (650, 10k)
    in 37 ms from a (D, V) weight against 56 ms from the (V, D) one transposed on the fly
    (Intel Xeon, 2 cores; in fp32 the transposed view is the faster one, so only
    lower-precision matmuls use this). Making the copy costs ~14 ms, so it pays only when
    kept across calls, as in evaluation, where the weight does not change.
    """
    return shadows.packed(weight, f"transposed {dtype}", partial(_transposed, dtype=dtype), True)


def _transposed(weight: Tensor, dtype: torch.dtype) -> Tensor:
    return weight.to(dtype).t().contiguous()  # (D, V)


def _nll_only(
    x: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, mm_dtype: torch.dtype
) -> Tensor:
    """The forward of _LinearCrossEntropy without what its backward needs: NLL (N,) fp32.

    The scores are made for a chunk of rows at a time, at most `MAX_LOGITS` of them (at
    least one row), so memory stays bounded whatever N and V; each row's scores are the
    same whichever chunk holds it. bf16 matmuls run on the C GEMM from a kept packed copy
    of the weight, as the training path does (the same scores); elsewhere a low-precision
    matmul reads the kept (D, V) copy, the faster GEMM layout (see transposed_weight)."""
    xm = x.to(mm_dtype)
    if mm_dtype == torch.bfloat16 and bf16_gemm.usable(x, weight):
        return _nll_on_kernel(xm, weight, bias, targets)
    if mm_dtype == torch.float32 or weight.dtype == mm_dtype:
        wm = weight.to(mm_dtype)

        def scores_of(rows: Tensor) -> Tensor:
            return _scores(rows, wm, bias)

    else:
        wt = transposed_weight(weight, mm_dtype)  # (D, V)

        def scores_of(rows: Tensor) -> Tensor:
            return rows @ wt if bias is None else torch.addmm(bias.to(mm_dtype), rows, wt)

    nll = torch.empty(x.size(0), dtype=torch.float32, device=x.device)  # (N,)
    chunk = max(1, MAX_LOGITS // max(weight.size(0), 1))
    for first in range(0, x.size(0), chunk):
        scores = scores_of(xm[first : first + chunk])  # (n, V) in mm_dtype
        for start in range(0, scores.size(0), ROWS_PER_BLOCK):
            rows = slice(start, start + ROWS_PER_BLOCK)
            at = slice(first + start, first + min(start + ROWS_PER_BLOCK, scores.size(0)))
            nll[at] = F.cross_entropy(scores[rows].float(), targets[at], reduction="none")
    return nll


def _nll_on_kernel(xm: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    """_nll_only on the C kernels: the GEMM from the kept packed weight with the softmax
    folded in (bf16_gemm.matmul_xent: the training path's numbers, no (N, V) buffer)."""
    packed = bf16_gemm.pack_weight(weight, transpose=True, keep_copy=True)
    return bf16_gemm.matmul_xent(bf16_gemm.rows(xm), packed, bias, targets)  # (N,)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        mm_dtype: torch.dtype,
        mailbox: Mailbox | None,
    ) -> Tensor:
        xm = x.to(mm_dtype)
        ctx.mailbox = mailbox
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype)
        ctx.kernel = mm_dtype == torch.bfloat16 and bf16_gemm.usable(x, weight)
        if ctx.kernel:  # the C kernels: GEMM from the fp32 weight, loss, gradient
            wt = bf16_gemm.pack_weight(weight, transpose=True)  # B = weight.T (D, V)
            scores = bf16_gemm.matmul(bf16_gemm.rows(xm), wt, mm_dtype, bias)  # (N, V)
            nll, grad_t = bf16_gemm.softmax_xent(scores, targets, grad=True)
            assert grad_t is not None
            ctx.save_for_backward(xm, weight, scores, grad_t.data)  # scores: now the gradient
            return nll
        wm = weight.to(mm_dtype)
        scores = _scores(xm, wm, bias)  # (N, V) in mm_dtype; becomes the gradient below
        nll = torch.empty(x.size(0), dtype=torch.float32, device=x.device)  # (N,)
        for start in range(0, x.size(0), ROWS_PER_BLOCK):
            block = scores[start : start + ROWS_PER_BLOCK]  # (n, V), a view
            y = targets[start : start + ROWS_PER_BLOCK].unsqueeze(1)  # (n, 1)
            top = block.amax(dim=1, keepdim=True)  # (n, 1)
            p = torch.softmax(block, dim=1, dtype=torch.float32)  # (n, V), one fused op
            # NLL = logsumexp - s_y = (top - s_y) + log Z, and the largest probability is
            # exactly 1 / Z: exact even where p_y underflows, inf/NaN when the scores are.
            nll_block = top.float() - block.gather(1, y).float() - p.amax(1, keepdim=True).log()
            nll[start : start + y.size(0)] = nll_block.squeeze(1)
            p.scatter_add_(1, y, p.new_full(y.shape, -1.0))  # softmax - onehot
            block.copy_(p)
        ctx.save_for_backward(xm, wm, scores)
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_nll: Tensor) -> tuple[Tensor | None, ...]:
        d_x, d_w, d_b = (_backward_on_kernel if ctx.kernel else _backward)(ctx, d_nll)
        if ctx.mailbox is not None:  # tied weights: the embedding's lookup completes d_w
            ctx.mailbox.grad, d_w = d_w, None
        return d_x, d_w, d_b, None, None, None


def _backward(ctx: Any, d_nll: Tensor) -> tuple[Tensor | None, ...]:
    """_LinearCrossEntropy's backward on torch: d_x, d_weight, d_bias."""
    xm, wm, grad = ctx.saved_tensors  # grad: d nll_i / d scores_i, (N, V)
    # d scores = grad * d_nll[:, None]; the row scale goes onto the small operands
    # instead, so no second (N, V) buffer is written.
    x_dtype, w_dtype = ctx.dtypes
    d = d_nll.unsqueeze(1)  # (N, 1) fp32
    d_x = ((grad @ wm).float() * d).to(x_dtype) if ctx.needs_input_grad[0] else None
    d_w = None
    if ctx.needs_input_grad[1]:
        d_w = (grad.t() @ (xm.float() * d).to(grad.dtype)).to(w_dtype)  # (V, D)
    d_b = None
    if ctx.has_bias:
        d_b = (d.t().to(grad.dtype) @ grad).squeeze(0).to(w_dtype)  # (V,)
    return d_x, d_w, d_b


def _backward_on_kernel(ctx: Any, d_nll: Tensor) -> tuple[Tensor | None, ...]:
    """_LinearCrossEntropy's backward on the C GEMM (bf16_gemm.py): d_x with the row scale
    d_nll applied to its fp32 accumulators, and the bias's gradient as one more column of
    the weight's product (B = [x * d, d]), whose first operand, the gradient's transpose,
    the forward's softmax_xent laid out."""
    xm, weight, grad, grad_t = ctx.saved_tensors  # grad (N, V); grad_t: its transpose
    x_dtype, w_dtype = ctx.dtypes
    d = d_nll.float().unsqueeze(1)  # (N, 1)
    d_x = d_w = d_b = None
    if ctx.needs_input_grad[0]:
        d_x = bf16_gemm.matmul(bf16_gemm.rows(grad), bf16_gemm.pack_weight(weight), row_scale=d_nll)
        d_x = d_x.to(x_dtype)  # (N, D)
    if ctx.needs_input_grad[1] or ctx.has_bias:
        right = xm.float() * d  # (N, D)
        if ctx.has_bias:
            right = torch.cat((right, d), dim=1)  # (N, D + 1)
            d_b = torch.empty(grad.size(1))  # (V,) fp32
        g_t = bf16_gemm.Left(grad_t, grad.size(1), grad.size(0), 0)  # grad.T (V, N)
        d_w = bf16_gemm.matmul(g_t, bf16_gemm.pack(right), last_column=d_b).to(w_dtype)
        d_b = None if d_b is None else d_b.to(w_dtype)
    return d_x, d_w, d_b


def linear_cross_entropy(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    reduction: str = "mean",
    mm_dtype: torch.dtype | None = None,
    mailbox: Mailbox | None = None,
) -> Tensor:
    """NLL of `targets` (N,) under softmax(x @ weight.T + bias), x (N, D), weight (V, D).
    With a `mailbox`, weight's gradient is left there instead (nn/tied.py).

    Equal to `F.cross_entropy(F.linear(x, weight, bias).float(), targets, reduction=...)`
    (fp32 softmax; the matmuls in `mm_dtype`, default x's dtype). reduction: mean | sum | none.
    """
    if x.dim() != 2 or targets.shape != x.shape[:1]:
        raise ValueError(
            f"expected x (N, D) and targets (N,), got {tuple(x.shape)}, {tuple(targets.shape)}"
        )
    mm_dtype = mm_dtype or x.dtype
    if needs_grad(x, weight, bias):
        nll = _LinearCrossEntropy.apply(x, weight, bias, targets, mm_dtype, mailbox)  # (N,)
    else:
        nll = _nll_only(x, weight, bias, targets, mm_dtype)  # (N,)
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
