"""Optimizers: the run's choice (`make_optimizer`), NT-ASGD (Merity et al. 2017), and
plain SGD's step fused with clipping and the bf16 weight copies (`fused_sgd`).

NT-ASGD trains with plain SGD; once validation has stalled, switch to averaged SGD:
the same SGD steps, plus a running average of the weights since the switch
(`torch.optim.ASGD` with t0=0, lambd=0 keeps it in its state as `ax`; as
torch indexes it, after k steps `ax` is the mean of the weights after steps
2..k). The averaged weights are what gets evaluated and saved as the best
model; the checkpoint holds `ax` with the rest of the optimizer state.

Stalled is the paper's non-monotone rule: with `history` the validation losses
of the previous checks, switch at check t when t > n and the current loss is
worse than the best one from before the last n checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lstmlm.config import TrainConfig
from lstmlm.nn.manual import bf16_gemm, native, shadows


def validation_stalled(history: Sequence[float], loss: float, nonmono: int) -> bool:
    """The paper's `t > n and val_loss > min(logs[:-n])`, with `history` = earlier losses."""
    if nonmono < 0:
        raise ValueError(f"nonmono must be >= 0, got {nonmono}")
    if len(history) <= nonmono:
        return False
    return loss > min(history[: len(history) - nonmono])


def make_asgd(params: Sequence[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.ASGD:
    """SGD whose state also keeps the average of the weights since it was created."""
    return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, alpha=0.75, weight_decay=weight_decay)


def is_averaging(opt: torch.optim.Optimizer) -> bool:
    return isinstance(opt, torch.optim.ASGD)


@contextmanager
def averaged_weights(model: nn.Module, opt: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block, the model holds ASGD's averaged weights (no-op for other optimizers).

    Parameters that have no average yet (no step taken since the switch) keep
    their own values. The training weights are restored on exit.
    """
    if not is_averaging(opt):
        yield
        return
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for p in model.parameters():
            ax = opt.state.get(p, {}).get("ax")
            if ax is not None:
                saved.append((p, p.detach().clone()))
                p.copy_(ax)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` over every parameter of `model`."""
    params = list(model.parameters())
    if cfg.optimizer in ("sgd", "ntasgd"):
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "asgd":
        return make_asgd(params, cfg.lr, cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


class FusedSGD:
    """``torch.optim.SGD``'s step (no momentum, weight decay, Nesterov or maximize) with the
    gradient clipping folded in, in one pass over each parameter in C
    (``nn/manual/kernels/sgd_step.c``): the same weights to the bit as clip_grad_norm_
    followed by ``opt.step()``, and, in the same pass, the weight's kept bf16 copies
    that the bf16 products read (``nn/manual/shadows.py``), so the next step casts and
    packs no weight. Before: a pass to clip, a pass to update, a pass per bf16 cast or
    packing at the next use (benchmarks/RESULTS.md, round 10).

    The optimizer keeps its param_groups (lr) and its (empty) state; only its step is
    replaced. Gradients are not clipped in place: the clipping factor goes to the kernel.
    """

    def __init__(self, opt: torch.optim.Optimizer, sgd_step: Callable[..., None]):
        self.opt = opt
        self._sgd_step = sgd_step
        shadows.keep([p for g in opt.param_groups for p in g["params"]])

    @torch.no_grad()
    def step(self, clip_coef: float) -> None:
        """One update with each gradient scaled by `clip_coef` (1.0: no clipping)."""
        threads = torch.get_num_threads()
        for group in self.opt.param_groups:
            alpha = -float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.contiguous()
                rows = p.size(0) if p.dim() > 1 else 1
                kept = shadows.kept(p)
                nk, kn = (kept[k].data.data_ptr() if k in kept else None for k in ("nk", "kn"))
                cols = p.numel() // max(rows, 1)
                self._sgd_step(
                    rows, cols, p.data_ptr(), grad.data_ptr(), clip_coef, alpha, nk, kn, threads
                )
                torch.autograd.graph.increment_version(p)  # written behind torch's back
                shadows.refreshed(p, ("nk", "kn"))


def fused_sgd(opt: torch.optim.Optimizer) -> FusedSGD | None:
    """A FusedSGD for `opt` where it computes exactly what ``opt.step()`` would, and the C
    kernels are here; else None."""
    if type(opt) is not torch.optim.SGD or not bf16_gemm.usable():
        return None
    for group in opt.param_groups:
        plain = group["momentum"] == 0 and group["weight_decay"] == 0
        plain = plain and not (group["nesterov"] or group["maximize"] or group["differentiable"])
        if not plain or not all(_fusable(p) for p in group["params"]):
            return None
    kernels = native.loaded().gemm
    return None if kernels is None else FusedSGD(opt, kernels.sgd_step)


def _fusable(p: torch.Tensor) -> bool:
    return p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
