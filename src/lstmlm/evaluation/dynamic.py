"""Dynamic evaluation (Krause et al. 2018): adapt the weights to the text while scoring it.

The text is cut into segments of `bptt` tokens (per column; batch size 1 as in the paper).
Each segment is first scored with the current weights, then one gradient step on that
segment's mean loss adapts the weights for the next segment. The state carries over.

- sgd: θ ← θ − η ∇ + λ (θ_0 − θ)
- rms: θ ← θ − η ∇ / (√MS + ε) + λ · min(√MS / mean(√MS), 1/λ) ⊙ (θ_0 − θ)

θ_0 are the trained weights and λ the decay toward them. MS is the mean squared gradient
per weight: from `stats_ids` (training text) before scoring as in the paper when given,
otherwise the running mean over the segments scored so far. The model passed in is never
changed: all of this happens on a copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lstmlm.config import FieldError
from lstmlm.config.bounds import INT64, MAX_SIZE
from lstmlm.data.batching import batchify, eval_columns, windows
from lstmlm.evaluation.perplexity import EvalResult, evaluate, result
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.rnn import detach_state

METHODS = ("sgd", "rms")


@dataclass(frozen=True)
class DynamicConfig:
    method: str = "sgd"
    lr: float = 1e-3  # η; for rms the step is in units of the gradient's RMS
    decay: float = 0.0  # λ, pull toward the trained weights per segment
    bptt: int = 10  # segment length
    batch_size: int = 1
    eps: float = 1e-5  # rms only
    stats_batches: int = 100  # rms with training text: segments used to estimate MS

    def validate(self) -> None:
        if self.method not in METHODS:
            raise FieldError("method", f"must be one of {', '.join(METHODS)}, got {self.method}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise FieldError("lr", f"must be a finite number >= 0, got {self.lr}")
        if not (0 <= self.decay < 1):
            raise FieldError("decay", f"must be in [0, 1), got {self.decay}")
        for name in ("bptt", "batch_size"):
            if not 1 <= getattr(self, name) <= MAX_SIZE:
                raise FieldError(name, f"must be in [1, {MAX_SIZE}], got {getattr(self, name)}")
        if not 0 <= self.stats_batches < INT64:
            raise FieldError("stats_batches", f"must be >= 0, got {self.stats_batches}")


@dataclass(frozen=True)
class DynamicResult:
    dynamic: EvalResult
    plain: EvalResult  # the same text, batch size and segments, weights fixed
    config: DynamicConfig


def _segment_loss(model: LanguageModel, x: Tensor, y: Tensor, state):
    out = model(x, state, y)  # mean NLL; the adaptive softmax skips the (T, B, V) scores
    return out.loss, out.state


def gradient_stats(
    model: LanguageModel, ids: Tensor, bptt: int, batch_size: int, max_batches: int
) -> list[Tensor]:
    """Mean squared gradient per parameter over up to `max_batches` segments of `ids`."""
    params = [p for p in model.parameters() if p.requires_grad]
    ms = [torch.zeros_like(p) for p in params]
    data = batchify(ids, eval_columns(ids.numel(), batch_size))  # (L, B), a view
    state = model.init_state(data.size(1))
    n = 0
    for _, x, y in windows(data, bptt, device=ms[0].device):
        if n == max_batches:
            break
        loss, state = _segment_loss(model, x, y, detach_state(state))
        grads = torch.autograd.grad(loss, params)
        for m, g in zip(ms, grads, strict=True):
            m.add_(g * g)
        n += 1
    return [m / max(n, 1) for m in ms]


def dynamic_evaluate(
    model: LanguageModel,
    ids: Tensor,
    cfg: DynamicConfig = DynamicConfig(),
    stats_ids: Tensor | None = None,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> DynamicResult:
    """Score `ids` (N,) with dynamic evaluation; the plain number is computed too."""
    cfg.validate()
    plain = evaluate(model, ids, cfg.batch_size, cfg.bptt, precision)
    work = copy.deepcopy(model).eval()  # dropout off; the caller's weights stay as they are
    for p in work.parameters():
        p.requires_grad_(True)
    params = list(work.parameters())
    theta0 = [p.detach().clone() for p in params]
    device = params[0].device
    ms: list[Tensor] | None = None
    seen = 0
    if cfg.method == "rms":
        if stats_ids is not None:
            with torch.enable_grad():
                ms = gradient_stats(work, stats_ids, cfg.bptt, cfg.batch_size, cfg.stats_batches)
        else:
            ms = [torch.zeros_like(p) for p in params]
    batch_size = eval_columns(ids.numel(), cfg.batch_size)  # as evaluate() has it
    data = batchify(ids, batch_size)  # (L, B), a view: each window goes to `device`
    state = work.init_state(batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.enable_grad():
        for offset, x, y in windows(data, cfg.bptt, device=device):
            loss, state = _segment_loss(work, x, y, detach_state(state))
            total += loss.detach().double() * y.numel()  # scored before the update
            count += y.numel()
            if cfg.lr > 0 or cfg.decay > 0:
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    if cfg.method == "rms":
                        assert ms is not None
                        if stats_ids is None:  # running mean of the squared gradients so far
                            seen += 1
                            for m, g in zip(ms, grads, strict=True):
                                m.add_((g * g - m) / seen)
                        _rms_step(params, grads, theta0, ms, cfg)
                    else:
                        for p, g, p0 in zip(params, grads, theta0, strict=True):
                            p.sub_(cfg.lr * g)
                            if cfg.decay > 0:
                                p.add_(cfg.decay * (p0 - p))
            if progress is not None:
                progress(offset + x.size(0), data.size(0) - 1)
    return DynamicResult(result(total.item(), count), plain, cfg)


def _rms_step(
    params: Sequence[Tensor],
    grads: tuple[Tensor, ...],
    theta0: list[Tensor],
    ms: list[Tensor],
    cfg: DynamicConfig,
) -> None:
    rms = [m.sqrt() for m in ms]
    mean_rms = torch.cat([r.flatten() for r in rms]).mean().clamp_min(1e-12)
    for p, g, p0, r in zip(params, grads, theta0, rms, strict=True):
        p.sub_(cfg.lr * g / (r + cfg.eps))
        if cfg.decay > 0:
            rate = (r / mean_rms).clamp_(max=1 / cfg.decay)
            p.add_(cfg.decay * rate * (p0 - p))
