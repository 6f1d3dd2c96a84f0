"""Neural cache (Grave et al. 2017): mix the model with a memory of recent hidden states.

    p(w | h_t) = (1 - λ) p_vocab(w | h_t) + λ p_cache(w | h_t)
    p_cache(w | h_t) ∝ Σ_{i in [t - window, t), x_i = w} exp(θ h_t · h_i)

h_i is the last recurrent layer's output at position i and x_i the token that followed
it (its target). At the first position of a text the cache is empty and p = p_vocab.

A BPTT window of T positions is scored at once: the queries (T, B, H) against the cache
plus the window itself (M + T keys) in one batched matmul, with a banded causal mask that
lets query t see exactly the `window` keys before it. Several (λ, θ) pairs cost one
forward pass: the scores are shared and only the log-sum-exps are per θ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmlm.config import FieldError
from lstmlm.config.bounds import MAX_SIZE
from lstmlm.data.batching import batchify, eval_columns, windows
from lstmlm.evaluation.perplexity import EvalResult, result
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.precision import autocast

LAMBDAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
THETAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)


MAX_WINDOW = MAX_SIZE  # cache positions (each holds a hidden vector)


@dataclass(frozen=True)
class CacheConfig:
    window: int = 500
    lam: float = 0.1  # λ, weight of the cache distribution
    theta: float = 1.0  # θ, inverse temperature of the dot products

    def validate(self) -> CacheConfig:
        if self.window < 1:
            raise FieldError("window", f"must be positive, got {self.window}")
        if not (0 <= self.lam < 1):
            raise FieldError("lam", f"must be in [0, 1), got {self.lam}")
        if self.window > MAX_WINDOW:
            raise FieldError("window", f"must be at most {MAX_WINDOW}, got {self.window}")
        if not (math.isfinite(self.theta) and self.theta >= 0):
            raise FieldError("theta", f"must be a finite number >= 0, got {self.theta}")
        return self


@dataclass(frozen=True)
class CacheResult:
    cached: EvalResult
    plain: EvalResult  # the same pass without the cache
    config: CacheConfig


@dataclass(frozen=True)
class SearchResult:
    best: CacheConfig
    grid: list[tuple[float, float, float]]  # (λ, θ, loss) for every pair
    plain: EvalResult


def cache_log_probs(
    query: Tensor,
    keys: Tensor,
    key_targets: Tensor,
    targets: Tensor,
    n_cached: int,
    window: int,
    thetas: Sequence[float],
) -> tuple[Tensor, Tensor]:
    """log p_cache(target_t) per θ for a window of queries.

    query (T, B, H); keys (S, B, H) = the M = `n_cached` cached states followed by the T
    queries themselves; key_targets (S, B); targets (T, B).
    Returns (log p_cache (n_θ, T, B), has_keys (T, B) bool).
    """
    t_len, s_len = query.size(0), keys.size(0)
    scores = torch.einsum("tbh,sbh->bts", query, keys)  # (B, T, S)
    t_pos = torch.arange(t_len, device=query.device).unsqueeze(1) + n_cached  # (T, 1)
    s_pos = torch.arange(s_len, device=query.device).unsqueeze(0)  # (1, S)
    visible = (s_pos < t_pos) & (s_pos >= t_pos - window)  # (T, S) banded causal mask
    match = key_targets.t().unsqueeze(1) == targets.t().unsqueeze(2)  # (B, T, S)
    hit = match & visible  # (B, T, S)
    out = []
    for theta in thetas:
        a = (theta * scores).masked_fill(~visible, float("-inf"))  # (B, T, S)
        log_norm = torch.logsumexp(a, dim=-1)  # (B, T)
        log_hit = torch.logsumexp(a.masked_fill(~hit, float("-inf")), dim=-1)  # (B, T)
        out.append((log_hit - log_norm).t())  # (T, B)
    has_keys = visible.any(dim=-1).unsqueeze(1).expand(t_len, query.size(1))  # (T, B)
    return torch.stack(out), has_keys


def mix(log_p_vocab: Tensor, log_p_cache: Tensor, has_keys: Tensor, lam: float) -> Tensor:
    """log((1 - λ) p_vocab + λ p_cache); p_vocab alone where the cache is empty."""
    if lam == 0:
        return log_p_vocab
    mixed = torch.logaddexp(log_p_vocab + math.log1p(-lam), log_p_cache + math.log(lam))
    return torch.where(has_keys, mixed, log_p_vocab)


@torch.inference_mode()
def _cache_pass(
    model: LanguageModel,
    ids: Tensor,
    window: int,
    lambdas: Sequence[float],
    thetas: Sequence[float],
    batch_size: int,
    bptt: int,
    precision: str,
    progress: Callable[[int, int], None] | None,
) -> tuple[float, Tensor, int]:
    """One pass: (plain total NLL, cached total NLL (n_λ, n_θ), scored tokens)."""
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    batch_size = eval_columns(ids.numel(), batch_size)  # as evaluate() has it
    data = batchify(ids, batch_size)  # (L, B), a view: each window goes to `device`
    state = model.init_state(batch_size)
    cache_h: Tensor | None = None  # (M, B, H)
    cache_y: Tensor | None = None  # (M, B)
    plain = torch.zeros((), dtype=torch.float64, device=device)
    total = torch.zeros(len(lambdas), len(thetas), dtype=torch.float64, device=device)
    count = 0
    for offset, x, y in windows(data, bptt, device=device):
        with autocast(precision, device.type):
            out = model(x, state)
        state = out.state
        logp = F.log_softmax(out.logits.float(), dim=-1).gather(2, y.unsqueeze(2)).squeeze(2)
        h = out.hiddens[-1].float()  # (T, B, H)
        keys = h if cache_h is None else torch.cat([cache_h, h])  # (M + T, B, H)
        key_y = y if cache_y is None else torch.cat([cache_y, y])  # (M + T, B)
        n_cached = 0 if cache_h is None else cache_h.size(0)
        log_pc, has = cache_log_probs(h, keys, key_y, y, n_cached, window, thetas)
        plain -= logp.sum(dtype=torch.float64)
        for i, lam in enumerate(lambdas):
            for j in range(len(thetas)):
                total[i, j] -= mix(logp, log_pc[j], has, lam).sum(dtype=torch.float64)
        cache_h, cache_y = keys[-window:], key_y[-window:]
        count += y.numel()
        if progress is not None:
            progress(offset + x.size(0), data.size(0) - 1)
    model.train(was_training)
    return plain.item(), total.cpu(), count


def cache_evaluate(
    model: LanguageModel,
    ids: Tensor,
    cfg: CacheConfig = CacheConfig(),
    batch_size: int = 1,
    bptt: int = 100,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> CacheResult:
    """Score `ids` (N,) with the neural cache, and without it in the same pass.

    Each of the `batch_size` columns keeps its own cache (they are separate texts).
    """
    cfg.validate()
    plain, total, n = _cache_pass(
        model, ids, cfg.window, [cfg.lam], [cfg.theta], batch_size, bptt, precision, progress
    )
    return CacheResult(result(total[0, 0].item(), n), result(plain, n), cfg)


def cache_search(
    model: LanguageModel,
    ids: Tensor,
    window: int = 500,
    lambdas: Sequence[float] = LAMBDAS,
    thetas: Sequence[float] = THETAS,
    batch_size: int = 1,
    bptt: int = 100,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Grid-search λ and θ on `ids` (the validation text) in one forward pass."""
    for lam in lambdas:
        CacheConfig(window, lam, 1.0).validate()
    for theta in thetas:
        CacheConfig(window, 0.0, theta).validate()
    if not lambdas or not thetas:
        raise ValueError("the cache search needs at least one λ and one θ")
    plain, total, n = _cache_pass(
        model, ids, window, lambdas, thetas, batch_size, bptt, precision, progress
    )
    loss = total / max(n, 1)  # (n_λ, n_θ)
    grid = [
        (lam, theta, loss[i, j].item())
        for i, lam in enumerate(lambdas)
        for j, theta in enumerate(thetas)
    ]
    lam, theta, _ = min(grid, key=lambda g: g[2])
    return SearchResult(CacheConfig(window, lam, theta), grid, result(plain, n))
