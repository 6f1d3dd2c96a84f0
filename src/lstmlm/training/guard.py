"""Guard against non-finite training steps (NaN/inf loss or gradient norm).

Each step the trainer asks `step_is_finite(loss, grad_norm)`: one boolean read
from the device, after the backward pass and before the optimizer step. A bad
step is skipped (the optimizer never sees its gradients, so weights, momentum
and Adam moments stay as they were). `NonFiniteGuard.record` then says what to
do next:

    "skip"      fewer than `patience` bad steps in a row: go on with the next window
    "restore"   `patience` bad steps in a row: reload the last good state, halve the lr
    "diverged"  the same after `max_restores` restores: stop with `diverged_message`

Why a host read per step rather than a masked (`torch.where`) update: masking
would have to reach inside every optimizer's state update (momentum, Adam
moments, ASGD averages). On CPU the read costs nothing measurable (see
RELIABILITY.md); on a GPU it is one small sync per step, after the backward
pass has been queued anyway.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from lstmlm.training.runs import Trainer


def grad_norm(params: Iterable[Tensor], clip: float) -> Tensor:
    """Total L2 norm of the gradients (a 0-d tensor); clips them to `clip` when clip > 0."""
    params = [p for p in params if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


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


# --- an in-memory copy of the starting state ---------------------------------------------


@dataclass
class Snapshot:
    """The trainer's state at the start of a run, for a restore before any checkpoint."""

    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    trainer: Any  # TrainerState
    hidden: list[tuple[Tensor, ...]]
    rng: Tensor
    rng_bptt: Tensor


def take_snapshot(tr: Trainer) -> Snapshot:
    return Snapshot(
        model=_copy_state(tr.model.state_dict()),
        optimizer=copy.deepcopy(tr.opt.state_dict()),
        trainer=replace(tr.st, val_history=list(tr.st.val_history)),
        hidden=[tuple(t.detach().clone() for t in layer) for layer in tr.hidden],
        rng=torch.get_rng_state(),
        rng_bptt=tr.bptt_gen.get_state(),
    )


def _copy_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU copies of a state dict; a tensor under two keys (tied weights) is copied once."""
    copies: dict[tuple[int, int, tuple[int, ...]], Tensor] = {}
    out = {}
    for key, t in state.items():
        alias = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if alias not in copies:
            copies[alias] = t.detach().cpu().clone()
        out[key] = copies[alias]
    return out


def restore_snapshot(tr: Trainer, snap: Snapshot) -> None:
    tr.model.load_state_dict(snap.model)
    tr.opt.load_state_dict(copy.deepcopy(snap.optimizer))
    tr.st = replace(snap.trainer, val_history=list(snap.trainer.val_history))
    tr.hidden = [tuple(t.clone() for t in layer) for layer in snap.hidden]
    torch.set_rng_state(snap.rng)
    tr.bptt_gen.set_state(snap.rng_bptt)
