"""Learning-rate schedules: per epoch (`next_lr`: plateau, epoch) and over the run (cosine).

`cosine` anneals the lr from its peak to `final` x peak over the whole run, where the
run's length is whichever of its limits comes first: `--max-minutes` of training time,
`--max-steps`, or `--epochs`. Under a time budget the schedule follows the clock, so two
runs with the same seed take slightly different steps (a resume still continues it:
the elapsed time is part of the saved trainer state).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lstmlm.config import TrainConfig

if TYPE_CHECKING:
    from lstmlm.training.state import TrainerState


def run_progress(
    elapsed: float,
    step: int,
    epochs_done: float,
    max_minutes: float | None,
    max_steps: int | None,
    epochs: int,
) -> float:
    """Fraction of the run done, in [0, 1]: the largest fraction of any of its limits."""
    fractions = [epochs_done / epochs]
    if max_minutes is not None:
        fractions.append(elapsed / (max_minutes * 60))
    if max_steps is not None:
        fractions.append(step / max_steps)
    return min(1.0, max(0.0, *fractions))


def cosine_factor(progress: float, final: float) -> float:
    """lr multiplier: 1 at progress 0, `final` at progress 1, half a cosine between."""
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def next_lr(cfg: TrainConfig, st: TrainerState, epoch_done: int, valid_loss: float) -> float:
    """The learning rate after epoch `epoch_done` (1-based) ended with `valid_loss`."""
    if cfg.lr_schedule == "plateau":
        return st.lr if valid_loss < st.sched_best else st.lr / cfg.lr_decay
    if cfg.lr_schedule == "epoch" and epoch_done >= cfg.decay_after:
        return st.lr / cfg.lr_decay
    return st.lr
