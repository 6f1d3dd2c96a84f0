"""Training: the loop (Trainer), a run folder's life (start, resume, fine-tune), the state
a resume needs, optimizers and schedules, the NaN guard, Ctrl-C, several processes."""

from lstmlm.training.loop import Loop, TrainResult
from lstmlm.training.runs import (
    absolute_paths,
    check_batch_size,
    check_model,
    check_resume,
    check_start,
    finetune_run,
    resume_run,
    start_run,
)
from lstmlm.training.trainer import Trainer

__all__ = [
    "Loop", "TrainResult", "Trainer", "absolute_paths", "check_batch_size", "check_model",
    "check_resume", "check_start", "finetune_run", "resume_run", "start_run",
]  # fmt: skip
