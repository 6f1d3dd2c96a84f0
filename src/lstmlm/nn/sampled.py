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

Only training uses it: the loss it returns is not the model's NLL (it is lower), so
evaluation and generation keep the exact softmax over the whole vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

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
) -> Tensor:
    """The sampled-softmax loss per row, (N,) fp32.

    x (N, D) features, weight (V, D), bias (V,) or None, targets (N,), candidates (M,)
    unique ids, of which only the first `used` take part (default all; the rest are
    padding, see `padded`), log_counts (V,) the log expected count of each id in the
    sample. The matmul runs in `mm_dtype` (bf16 under autocast), the softmax in fp32.
    """
    dtype = mm_dtype or x.dtype
    m = candidates.numel()
    # One gather for both (its backward fills one (V, D) gradient, not two).
    rows = weight.index_select(0, torch.cat((candidates, targets)))  # (M + N, D)
    w_c, w_t = rows[:m], rows[m:]  # (M, D), (N, D)
    s_c = (x.to(dtype) @ w_c.to(dtype).t()).float()  # (N, M)
    s_t = (x.float() * w_t.float()).sum(1)  # (N,) the target's own score, in fp32
    if bias is not None:
        s_c = s_c + bias.index_select(0, candidates)
        s_t = s_t + bias.index_select(0, targets)
    s_c = s_c - log_counts.index_select(0, candidates)
    s_t = s_t - log_counts.index_select(0, targets)
    hit = candidates.unsqueeze(0) == targets.unsqueeze(1)  # (N, M) a candidate is the target
    if used is not None and used < m:
        hit[:, used:] = True  # padding columns take no part
    s_c = s_c.masked_fill(hit, -math.inf)
    scores = torch.cat((s_t.unsqueeze(1), s_c), 1)  # (N, 1 + M), the target first
    return torch.logsumexp(scores, 1) - s_t  # (N,)
