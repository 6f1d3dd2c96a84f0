"""Everything a resume needs, as one bundle: written to RUN/last.safetensors at every
checkpoint, and kept in memory by the NaN guard as the restore point before the first
checkpoint exists.

`Trainer.capture()` takes a `TrainingState` from the trainer and `Trainer.restore()`
puts one back; `save`/`load` move it to and from the checkpoint file. There is no other
list of what a trainer's state is: a field added to the bundle is saved, resumed and
restored alike.

In the file: the model's tensors as "model.*", the optimizer's as "optim.*" (its scalars
and param groups in the JSON metadata, beside `TrainerState`), the carried hidden state
as "hidden.{layer}.{j}", the RNG states as "rng.torch", "rng.cuda" (on a GPU) and
"rng.bptt". With several processes the hidden and torch RNG states of every rank are
gathered into the file as "hidden.{rank}.{layer}.{j}" and "rng.torch.{rank}".
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from lstmlm.nn.rnn import State
from lstmlm.storage import checkpoint as ckpt
from lstmlm.training import distributed


@dataclass
class TrainerState:
    """The loop's own counters and schedule: everything besides tensors."""

    epoch: int = 0  # 0-based epoch in progress
    offset: int = 0  # next window starts at this row of the batchified train data
    step: int = 0  # optimizer steps so far
    lr: float = 0.0
    sched_best: float = math.inf  # best epoch-end validation loss (drives the plateau schedule)
    best_loss: float = math.inf  # validation loss of best.safetensors
    best_epoch: float = 0.0
    elapsed: float = 0.0  # training seconds, all sessions together
    tokens: int = 0  # training tokens seen
    epoch_loss: float = 0.0  # sum of per-token mean losses this epoch
    epoch_steps: int = 0
    averaging: bool = False  # ntasgd: switched to averaged SGD
    val_history: list[float] = field(default_factory=list)  # epoch-end validation losses
    world_size: int = 1  # training processes; a resume needs the same number


@dataclass
class TrainingState:
    """A trainer's whole state at one step."""

    model: dict[str, Tensor]  # the model's tensors, a tied weight once (ckpt.model_tensors)
    optimizer: dict[str, Any]  # the optimizer's state_dict()
    trainer: TrainerState
    hidden: State  # the carried hidden state of this process's batch columns
    rng_torch: Tensor  # torch's CPU generator (dropout masks)
    rng_bptt: Tensor | None  # the variable-BPTT generator (None: a file from before it)
    rng_cuda: Tensor | None = None  # this process's GPU generator, when training on one


def detached_copy(s: TrainingState) -> TrainingState:
    """A copy on the CPU that later training steps cannot change (the guard's restore
    point); restoring from it does not change it either."""
    return TrainingState(
        model={k: v.detach().cpu().clone() for k, v in s.model.items()},
        optimizer=copy.deepcopy(s.optimizer),
        trainer=dataclasses.replace(s.trainer, val_history=list(s.trainer.val_history)),
        hidden=[tuple(t.detach().clone() for t in layer) for layer in s.hidden],
        rng_torch=s.rng_torch.clone(),
        rng_bptt=None if s.rng_bptt is None else s.rng_bptt.clone(),
        rng_cuda=None if s.rng_cuda is None else s.rng_cuda.clone(),
    )


# --- the checkpoint file ------------------------------------------------------------------


def save(path: Path, s: TrainingState) -> None:
    """Write `s` to `path` (rank 0 writes; every rank takes part in gathering the
    per-rank states and waits until the file is on disk)."""
    tensors = {f"model.{k}": v for k, v in s.model.items()}
    opt_tensors, opt_meta = ckpt.optimizer_tensors(s.optimizer)
    tensors.update(opt_tensors)
    tensors.update(_rank_tensors(s))  # collective when world > 1
    if s.rng_bptt is not None:
        tensors["rng.bptt"] = s.rng_bptt  # the same on every rank
    meta = {"trainer": asdict(s.trainer), "optimizer": opt_meta}
    if distributed.is_main():
        ckpt.save_tensors(path, tensors, meta)
    distributed.barrier()  # the other ranks wait until rank 0's checkpoint is on disk


def _rank_tensors(s: TrainingState) -> dict[str, Tensor]:
    """hidden.{i}.{j}, rng.torch (rng.cuda on a GPU); with several processes every
    rank's, gathered: hidden.{rank}.{i}.{j}, rng.torch.{rank}."""
    own = {f"hidden.{i}.{j}": t for i, layer in enumerate(s.hidden) for j, t in enumerate(layer)}
    own["rng.torch"] = s.rng_torch
    if s.rng_cuda is not None:
        own["rng.cuda"] = s.rng_cuda
    if distributed.world() == 1:
        return own
    return {
        rank_key(key, r): g
        for key, t in own.items()
        for r, g in enumerate(distributed.all_gather(t))
    }


def rank_key(key: str, rank: int) -> str:
    """hidden.{i}.{j} -> hidden.{rank}.{i}.{j}; rng.torch -> rng.torch.{rank}."""
    if key.startswith("hidden."):
        return f"hidden.{rank}.{key.removeprefix('hidden.')}"
    return f"{key}.{rank}"


def read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The checkpoint's tensors and metadata, its process count checked: a ValueError
    that says how to resume when it differs from this run's."""
    tensors, meta = ckpt.load_tensors(path)
    saved_world = meta.get("trainer", {}).get("world_size", 1)
    world = distributed.world()
    if saved_world != world:
        raise ValueError(
            f"{path}: this run was trained by {saved_world} process(es); resume it with "
            f"the same number (now {world}: use --nproc {saved_world}, or torchrun "
            f"with {saved_world} processes in all)"
        )
    return tensors, meta


def from_tensors(
    tensors: dict[str, Tensor], meta: dict[str, Any], layers: int, per_layer: int
) -> TrainingState:
    """This process's `TrainingState` from a checkpoint's tensors and metadata (KeyError,
    TypeError or ValueError when they lack a part). `layers` recurrent layers with
    `per_layer` state tensors each ((h,) or (h, c))."""
    world, rank = distributed.world(), distributed.rank()

    def own(key: str) -> str:  # this rank's entry
        return key if world == 1 else rank_key(key, rank)

    return TrainingState(
        model={k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
        optimizer=ckpt.optimizer_state_dict(tensors, meta["optimizer"]),
        trainer=TrainerState(**meta["trainer"]),
        hidden=[
            tuple(tensors[own(f"hidden.{i}.{j}")] for j in range(per_layer)) for i in range(layers)
        ],
        rng_torch=tensors[own("rng.torch")],
        rng_bptt=tensors.get("rng.bptt"),
        rng_cuda=tensors.get(own("rng.cuda")),  # absent: saved on a CPU
    )
