"""Perplexity of a token stream, and the numbers that compare across token levels.

`evaluate` and the other methods score token ids and know nothing of the text: their
`EvalResult` holds the mean NLL per token and its perplexity. `EvalResult.on_text` adds
what only the raw text's counts give (`data.stats.TextStats`): bits per character and
per-word perplexity, the two numbers a word, char, bpe or unigram run share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmlm.config import EVAL_BATCH_SIZE
from lstmlm.data.batching import batchify, eval_columns, windows
from lstmlm.data.stats import TextStats
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.precision import autocast


@dataclass(frozen=True)
class EvalResult:
    tokens: int  # the tokens scored
    loss: float  # mean negative log-likelihood, nats per token
    ppl: float  # exp(loss): perplexity per token
    bpc: float | None = None  # bits per character of the raw text (on_text)
    word_ppl: float | None = None  # perplexity per whitespace-separated word (on_text)

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def on_text(self, stats: TextStats | None) -> EvalResult:
        """This result with bits per character and per-word perplexity of the text whose
        counts are `stats` (its total NLL: the mean per scored token times its tokens,
        see data/stats.py); unchanged for None (no counts known)."""
        if stats is None:
            return self
        return replace(self, bpc=stats.bits_per_char(self.loss), word_ppl=stats.word_ppl(self.loss))


def result(total_nll: float, tokens: int) -> EvalResult:
    """The per-token result of `tokens` scored tokens whose NLLs sum to `total_nll`."""
    loss = total_nll / max(tokens, 1)
    ppl = math.exp(loss) if loss < 700 else math.inf
    return EvalResult(tokens, loss, ppl)


@torch.inference_mode()
def evaluate(
    model: LanguageModel,
    ids: Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
    bptt: int = 70,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Score `ids` (N,) in `batch_size` parallel columns, state carried across windows.

    Dropout is off (eval mode); the same input gives the same number every time.
    Each column starts from a zero state, so `batch_size` moves the result slightly;
    `bptt` only sets the chunking. Each column is at least `batching.MIN_EVAL_COLUMN`
    (64) tokens long (`batching.eval_columns`): a bigger `batch_size` than the text
    allows gets fewer columns, so under 1/32 of the N - 1 targets (each column's first
    token, the last N mod B tokens) go unscored, and a text under 128 tokens is one
    column with every target scored. On CPU, `precision="bf16"` runs nn.LSTM (oneDNN)
    and the decoder in bf16, about 2x faster (benchmarks/bench_eval.py); softmax and
    loss stay fp32.
    """
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    batch_size = eval_columns(ids.numel(), batch_size)
    data = batchify(ids, batch_size)  # (L, B), a view: each window goes to `device`
    state = model.init_state(batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for offset, x, y in windows(data, bptt, device=device):
        with autocast(precision, device.type):
            # With targets the model returns the mean NLL from its head's own loss (for the
            # full softmax one fused decoder + cross-entropy pass over blocks of rows), not
            # (T, B, V) logits that would be cast to fp32 and log-softmaxed in full.
            out = model(x, state, y)
        state = out.state
        total += out.loss.double() * y.numel()
        count += y.numel()
        if progress is not None:
            progress(offset + x.size(0), data.size(0) - 1)
    model.train(was_training)
    return result(total.item(), count)


@torch.inference_mode()
def token_nlls(
    model: LanguageModel, ids: Tensor, bptt: int = 100, precision: str = "fp32"
) -> Tensor:
    """NLL in nats of every token of `ids` (N,) but the first, in text order: (N - 1,).

    Batch size 1, state carried across windows; the sum equals `evaluate(..., batch_size=1)`.
    """
    if ids.numel() < 2:
        raise ValueError(f"text of {ids.numel()} tokens is too short to score")
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    data = ids.reshape(-1, 1)  # (N, 1)
    state = model.init_state(1)
    out_nll: list[Tensor] = []
    for _, x, y in windows(data, bptt, device=device):
        with autocast(precision, device.type):
            out = model(x, state)
        state = out.state
        nll = F.cross_entropy(
            out.logits.float().view(-1, out.logits.size(-1)), y.reshape(-1), reduction="none"
        )
        out_nll.append(nll)  # (T,)
    model.train(was_training)
    return torch.cat(out_nll).cpu()
