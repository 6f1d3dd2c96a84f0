"""Sampled softmax: the full softmax's training loss on a sample of the vocabulary.

Jean et al. (2015, "On Using Very Large Target Vocabulary for Neural Machine
Translation") score each row's target and a shared sample of candidate words instead of
all V words. With candidates drawn from a proposal Q and each score corrected by the log
of its expected count, the softmax over (target, candidates) estimates the full
softmax's gradient; the decoder's matmuls shrink from V columns to about `samples`.

The proposal here is the log-uniform (Zipf) distribution over ids,

    Q(k) = log((k + 2) / (k + 1)) / log(V + 1),

which fits because vocabulary ids are frequency ranks (`Vocab.build`), so no counts are
needed. `samples` draws with replacement are made unique; a word is in the sample with
probability 1 - (1 - Q(k))^samples, and the log of that is subtracted from its score
(for the targets too). A candidate equal to a row's target is masked out of that row
(an "accidental hit"). The same estimator as TensorFlow's `sampled_softmax_loss` with
`remove_accidental_hits=True` and a unique log-uniform sampler.

The candidates' and targets' scores are one autograd node (`sampled_scores`) that makes
the weight's whole gradient in one (V, D) buffer; with tied weights it is left in the
lookup's mailbox (nn/tied.py), so one dense gradient is filled per step, not three
(index_select's, the embedding's, their sum). In bf16 on CPUs with AVX-512 BF16 the
whole loss is one node on the C kernels (`_SampledXent`: the GEMM with the corrections
added before its one rounding, the loss and its gradient in one pass over the (N, M)
scores). Together they took about 8% off a ptb-10min step on the 2-core AMD EPYC
(benchmarks/RESULTS.md round 13).

Only training uses it: the loss it returns is not the model's NLL (it is lower), so
evaluation and generation keep the exact softmax over the whole vocabulary.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import bf16_gemm
from lstmlm.nn.manual.common import needs_grad
from lstmlm.nn.tied import Mailbox

COLUMN_BUCKET = 64


def log_uniform_probs(vocab_size: int, device: torch.device) -> Tensor:
    """Q(k) = log((k + 2) / (k + 1)) / log(V + 1) for k in [0, V), float64 (V,)."""
    k = torch.arange(vocab_size, dtype=torch.float64, device=device)
    return torch.log1p(1.0 / (k + 1)) / math.log(vocab_size + 1)


def draw_candidates(
    vocab_size: int, samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """`samples` ids drawn with replacement from the log-uniform proposal, made unique:
    (M,) int64 with M <= samples. Inverse CDF: floor(exp(u log(V + 1))) - 1."""
    u = torch.rand(samples, dtype=torch.float64, generator=generator)
    ids = torch.exp(u * math.log(vocab_size + 1)).floor().long() - 1
    return torch.unique(ids.clamp_(0, vocab_size - 1))


def padded(candidates: Tensor, bucket: int = COLUMN_BUCKET) -> tuple[Tensor, int]:
    """The candidates (M,) padded with repeats of the first to a multiple of `bucket`,
    and M. The number of unique draws changes every step; padded, the step's buffers come
    in a few sizes the allocator reuses (unpadded, a PTB run's peak RSS grew from 0.54 to
    1.0 GB). `sampled_nll` masks the padding columns out."""
    m = candidates.numel()
    return torch.cat((candidates, candidates[:1].expand(-m % bucket))), m


def log_expected_count(probs: Tensor, samples: int) -> Tensor:
    """log P(id in a sample of `samples` draws) = log(1 - (1 - Q)^samples), fp32."""
    return torch.log(-torch.expm1(samples * torch.log1p(-probs))).float()


def sampled_nll(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    candidates: Tensor,
    log_counts: Tensor,
    mm_dtype: torch.dtype | None = None,
    used: int | None = None,
    mailbox: Mailbox | None = None,
) -> Tensor:
    """The sampled-softmax loss per row, (N,) fp32.

    x (N, D) features, weight (V, D), bias (V,) or None, targets (N,), candidates (M,)
    unique ids, of which only the first `used` take part (default all; the rest are
    padding, see `padded`), log_counts (V,) the log expected count of each id in the
    sample. The matmul runs in `mm_dtype` (bf16 under autocast), the softmax in fp32.
    With a `mailbox` (tied weights, nn/tied.py) the weight's gradient goes there.
    """
    dtype = mm_dtype or x.dtype
    used = candidates.numel() if used is None else used
    col = -log_counts.index_select(0, candidates)  # (M,) each column's own correction
    t_off = -log_counts.index_select(0, targets)  # (N,) and each row's target's
    hit = hit_columns(candidates[:used], targets, weight.size(0))  # (N,)
    if needs_grad(x, weight, bias) and dtype == torch.bfloat16 and bf16_gemm.usable(x, weight):
        nll: Tensor = _SampledXent.apply(
            x, weight, bias, candidates, targets, col, t_off, hit, used, mailbox
        )
        return nll
    s_c, s_t = sampled_scores(x, weight, candidates, targets, dtype, mailbox)  # (N, M), (N,)
    s_t = s_t + t_off
    if bias is not None:
        col = col + bias.index_select(0, candidates)
        s_t = s_t + bias.index_select(0, targets)
    col[used:] = -math.inf  # padding columns take no part
    s_c = s_c + col
    hit_row = (hit >= 0).nonzero().squeeze(1)
    s_c.index_put_((hit_row, hit[hit_row]), torch.tensor(-math.inf, device=x.device))
    return torch.logaddexp(torch.logsumexp(s_c, 1), s_t) - s_t  # (N,)


def hit_columns(candidates: Tensor, targets: Tensor, vocab_size: int) -> Tensor:
    """Each row's target's column among the unique `candidates` (M,), -1 where it is not
    one: (N,) int64, through an id -> column table. Such a candidate (an accidental hit)
    takes no part in its row: the target is scored once, as the target."""
    column = torch.full((vocab_size,), -1, dtype=torch.long, device=targets.device)  # (V,)
    column[candidates] = torch.arange(candidates.numel(), device=targets.device)
    return column[targets]


def sampled_scores(
    x: Tensor,
    weight: Tensor,
    candidates: Tensor,
    targets: Tensor,
    mm_dtype: torch.dtype,
    mailbox: Mailbox | None = None,
) -> tuple[Tensor, Tensor]:
    """x (N, D), weight (V, D) -> each row's scores of the candidates (N, M), matmul in
    `mm_dtype`, and of its own target (N,) in fp32; both returned in fp32.

    One autograd node that makes the weight's gradient in one (V, D) buffer (the
    candidates' and the targets' rows added into it), left in `mailbox` when one is given.
    """
    out: tuple[Tensor, Tensor] = _SampledScores.apply(
        x, weight, candidates, targets, mm_dtype, mailbox
    )
    return out


def _rows_and_target_scores(
    x: Tensor, weight: Tensor, candidates: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The candidates' rows (M, D) and the targets' rows (N, D) of weight, in one gather,
    and each row of x's score of its own target (N,), in fp32."""
    m = candidates.numel()
    rows = weight.index_select(0, torch.cat((candidates, targets)))  # (M + N, D)
    w_c, w_t = rows[:m], rows[m:]  # (M, D), (N, D)
    return w_c, w_t, (x.float() * w_t.float()).sum(1)


