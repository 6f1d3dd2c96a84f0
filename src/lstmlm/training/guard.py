"""Guard against non-finite training steps (NaN/inf loss or gradient norm).

Each step the trainer asks `step_is_finite(loss, grad_norm)`: one boolean read
from the device, after the backward pass and before the optimizer step. A bad
step is skipped (the optimizer never sees its gradients, so weights, momentum
and Adam moments stay as they were). `NonFiniteGuard.record` then says what to
do next:

    "skip"      fewer than `patience` bad steps in a row: go on with the next window
    "restore"   `patience` bad steps in a row: reload the last good state (last.safetensors,
                or before the first checkpoint the trainer's in-memory copy of its starting
                state, state.TrainingState), halve the lr
    "diverged"  the same after `max_restores` restores: stop with `diverged_message`

Why a host read per step rather than a masked (`torch.where`) update: masking
would have to reach inside every optimizer's state update (momentum, Adam
moments, ASGD averages). On CPU the read costs nothing measurable (see
RELIABILITY.md); on a GPU it is one small sync per step, after the backward
pass has been queued anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def grad_norm(params: Iterable[Tensor], clip: float) -> Tensor:
    """Total L2 norm of the gradients (a 0-d tensor); clips them to `clip` when clip > 0."""
    params = [p for p in params if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def clip_coefficient(norm: Tensor, clip: float) -> float:
    """The factor clip_grad_norm_(params, clip) scales the gradients by, given their total
    norm: min(1, clip / (norm + 1e-6)) in fp32 as torch computes it; 1.0 for clip 0."""
    if clip <= 0:
        return 1.0
    return float(torch.clamp(clip / (norm.detach().float() + 1e-6), max=1.0))


def step_is_finite(loss: Tensor, norm: Tensor) -> bool:
    """True when both the loss and the gradient norm are finite (one host read).

    Both are >= 0, so their sum is finite exactly when both are (or when it overflows
    float32, which is as bad). One add and one read: ~3 us on CPU, where
    `isfinite(a) & isfinite(b)` costs ~20 us.
    """
    return math.isfinite((loss.detach() + norm.detach()).float().item())


def describe(loss: Tensor, norm: Tensor) -> dict[str, Any]:
    """JSON-safe values of a bad step (non-finite floats as the strings "nan", "inf")."""

    def value(t: Tensor) -> float | str:
        x = float(t.detach().float())
        return x if math.isfinite(x) else str(x)

    return {"loss": value(loss), "grad_norm": value(norm)}


@dataclass
class NonFiniteGuard:
    """Counts non-finite steps and decides between skip, restore and stop."""

    patience: int = 3  # bad steps in a row before a restore
    max_restores: int = 3  # restores before giving up
    streak: int = 0  # bad steps in a row now
    skipped: int = 0  # bad steps in this session
    restores: int = 0  # restores in this session

    def record(self, ok: bool) -> str:
        """Count one step; returns "ok", "skip", "restore" or "diverged"."""
        if ok:
            self.streak = 0
            return "ok"
        self.skipped += 1
        self.streak += 1
        if self.streak < self.patience:
            return "skip"
        self.streak = 0
        if self.restores < self.max_restores:
            self.restores += 1
            return "restore"
        return "diverged"


def diverged_message(guard: NonFiniteGuard, lr: float, last: Path) -> str:
    """The one-line error that ends a diverged run."""
    tries = (
        f"even after {guard.restores} restore(s) of the last good state with the lr halved "
        f"each time (lr now {lr:g})"
        if guard.restores
        else f"(lr {lr:g})"
    )
    kept = (
        f"{last} keeps the last good state"
        if last.exists()
        else "no checkpoint had been written yet"
    )
    return (
        f"training diverged: loss is NaN or inf for {guard.patience} steps in a row {tries}; "
        f"try a lower --lr or a smaller --clip; {kept}"
    )
