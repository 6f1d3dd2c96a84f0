"""The tied embedding and decoder weight's gradient made in one piece.

With tied weights the (V, D) matrix is read twice, by the embedding lookup and by the
decoder, and autograd adds the two gradients: the lookup's is a zero-filled dense
(V, D) matrix with a few hundred rows scattered into it, then added to the decoder's,
two passes over 26 MB at the medium size (~3-4 ms of a ~165 ms step on the 2-core AMD
EPYC, benchmarks/RESULTS.md round 10). Here the decoder leaves its gradient in a
`Mailbox` instead of returning it, and the lookup's backward, which autograd runs after
the decoder's (the lookup's output feeds the decoder), scatters its rows into that
matrix and returns it as the weight's one gradient.

The sum differs from autograd's only in the order of the additions where a word occurs
more than once in a window (the rows are added one at a time, not summed first).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class Mailbox:
    """Where the decoder leaves the weight's gradient for the lookup (one per forward)."""

    def __init__(self) -> None:
        self.grad: Tensor | None = None


def can_share(embedding: nn.Embedding) -> bool:
    """Whether lookup() computes what `embedding(tokens)` does (a plain lookup)."""
    return (
        embedding.padding_idx is None
        and embedding.max_norm is None
        and not embedding.scale_grad_by_freq
        and not embedding.sparse
    )


def lookup(weight: Tensor, tokens: Tensor, mailbox: Mailbox) -> Tensor:
    """weight[tokens] (..., D), whose backward adds into the gradient in `mailbox`."""
    out: Tensor = _TiedLookup.apply(weight, tokens, mailbox)
    return out


class _TiedLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, tokens: Tensor, mailbox: Mailbox) -> Tensor:
        ctx.save_for_backward(tokens)
        ctx.mailbox, ctx.shape = mailbox, weight.shape
        return F.embedding(tokens, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:
        (tokens,) = ctx.saved_tensors
        grad, ctx.mailbox.grad = ctx.mailbox.grad, None
        if grad is None:  # the decoder left nothing: the lookup's own gradient alone
            grad = d_out.new_zeros(ctx.shape)
        rows = d_out.reshape(-1, ctx.shape[1]).to(grad.dtype)  # (N, D)
        grad.index_add_(0, tokens.reshape(-1), rows)
        return grad, None, None