class _SampledScores(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        candidates: Tensor,
        targets: Tensor,
        mm_dtype: torch.dtype,
        mailbox: Mailbox | None,
    ) -> tuple[Tensor, Tensor]:
        w_c, w_t, s_t = _rows_and_target_scores(x, weight, candidates, targets)
        xm, w_cm = x.to(mm_dtype), w_c.to(mm_dtype)
        s_c = (xm @ w_cm.t()).float()  # (N, M)
        ctx.save_for_backward(x, xm, w_cm, w_t, candidates, targets)
        ctx.mailbox, ctx.shape = mailbox, weight.shape
        return s_c, s_t

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_sc: Tensor, d_st: Tensor) -> tuple[Tensor | None, ...]:
        x, xm, w_cm, w_t, candidates, targets = ctx.saved_tensors
        d_scm = d_sc.to(w_cm.dtype)  # (N, M)
        d_x = (d_scm @ w_cm).float() + d_st.unsqueeze(1) * w_t.float()  # (N, D)
        d_w = _rows_into(
            w_t, ctx.shape, (candidates, d_scm.t() @ xm), (targets, d_st[:, None] * x.float())
        )
        return d_x.to(x.dtype), _unless_mailed(d_w, ctx.mailbox), None, None, None, None


class _SampledXent(torch.autograd.Function):
    """sampled_nll on the C kernels (bf16, CPUs with AVX-512 BF16): the candidates'
    scores from bf16_gemm with their corrections added before the one rounding, the loss
    and its gradient in one pass (bf16_gemm.sampled_xent), the backward's two products
    on the GEMM; the weight's gradient in one (V, D) buffer, as _SampledScores makes it."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        candidates: Tensor,
        targets: Tensor,
        col: Tensor,
        t_off: Tensor,
        hit: Tensor,
        used: int,
        mailbox: Mailbox | None,
    ) -> Tensor:
        w_c, w_t, extra = _rows_and_target_scores(x, weight, candidates, targets)
        extra = extra + t_off  # (N,) each row's corrected target score
        if bias is not None:
            col = col + bias.index_select(0, candidates)
            extra = extra + bias.index_select(0, targets)
        xm = bf16_gemm.rows(x)  # bf16 (N, D)
        wt = bf16_gemm.pack(w_c, transpose=True)  # B = w_c.T (D, M)
        scores = bf16_gemm.matmul(xm, wt, torch.bfloat16, bias=col)  # (N, M)
        nll, d_extra, grad_t = bf16_gemm.sampled_xent(scores, hit, extra, used)
        ctx.save_for_backward(x, xm.data, w_c, w_t, scores, grad_t.data, d_extra)
        ctx.ids, ctx.mailbox, ctx.has_bias = (candidates, targets), mailbox, bias is not None
        ctx.shape = weight.shape
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_nll: Tensor) -> tuple[Tensor | None, ...]:
        x, xm, w_c, w_t, grad, grad_t, d_extra = ctx.saved_tensors  # grad (N, M): d nll / d s
        candidates, targets = ctx.ids
        d = d_nll.float()  # (N,)
        d_t = (d * d_extra).unsqueeze(1)  # (N, 1) the gradient of each target's score
        g = bf16_gemm.rows(grad)
        d_x = bf16_gemm.matmul(g, bf16_gemm.pack(w_c), row_scale=d) + d_t * w_t.float()
        right = xm.float() * d.unsqueeze(1)  # (N, D)
        d_bc = torch.empty(grad.size(1)) if ctx.has_bias else None  # (M,)
        if d_bc is not None:
            right = torch.cat((right, d.unsqueeze(1)), 1)  # (N, D + 1): the bias's column
        g_t = bf16_gemm.Left(grad_t, grad.size(1), grad.size(0), 0)  # grad.T (M, N)
        d_wc = bf16_gemm.matmul(g_t, bf16_gemm.pack(right), last_column=d_bc)  # (M, D)
        d_w = _rows_into(w_t, ctx.shape, (candidates, d_wc), (targets, d_t * x.float()))
        d_b = None
        if d_bc is not None:
            d_b = _rows_into(w_t, ctx.shape[:1], (candidates, d_bc), (targets, d_t.squeeze(1)))
        return d_x.to(x.dtype), _unless_mailed(d_w, ctx.mailbox), d_b, *([None] * 7)


def _rows_into(like: Tensor, shape: torch.Size, *parts: tuple[Tensor, Tensor]) -> Tensor:
    """A zero gradient of `shape` ((V, D) or (V,)), `like`'s dtype and device, with each
    part's rows (n, ...) added at its ids (n,): the weight's one gradient, however many
    parts read it."""
    grad = like.new_zeros(shape)
    for ids, rows in parts:
        grad.index_add_(0, ids, rows.to(grad.dtype))
    return grad


def _unless_mailed(grad: Tensor, mailbox: Mailbox | None) -> Tensor | None:
    """The weight's gradient, or None after leaving it in `mailbox` (tied weights): the
    lookup's backward adds its rows and returns it (nn/tied.py)."""
    if mailbox is None:
        return grad
    mailbox.grad = grad
    return None
