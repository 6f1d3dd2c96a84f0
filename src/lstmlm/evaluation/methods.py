"""What `lstmlm evaluate` computes, callable from Python: plain, neural-cache and dynamic
evaluation, and per-token NLLs, each as a `Scores` record.

A method takes the model and the token ids (N,) to score, and returns the score with
what it needs to be reproduced (the method's settings) and, for the cache and dynamic
evaluation, the plain score of the same pass beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from lstmlm.data.stats import TextStats
from lstmlm.data.vocab import Vocab
from lstmlm.evaluation.cache import CacheConfig, cache_evaluate, cache_search
from lstmlm.evaluation.dynamic import DynamicConfig, dynamic_evaluate
from lstmlm.evaluation.perplexity import EvalResult, evaluate, result, token_nlls
from lstmlm.files import atomic_write
from lstmlm.nn.model import LanguageModel

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Scores:
    """A score of one text: `result`, and (cache, dynamic) the plain score beside it."""

    split: str  # the split's name, or the scored file
    result: EvalResult
    plain: EvalResult | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # method and its parameters

    def to_dict(self) -> dict[str, Any]:
        """`{"split", "tokens", "loss", "ppl", "bpc", "word_ppl", ...settings, "plain_*"}`."""
        d: dict[str, Any] = {"split": self.split, **self.result.to_dict(), **self.settings}
        if self.plain is not None:
            p = self.plain
            d.update(plain_loss=p.loss, plain_ppl=p.ppl, plain_bpc=p.bpc, plain_word_ppl=p.word_ppl)
        return d


def plain(
    model: LanguageModel,
    ids: Tensor,
    counts: TextStats | None,
    split: str,
    batch_size: int,
    bptt: int = 100,
    precision: str = "fp32",
    progress: Progress | None = None,
) -> Scores:
    """Perplexity in `batch_size` parallel columns, state carried across windows."""
    res = evaluate(model, ids, batch_size, bptt, precision, progress=progress)
    return Scores(split, res.on_text(counts))


def with_cache(
    model: LanguageModel,
    ids: Tensor,
    counts: TextStats | None,
    split: str,
    cfg: CacheConfig | None,
    batch_size: int,
    bptt: int = 100,
    precision: str = "fp32",
    progress: Progress | None = None,
    *,
    search_ids: Tensor | None = None,
    window: int = 500,
) -> Scores:
    """With a neural cache of `cfg`; with `cfg` None, λ and θ are first grid-searched on
    `search_ids` (the validation text) and the best pair used."""
    settings: dict[str, Any] = {}
    if cfg is None:
        if search_ids is None:
            raise ValueError("the cache search needs the validation text (search_ids)")
        found = cache_search(
            model, search_ids, window, batch_size=batch_size, bptt=bptt,
            precision=precision, progress=progress,
        )  # fmt: skip
        cfg = found.best
        best_loss = min(g[2] for g in found.grid)
        settings["search"] = {
            "split": "valid",
            "plain_ppl": found.plain.ppl,
            "best_ppl": result(best_loss * found.plain.tokens, found.plain.tokens).ppl,
            "grid": [{"lambda": lam, "theta": th, "loss": loss} for lam, th, loss in found.grid],
        }
    cached = cache_evaluate(model, ids, cfg, batch_size, bptt, precision, progress)
    settings.update(
        method="cache", cache_window=cfg.window, cache_lambda=cfg.lam, cache_theta=cfg.theta
    )
    return Scores(split, cached.cached.on_text(counts), cached.plain.on_text(counts), settings)


def dynamic(
    model: LanguageModel,
    ids: Tensor,
    counts: TextStats | None,
    split: str,
    cfg: DynamicConfig,
    stats_ids: Tensor | None = None,
    precision: str = "fp32",
    progress: Progress | None = None,
) -> Scores:
    """With dynamic evaluation; `stats_ids` (training text) give rms its gradient
    statistics (the first `cfg.stats_batches` segments of it are used)."""
    cfg.validate()
    if cfg.method == "rms" and cfg.stats_batches > 0 and stats_ids is not None:
        stats_ids = stats_ids[: cfg.stats_batches * cfg.bptt * cfg.batch_size + 1]
    else:
        stats_ids = None
    dyn = dynamic_evaluate(model, ids, cfg, stats_ids, precision, progress)
    settings = {
        "method": "dynamic",
        "dyn_method": cfg.method,
        "dyn_lr": cfg.lr,
        "dyn_decay": cfg.decay,
        "dyn_bptt": cfg.bptt,
        "dyn_batch_size": cfg.batch_size,
    }
    return Scores(split, dyn.dynamic.on_text(counts), dyn.plain.on_text(counts), settings)


def per_token(
    model: LanguageModel,
    ids: Tensor,
    vocab: Vocab,
    counts: TextStats | None,
    split: str,
    out: str | Path,
    bptt: int = 100,
    precision: str = "fp32",
) -> Scores:
    """Batch 1 in text order; writes `{"token", "nll"}` per scored token to `out` (JSON
    lines)."""
    nll = token_nlls(model, ids, bptt, precision)  # (N - 1,)
    res = result(nll.double().sum().item(), nll.numel()).on_text(counts)
    lines = (
        json.dumps({"token": vocab.itos[t], "nll": x}, ensure_ascii=False) + "\n"
        for t, x in zip(ids[1:].tolist(), nll.tolist(), strict=True)
    )
    atomic_write(out, "".join(lines))
    return Scores(split, res, settings={"per_token": str(out)})
