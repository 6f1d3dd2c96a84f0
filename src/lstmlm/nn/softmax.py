"""Output heads: features (..., D) -> a distribution over the vocabulary (..., V).

Both heads offer the same three calls:

- `head(x)`: scores (..., V) whose `log_softmax` is the log-probabilities (the full
  softmax returns logits; the adaptive one returns the log-probabilities themselves,
  which `log_softmax` leaves unchanged, so code that reads logits stays exact);
- `head.log_probs(x)`: the log-probabilities (..., V), fp32;
- `head.loss(x, targets, reduction)`: the NLL of `targets`, fp32, without building more
  than it needs (the training path).

Adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs") splits
a frequency-ordered vocabulary at cutoffs c_1 < ... < c_n into a head over the shortlist
[0, c_1) plus one entry per tail cluster, and tail clusters [c_i, c_{i+1}) (c_{n+1} = V)
that see the features through a projection to D / div_value^i units:

    log p(w) = log p_head(w)                          for w < c_1
    log p(w) = log p_head(cluster i) + log p_i(w)     for c_i <= w < c_{i+1}

This is an exact, normalized distribution over all V tokens, not an approximation of
a full softmax: `log_probs` writes it out in full for evaluation and sampling, and
`loss` computes the same numbers for given targets, running each tail only on the
rows whose target falls in it. Cutoffs rely on ids being frequency ranks, which
`Vocab.build` guarantees (`<eos>`, `<unk>`, then by descending train frequency).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmlm.config import validate_cutoffs
from lstmlm.nn.linear_ce import linear_cross_entropy
from lstmlm.nn.sampled import (
    draw_candidates,
    log_expected_count,
    log_uniform_probs,
    padded,
    sampled_nll,
)
from lstmlm.nn.tied import Mailbox

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _reduce(nll: Tensor, reduction: str) -> Tensor:
    """Per-row NLL (N,) -> its mean, its sum, or itself ("none")."""
    if reduction == "none":
        return nll
    return nll.mean() if reduction == "mean" else nll.sum()


class FullSoftmax(nn.Linear):
    """One (V, D) matrix over the whole vocabulary: `head(x)` gives logits (..., V).

    A plain `nn.Linear` (same parameter names, so `decoder.weight` can be tied to the
    embedding and old checkpoints load) with the head interface added. With `samples`
    > 0, `loss` in training mode is the sampled softmax (sampled.py) over the targets and
    about that many drawn words; evaluation stays exact.
    """

    def __init__(self, in_size: int, vocab_size: int, samples: int = 0):
        super().__init__(in_size, vocab_size)
        if samples < 0:
            raise ValueError(f"--sampled-softmax must be >= 0, got {samples}")
        self.samples = samples
        self._log_counts: Tensor | None = None  # (V,) log expected count, made when needed

    def sampling(self) -> bool:
        """True when `loss` computes the sampled softmax (training, with a gradient)."""
        return self.samples > 0 and self.training and torch.is_grad_enabled()

    def log_probs(self, x: Tensor) -> Tensor:
        return F.log_softmax(self(x).float(), dim=-1)  # (..., V)

    def loss(
        self, x: Tensor, targets: Tensor, reduction: str = "mean", mailbox: Mailbox | None = None
    ) -> Tensor:
        """x (..., D), targets (...) -> NLL (fp32): a scalar, or (N,) with reduction none.

        One fused node (linear_ce.py): matmuls in the autocast dtype when under one. With a
        `mailbox` the weight's gradient goes there (tied weights, nn/tied.py). When
        `sampling()`, the sampled-softmax loss instead (sampled.py; not the model's NLL).
        """
        _check_reduction(reduction)
        device = x.device.type
        mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        if self.sampling():
            with torch.autocast(device, enabled=False):
                x2, t1 = x.reshape(-1, x.size(-1)), targets.reshape(-1)  # (N, D), (N,)
                nll = self._sampled_nll(x2, t1, mm_dtype, mailbox)
            return _reduce(nll, reduction)
        with torch.autocast(device, enabled=False):  # the dtype is explicit from here
            return linear_cross_entropy(
                x.reshape(-1, x.size(-1)),
                self.weight,
                self.bias,
                targets.reshape(-1),
                reduction,
                mm_dtype,
                mailbox,
            )

    def _sampled_nll(
        self, x: Tensor, targets: Tensor, mm_dtype: torch.dtype | None, mailbox: Mailbox | None
    ) -> Tensor:
        """x (N, D), targets (N,) -> the sampled-softmax loss per row (N,), fp32."""
        vocab = self.weight.size(0)
        if self._log_counts is None or self._log_counts.device != x.device:
            probs = log_uniform_probs(vocab, x.device)
            self._log_counts = log_expected_count(probs, self.samples)
        candidates, used = padded(draw_candidates(vocab, self.samples).to(x.device))  # (M',)
        return sampled_nll(
            x,
            self.weight,
            self.bias,
            targets,
            candidates,
            self._log_counts,
            mm_dtype,
            used,
            mailbox,
        )


def check_cutoffs(cutoffs: Sequence[int], vocab_size: int) -> None:
    """ValueError unless 0 < c_1 < ... < c_n < vocab_size."""
    validate_cutoffs(tuple(cutoffs))
    if cutoffs[-1] >= vocab_size:
        shown = " ".join(str(c) for c in cutoffs)
        raise ValueError(
            f"--cutoffs {shown}: every cutoff must be below the vocabulary size {vocab_size} "
            f"(ids are frequency ranks); pick smaller --cutoffs"
        )


ROW_BUCKET = 64  # tail row selections are padded to a multiple of this


class AdaptiveSoftmax(nn.Module):
    """Adaptive softmax head; `head(x)` gives exact log-probabilities (..., V), fp32.

    Parameters: `head` Linear(D, c_1 + n) (shortlist logits, then one logit per tail
    cluster), and per cluster i `tails.i.0` Linear(D, D // div_value^(i+1), no bias) and
    `tails.i.1` Linear(that, c_{i+1} - c_i). Matmuls follow an autocast (bf16); every
    softmax is taken in fp32.
    """

    def __init__(
        self, in_size: int, vocab_size: int, cutoffs: Sequence[int], div_value: float = 4.0
    ):
        super().__init__()
        check_cutoffs(cutoffs, vocab_size)
        if not div_value >= 1.0:
            raise ValueError(f"--div-value must be >= 1, got {div_value}")
        self.in_size = in_size
        self.vocab_size = vocab_size
        self.cutoffs = tuple(int(c) for c in cutoffs)
        self.bounds = (*self.cutoffs, vocab_size)  # cluster i covers [bounds[i], bounds[i+1])
        self.shortlist = self.cutoffs[0]
        self.head = nn.Linear(in_size, self.shortlist + len(self.cutoffs))
        self.tails = nn.ModuleList()
        for i in range(len(self.cutoffs)):
            size = max(1, int(in_size // div_value ** (i + 1)))
            self.tails.append(
                nn.Sequential(
                    nn.Linear(in_size, size, bias=False),
                    nn.Linear(size, self.bounds[i + 1] - self.bounds[i]),
                )
            )

    def extra_repr(self) -> str:
        return f"in_size={self.in_size}, vocab_size={self.vocab_size}, cutoffs={self.cutoffs}"

    def forward(self, x: Tensor) -> Tensor:
        """x (..., D) -> log-probabilities (..., V), fp32."""
        return self.log_probs(x)

    def log_probs(self, x: Tensor) -> Tensor:
        s = self.shortlist
        head = F.log_softmax(self.head(x).float(), dim=-1)  # (..., S + n)
        # Written into one buffer cluster by cluster (no torch.cat of all the parts):
        # evaluation windows are large, (100 * 10, 33k) fp32 is 133 MB on WikiText-2.
        out = head.new_empty((*head.shape[:-1], self.vocab_size))  # (..., V)
        out[..., :s] = head[..., :s]
        for i, tail in enumerate(self.tails):
            part = out[..., self.bounds[i] : self.bounds[i + 1]]  # (..., n_i), a view
            part.copy_(F.log_softmax(tail(x).float(), dim=-1))
            part += head[..., s + i : s + i + 1]  # log p(cluster i) + log p(w | cluster i)
        return out

    def nll(self, x: Tensor, targets: Tensor) -> Tensor:
        """x (N, D), targets (N,) -> NLL per row (N,), fp32; never builds (N, V)."""
        s = self.shortlist
        cluster = torch.zeros_like(targets)  # (N,) 0 = shortlist, i = tail cluster i
        for c in self.cutoffs:
            cluster += targets >= c
        head = F.log_softmax(self.head(x).float(), dim=-1)  # (N, S + n)
        head_idx = torch.where(cluster == 0, targets, s - 1 + cluster)  # (N,)
        logp = head.gather(1, head_idx.unsqueeze(1)).squeeze(1)  # (N,)
        for i, tail in enumerate(self.tails):
            rows = (cluster == i + 1).nonzero().squeeze(1)  # (M,)
            m = rows.numel()
            # Pad the selection to a multiple of ROW_BUCKET rows (repeats of row 0, dropped
            # again below): the buffers of the tail then come in a few sizes that the
            # allocator can reuse instead of a new size every step.
            padded = torch.cat((rows, rows.new_zeros(-m % ROW_BUCKET)))  # (M',)
            # Run even when M = 0: every parameter then gets a (zero) gradient each step,
            # which DistributedDataParallel (find_unused_parameters off) relies on.
            scores = tail(x.index_select(0, padded)).float()  # (M', n_i)
            local = targets.index_select(0, padded) - self.bounds[i]  # (M',)
            local.clamp_(0, scores.size(1) - 1)  # the padding rows' targets are elsewhere
            picked = F.log_softmax(scores, dim=-1).gather(1, local.unsqueeze(1)).squeeze(1)
            logp = logp.index_add(0, rows, picked[:m])
        return -logp

    def loss(self, x: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """x (..., D), targets (...) -> NLL (fp32): a scalar, or (N,) with reduction none."""
        _check_reduction(reduction)
        return _reduce(self.nll(x.reshape(-1, x.size(-1)), targets.reshape(-1)), reduction)


def make_head(
    kind: str,
    in_size: int,
    vocab_size: int,
    cutoffs: Sequence[int] = (),
    div_value: float = 4.0,
    samples: int = 0,
) -> FullSoftmax | AdaptiveSoftmax:
    if kind == "full":
        return FullSoftmax(in_size, vocab_size, samples)
    if kind == "adaptive":
        return AdaptiveSoftmax(in_size, vocab_size, cutoffs, div_value)
    raise ValueError(f"--softmax must be full or adaptive, got {kind!r}")
