"""Optimizers: the run's choice (`make_optimizer`), and NT-ASGD (Merity et al. 2017).

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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lstmlm.config import TrainConfig


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
